"""Split conformal prediction for six-option multiple choice: scores, thresholds, metrics, splits.

numpy only (no torch): it reads stored option probabilities, never a model. See docs/conformal.md.

>>> rows = evaluate(probs, labels, score_fns=("lac", "aps"), alphas=(0.05, 0.1), n_splits=100)
>>> table = summarize(rows)  # mean, std, 95% percentile interval per (score_fn, alpha, metric)
"""

from surefast.conformal.bootstrap import bootstrap_items
from surefast.conformal.calibrate import (
    conformal_quantile,
    fill_empty_with_top,
    min_calibration_size,
    prediction_sets,
    quantile_rank,
)
from surefast.conformal.evaluate import BOOTSTRAP, SPLITS, SplitResults, evaluate, evaluate_splits, summarize
from surefast.conformal.inputs import softmax
from surefast.conformal.mondrian import MondrianConfig, grouped_quantile
from surefast.conformal.scores import (
    SCORES,
    APSConfig,
    LACConfig,
    RAPSConfig,
    ScoreArray,
    ScoreConfig,
    at_labels,
    class_scores,
    get_score,
)
from surefast.conformal.splits import METRICS, split_indices, split_uniforms

__all__ = [
    "BOOTSTRAP",
    "METRICS",
    "SCORES",
    "SPLITS",
    "APSConfig",
    "LACConfig",
    "MondrianConfig",
    "RAPSConfig",
    "ScoreArray",
    "ScoreConfig",
    "SplitResults",
    "at_labels",
    "bootstrap_items",
    "class_scores",
    "conformal_quantile",
    "evaluate",
    "evaluate_splits",
    "fill_empty_with_top",
    "get_score",
    "grouped_quantile",
    "min_calibration_size",
    "prediction_sets",
    "quantile_rank",
    "softmax",
    "split_indices",
    "split_uniforms",
    "summarize",
]
