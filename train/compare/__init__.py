"""``compare-datasets``: which training data separates best? The same model trained on several data variants
(real multitracks, naive / calibrated / tempo-aware remixes, a mix of both, remix pretraining) with equal budgets
and repeated seeds, scored on held-out real songs against two baselines, reported with honest verdicts.

::

    from train.compare import run_comparison
    results = run_comparison("compare.yaml", "runs/cmp")    # runs/cmp/results.json, runs/cmp/report.html

Modules: :mod:`~train.compare.config` (``compare.yaml``), :mod:`~train.compare.variants` (built-in variants,
overlays, runs), :mod:`~train.compare.testset` (held-out songs), :mod:`~train.compare.runner` (train, separate),
:mod:`~train.compare.scoring` (baselines and runs in one pool), :mod:`~train.compare.results` (medians, spread,
verdicts), :mod:`~train.compare.report` (``report.html``), :mod:`~train.compare.experiment` (all of it).
"""

from train.compare.config import CompareConfig, compare_config, load_compare
from train.compare.experiment import REPORT, RESULTS, finish_comparison, run_comparison
from train.compare.runner import Comparison, plan_comparison, run_spec
from train.compare.variants import BUILTIN_VARIANTS

__all__ = ["BUILTIN_VARIANTS", "REPORT", "RESULTS", "CompareConfig", "Comparison", "compare_config",
           "finish_comparison", "load_compare", "plan_comparison", "run_comparison", "run_spec"]
