"""Error bars of a run's figures: over seeds (sample std, t interval) or, for one seed, a
bootstrap over the test pairs; ROC-AUC."""

from collections.abc import Sequence
import math

import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score


def t_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
  """The `level` t-distribution interval of the mean of independent `values` (ddof=1)."""
  half = (scipy.stats.t.ppf(0.5 + level / 2, len(values) - 1)
          * np.std(values, ddof=1) / math.sqrt(len(values)))
  return [float(np.mean(values) - half), float(np.mean(values) + half)]


def auc(label_P: np.ndarray, score_P: np.ndarray) -> float | None:
  """ROC-AUC, None when the pairs hold one label only (AUC is undefined)."""
  return float(roc_auc_score(label_P, score_P)) if len(np.unique(label_P)) == 2 else None


def bootstrap_interval(label_P: np.ndarray, match_prob_P: np.ndarray, num_resamples: int,
                       seed: int, level: float = 0.95) -> dict[str, list[float] | None]:
  """Percentile bootstrap over the test pairs: {'test_accuracy', 'test_auc'} intervals."""
  rng = np.random.default_rng(seed)
  index_RxP = rng.integers(0, len(label_P), (num_resamples, len(label_P)))
  correct_P = (match_prob_P > 0.5) == (label_P == 1)
  accuracy_R = correct_P[index_RxP].mean(axis=1)
  auc_R = [auc(label_P[index_P], match_prob_P[index_P]) for index_P in index_RxP]
  quantiles = lambda x_R: [float(q) for q in np.quantile(x_R, [0.5 - level / 2, 0.5 + level / 2])]
  auc_R = [a for a in auc_R if a is not None]
  return {"test_accuracy": quantiles(accuracy_R), "test_auc": quantiles(auc_R) if auc_R else None}


def over_seeds(per_seed: Sequence[dict], analysed: dict) -> dict:
  """`analysed`'s nested metrics with each float the mean over `per_seed`, `_std` beside it."""
  out = {}
  for group, metrics in analysed.items():
    out[group] = dict(metrics)
    for name, value in metrics.items():
      if isinstance(value, float):
        values = [seed[group][name] for seed in per_seed]
        out[group][name] = float(np.mean(values))
        out[group][f"{name}_std"] = float(np.std(values, ddof=1))
  return out
