"""sgdlab: Monte Carlo studies of SGD as one compiled JAX program.

Front door::

    import sgdlab as sl
    problem = sl.problems.noisy_quadratic(curvature=1.0, noise_cov=1.0)
    study = sl.Study(problem, sl.Optimizer("sgd"), {"learning_rate": [0.1, 1.0]},
                     steps=2000, seeds=1000,
                     stationary=sl.Stationary(("w2",), burn_in=500))
    ds = sl.run(study)
"""

__version__ = "0.1.0"

from sgdlab import data, losses, models, problems  # noqa: E402
from sgdlab.engine import FirstPassage, Observe, Plan, Stationary, Study, plan, run  # noqa: E402
from sgdlab.optim import Optimizer  # noqa: E402
from sgdlab.results import load, save  # noqa: E402

__all__ = ["Study", "Observe", "Stationary", "FirstPassage", "Optimizer", "Plan", "run", "plan",
           "load", "save", "data", "losses", "models", "problems", "__version__"]
