"""Named experiments: each study of the science notes as measurement + prediction + verdict.

An :class:`Experiment` declares its parameters (:class:`Param`: type, range,
choices, whether a list is allowed), its presets (``quick``: about a minute on two
CPU cores; ``paper``: the papers' sizes, for a GPU), a ``studies`` function that
builds the engine studies from a resolved configuration (so they can be planned
before anything runs: ``--dry-run``), and an ``analyze`` function that turns the
studies' labeled datasets into an :class:`Outcome`: a flat list of quantities made
by :func:`quantity` (measured value, standard error, prediction, criterion, the
interval used, the oracle). A ``figures`` function redraws every figure from the
stored results and summary alone, so ``sgdlab report DIR`` needs no recomputation.

The framework lives in private modules, one job each: ``_params`` (the ``--set``
keys), ``_verdict`` (criteria and the run's multiple-testing policy), ``_registry``
(the :class:`Experiment` record, discovered by module), ``_run`` (running,
checkpoints, outputs, reports). Every other module of this package is an experiment.
"""

from sgdlab import plots as _plots  # noqa: F401  (figures display inline in Jupyter)
from sgdlab.experiments._params import Param
from sgdlab.experiments._registry import PRESETS, REGISTRY, Experiment, get, names, register
from sgdlab.experiments._run import (
    STATE,
    Context,
    dry_run,
    load_run,
    report,
    run,
    save_figures,
    write_outputs,
)
from sgdlab.experiments._verdict import (
    CRITERIA,
    FAMILY_ALPHA,
    SUMMARY_FORMAT,
    Z_PASS,
    Outcome,
    exit_status,
    finalize,
    holm,
    quantity,
    summary_table,
)

__all__ = ["Param", "PRESETS", "REGISTRY", "Experiment", "get", "names", "register", "STATE",
           "Context", "dry_run", "load_run", "report", "run", "save_figures", "write_outputs",
           "CRITERIA", "FAMILY_ALPHA", "SUMMARY_FORMAT", "Z_PASS", "Outcome", "exit_status",
           "finalize", "holm", "quantity", "summary_table"]
