"""Slow checkpoint writes for the kill tests of the splitting estimator.

A child process that pauses after each checkpoint write stays alive long enough for its
test to send SIGKILL mid-run, however fast the machine finishes the work between writes
(CI's machine once finished all eight chunks before the kill).
"""

import time

from sgdlab import splitting


def slow_checkpoint_writes(pause_s: float = 5.0) -> None:
    """Make every later ``sgdlab.splitting.atomic_npz`` write pause ``pause_s`` after it."""
    write = splitting.atomic_npz

    def slow_write(*args, **kwargs):
        write(*args, **kwargs)
        time.sleep(pause_s)

    splitting.atomic_npz = slow_write
