"""sgdlab: Monte Carlo studies of SGD as one compiled JAX program.

Front door::

    import sgdlab as sl
    problem = sl.problems.noisy_quadratic(curvature=1.0, noise_cov=1.0)
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.1, 1.0]},
                     steps=2000, seeds=1000,
                     stationary=sl.Stationary(("w2",), burn_in=500))
    ds = sl.run(study)

Attributes: the engine (``sl.Study``, ``sl.run``, ``sl.plan``, the recorders
``sl.Observe``/``sl.Stationary``/``sl.FirstPassage``, ``sl.Optimizer``),
``sl.problems``, ``sl.data``, ``sl.models``, ``sl.losses``, ``sl.load``/``sl.save``,
and the submodules ``sl.engine``, ``sl.results``, ``sl.analysis``, ``sl.plots``,
``sl.theory``, ``sl.experiments`` (the last four imported on first use).
"""

__version__ = "0.1.0"

import importlib
import os

# Programs read back from JAX's persistent compile cache (on by default) make jaxlib's CPU
# loader log a spurious multi-line error per program on some x86 CPUs (jax-ml/jax#38445).
# Unless the cache is turned off, keep only fatal C++ messages unless the user set the level.
# Must happen before jax is imported.
from sgdlab._validate import env_off as _env_off  # noqa: E402 (NumPy only, not jax)

if not _env_off("SGDLAB_COMPILE_CACHE"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from sgdlab import data, engine, losses, models, optim, problems, results  # noqa: E402
from sgdlab.engine import FirstPassage, Observe, Plan, Stationary, Study, plan, run  # noqa: E402
from sgdlab.optim import Optimizer  # noqa: E402
from sgdlab.problems import Observation, Problem  # noqa: E402
from sgdlab.results import load, save  # noqa: E402

_LAZY = ("analysis", "plots", "theory", "experiments", "splitting", "adapters", "cli")

if "IPython" in __import__("sys").modules:  # in Jupyter: figures display inline as images
    from sgdlab import plots  # noqa: E402, F401


def __getattr__(name: str):
    """Import the heavier submodules (matplotlib, scipy, the experiments) on first use."""
    if name in _LAZY:
        module = importlib.import_module(f"sgdlab.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'sgdlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Study", "Observe", "Stationary", "FirstPassage", "Optimizer", "Plan", "run", "plan",
           "load", "save", "data", "losses", "models", "problems", "engine", "optim", "results",
           "Problem", "Observation", "analysis", "plots", "theory", "experiments", "splitting",
           "adapters", "__version__"]
