"""A coordinator port for multi-process tests.

A port the kernel hands out for ``bind(0)`` lies in the ephemeral range, the range
it also draws from for outgoing connections. While process 0 is still starting,
process 1 retries connecting to the coordinator many times, each time from a new
ephemeral port; should one of them equal the coordinator's port, TCP connects the
socket to itself (a simultaneous open), and the job hangs. A port below the
ephemeral range cannot be chosen as the source of a connection.
"""

import random
import socket


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def coordinator_port() -> int:
    """A free TCP port on 127.0.0.1 below the ephemeral range."""
    top = min(_ephemeral_low(), 32768)
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1025, top - 12000), top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")
