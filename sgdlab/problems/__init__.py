"""Problems: a model, its loss, its data and its risk, as pure functions.

A :class:`Problem` bundles

* ``init(key) -> params`` (drawn once per seed: every grid point of a seed starts
  from the same parameters);
* ``loss(params, batch, hp) -> scalar``, the minibatch objective SGD differentiates,
  with its reduction (``"half_mean"``, ``"mean"``, ``"half_sum"``) explicit;
* ``data``, a :class:`sgdlab.data.DataSource`;
* ``risk(params, data, hp) -> scalar``, the population risk: exact where a closed
  form exists, otherwise on a fixed evaluation sample (whose Monte Carlo error is
  exposed as the ``risk_se`` observable);
* named ``observables`` (functions of an :class:`Observation`) and ``events``
  (predicates for the first-passage recorder).

Factories (the study of the science notes each serves in brackets):

* :func:`noisy_quadratic`, :func:`linear_regression`, :func:`finite_quadratic`,
  :func:`potential_1d` and the helper :func:`newton_preconditioner` [5];
* :func:`constant_target` (deep ReLU nets on a constant, exact 1-D risk, the
  dead network) [1] and the general :func:`mlp_regression`;
* :func:`regularized_two_layer` (noisy SGD towards a Gibbs law) [2];
* :func:`indicator_target` (the ramp model and a deep ReLU net on a ball
  indicator) [3];
* :func:`du_two_layer` (over-parameterized two-layer ReLU, lazy training) [4].

Conventions are explicit parameters, each documented where it is taken:
``reduction`` (loss scaling, :mod:`sgdlab.losses`), ``mode`` (minibatches with
or without replacement, or full batch, :mod:`sgdlab.data`; online sources draw
fresh samples), the ReLU with ReLU'(0) = 0 (:func:`sgdlab.models.relu`), and the
heavy-ball form of momentum (:mod:`sgdlab.optim`). Fixed data sets drawn from a
``data_seed`` at construction are the same for every study seed; ``data.init``
returns them whatever key it is given.
"""

from sgdlab.problems._base import Observation, Problem
from sgdlab.problems.constant_target import constant_target
from sgdlab.problems.du import DU_LABELS, DU_TRAIN, du_two_layer
from sgdlab.problems.generic import (
    INPUTS,
    TARGETS,
    linear_regression,
    mlp_regression,
    noisy_quadratic,
)
from sgdlab.problems.indicator import INDICATOR_MODELS, indicator_target
from sgdlab.problems.quadratic import (
    NOISE_KINDS,
    POTENTIALS,
    finite_quadratic,
    newton_preconditioner,
    potential_1d,
    potential_fns,
)
from sgdlab.problems.villani import INIT_LAWS, REG_LABELS, SMOOTH_ACTIVATIONS, regularized_two_layer

__all__ = [
    "Observation",
    "Problem",
    "noisy_quadratic",
    "linear_regression",
    "mlp_regression",
    "INPUTS",
    "TARGETS",
    "constant_target",
    "regularized_two_layer",
    "SMOOTH_ACTIVATIONS",
    "INIT_LAWS",
    "REG_LABELS",
    "indicator_target",
    "INDICATOR_MODELS",
    "du_two_layer",
    "DU_LABELS",
    "DU_TRAIN",
    "finite_quadratic",
    "newton_preconditioner",
    "potential_fns",
    "potential_1d",
    "POTENTIALS",
    "NOISE_KINDS",
]
