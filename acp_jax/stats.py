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


def _auc_of_weights(weight_RxP: np.ndarray, label_P: np.ndarray, score_P: np.ndarray
                    ) -> np.ndarray:
  """ROC-AUC of R weightings of the same pairs (a pair counted w times), NaN where one label
  has no weight: the Mann-Whitney statistic, tied scores counting half."""
  order_P = np.argsort(score_P, kind="stable")
  sorted_P = score_P[order_P]
  starts_K = np.flatnonzero(np.r_[True, sorted_P[1:] != sorted_P[:-1]])  # tie groups
  weight_RxP = weight_RxP[:, order_P]
  positive_P = label_P[order_P] == 1
  pos_RxK, neg_RxK = weight_RxP * positive_P, weight_RxP * ~positive_P
  if len(starts_K) < len(score_P):
    pos_RxK, neg_RxK = (np.add.reduceat(x, starts_K, axis=1) for x in (pos_RxK, neg_RxK))
  below_RxK = np.cumsum(neg_RxK, axis=1) - neg_RxK
  pairs_R = pos_RxK.sum(axis=1) * neg_RxK.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(pairs_R > 0, (pos_RxK * (below_RxK + neg_RxK / 2)).sum(axis=1) / pairs_R,
                    np.nan)


def bootstrap_interval(label_P: np.ndarray, match_prob_P: np.ndarray, num_resamples: int,
                       seed: int, level: float = 0.95, chunk: int = 100
                       ) -> dict[str, list[float] | None]:
  """Percentile bootstrap over the test pairs: {'test_accuracy', 'test_auc'} intervals.

  Resamples are drawn and scored `chunk` at a time, vectorised: memory and time grow
  with the pairs, not with their square.
  """
  rng = np.random.default_rng(seed)
  num = len(label_P)
  correct_P = (match_prob_P > 0.5) == (label_P == 1)
  accuracy_R, auc_R = [], []
  for start in range(0, num_resamples, chunk):
    index_RxP = rng.integers(0, num, (min(chunk, num_resamples - start), num))
    rows = len(index_RxP)
    weight_RxP = np.bincount((index_RxP + num * np.arange(rows)[:, None]).ravel(),
                             minlength=rows * num).reshape(rows, num).astype(np.float64)
    accuracy_R.append(correct_P[index_RxP].mean(axis=1))
    auc_R.append(_auc_of_weights(weight_RxP, label_P, match_prob_P))
  quantiles = lambda x_R: [float(q) for q in np.quantile(x_R, [0.5 - level / 2, 0.5 + level / 2])]
  auc_R = np.concatenate(auc_R)
  auc_R = auc_R[~np.isnan(auc_R)]
  return {"test_accuracy": quantiles(np.concatenate(accuracy_R)),
          "test_auc": quantiles(auc_R) if len(auc_R) else None}


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
