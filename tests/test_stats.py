"""Error bars: the vectorised bootstrap AUC against scikit-learn's, and the t interval."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from acp_jax import stats


def test_weighted_auc_is_sklearns_on_each_resample():
  rng = np.random.default_rng(0)
  label_P = (rng.random(300) < 0.4).astype(np.int32)
  score_P = np.round(rng.random(300) + 0.3 * label_P, 2)  # many ties
  index_RxP = rng.integers(0, 300, (20, 300))
  weight_RxP = np.stack([np.bincount(index_P, minlength=300) for index_P in index_RxP])
  got_R = stats._auc_of_weights(weight_RxP.astype(np.float64), label_P, score_P)  # pylint: disable=protected-access
  want_R = [roc_auc_score(label_P[index_P], score_P[index_P]) for index_P in index_RxP]
  np.testing.assert_allclose(got_R, want_R, rtol=0, atol=1e-12)
  one_label = stats._auc_of_weights(np.eye(300)[:1], label_P, score_P)  # pylint: disable=protected-access
  assert np.isnan(one_label).all()


def test_bootstrap_interval_brackets_the_estimate():
  rng = np.random.default_rng(1)
  label_P = (np.arange(2000) % 2).astype(np.int32)
  prob_P = np.clip(0.5 + 0.2 * (label_P - 0.5) + 0.2 * rng.normal(size=2000), 0, 1)
  interval = stats.bootstrap_interval(label_P, prob_P, 500, seed=0, chunk=64)
  accuracy = np.mean((prob_P > 0.5) == (label_P == 1))
  low, high = interval["test_accuracy"]
  assert low < accuracy < high and 0.02 < high - low < 0.06
  low, high = interval["test_auc"]
  assert low < roc_auc_score(label_P, prob_P) < high
  # The same seed, the same interval, however the resamples are chunked.
  assert stats.bootstrap_interval(label_P, prob_P, 500, seed=0, chunk=500) == interval


def test_t_interval_of_two_values():
  assert stats.t_interval(np.array([0.4, 0.6])) == pytest.approx([0.5 - 1.2706, 0.5 + 1.2706],
                                                                  abs=1e-3)
