"""Retrieval: blocked score matrices, ranking metrics by hand and against sklearn, chance."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from acp_jax import retrieval

# Two queries x five keys, worked out by hand in the comments.
KEY_LABELS = np.array([0, 1, 0, 1, 1])
SCORES = np.array([
    # q0 (class 0): ranks k0 k1 k3 k4 k2 -> relevant 1 0 0 0 1
    #   p@1 = 1, p@5 = 2/5, AP = (1/1 + 2/5) / 2 = 0.7, RR = 1
    [0.9, 0.8, 0.1, 0.7, 0.3],
    # q1 (class 1): ranks k0, k4, then k1 and k2 tie at 0.4 (lower index first), k3
    #   -> relevant 0 1 1 0 1: p@1 = 0, p@5 = 3/5, AP = (1/2 + 2/3 + 3/5) / 3, RR = 1/2
    #   (the other tie order would give AP = (1/2 + 2/4 + 3/5) / 3)
    [0.9, 0.4, 0.4, 0.1, 0.6],
    # q2 (class 0): ranks k4 k3 k2 k1 k0 -> relevant 0 0 1 0 1
    #   p@1 = 0, p@5 = 2/5, AP = (1/3 + 2/5) / 2, RR = 1/3
    [0.1, 0.2, 0.3, 0.4, 0.5],
])
AP = {0: 0.7, 1: (1 / 2 + 2 / 3 + 3 / 5) / 3, 2: (1 / 3 + 2 / 5) / 2}


def test_hand_computed_with_tie():
  got = retrieval.retrieval_metrics(SCORES[:2], [0, 1], KEY_LABELS, num_classes=2, ks=(1, 5))
  np.testing.assert_allclose(
      [got["p@1"], got["p@5"], got["map"], got["mrr"]],
      [(1 + 0) / 2, (2 / 5 + 3 / 5) / 2, (AP[0] + AP[1]) / 2, (1 + 1 / 2) / 2], rtol=1e-6)


def test_macro_average_over_query_classes():
  # Class 0 has queries q0 and q2, class 1 has q1, class 2 has none (skipped).
  got = retrieval.retrieval_metrics(SCORES, [0, 1, 0], KEY_LABELS, num_classes=3, ks=(1, 5),
                                    block=2)
  class0 = {"p@1": (1 + 0) / 2, "p@5": 2 / 5, "map": (AP[0] + AP[2]) / 2, "mrr": (1 + 1 / 3) / 2}
  class1 = {"p@1": 0.0, "p@5": 3 / 5, "map": AP[1], "mrr": 1 / 2}
  for name in class0:
    assert got[name] == pytest.approx((class0[name] + class1[name]) / 2, rel=1e-6), name


def _reference(score_QxK, query_labels, key_labels, num_classes, ks):
  """Per-query metrics with numpy and sklearn, macro-averaged over query classes."""
  per_query = {f"p@{k}": [] for k in ks} | {"map": [], "mrr": []}
  for scores, label in zip(score_QxK, query_labels):
    relevant = key_labels[np.argsort(-scores, kind="stable")] == label
    for k in ks:
      per_query[f"p@{k}"].append(relevant[:k].mean())
    per_query["map"].append(average_precision_score(key_labels == label, scores))
    per_query["mrr"].append(1.0 / (np.argmax(relevant) + 1))
  return {name: np.mean([np.mean(np.array(values)[query_labels == c])
                         for c in range(num_classes) if np.any(query_labels == c)])
          for name, values in per_query.items()}


def test_random_against_sklearn():
  rng = np.random.default_rng(0)
  # Class 3 has keys but no queries; class 4 has neither.
  query_labels = rng.integers(0, 3, size=45)
  key_labels = rng.integers(0, 4, size=300)
  score_QxK = rng.normal(size=(45, 300)).astype(np.float32)
  ks = (1, 5, 10)
  got = retrieval.retrieval_metrics(score_QxK, query_labels, key_labels, 5, ks, block=16)
  want = _reference(score_QxK, query_labels, key_labels, 5, ks)
  assert got.keys() == want.keys()
  for name in want:
    assert got[name] == pytest.approx(want[name], abs=1e-5), name


def test_chance_by_hand():
  # Class 0: R = 2 relevant of N = 5 keys. E[RR]: P(first = 1, 2, 3, 4) =
  # 2/5, 3/10, 1/5, 1/10. E[AP]: the mean of (1/a + 2/b) / 2 over the 10 position
  # pairs a < b, which sums to 5.925.
  got = retrieval.chance_metrics([0, 0], KEY_LABELS, num_classes=2, ks=(1, 5))
  assert got["p@1"] == got["p@5"] == pytest.approx(2 / 5)
  assert got["mrr"] == pytest.approx(2 / 5 + 3 / 10 / 2 + 1 / 5 / 3 + 1 / 10 / 4)
  assert got["map"] == pytest.approx(5.925 / 10)


@pytest.mark.parametrize("key_labels", [[0, 1, 1, 0, 1, 1], [1, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0]])
def test_chance_equals_metrics_averaged_over_all_rankings(key_labels):
  # Every permutation of 6 keys as one query row: the mean metric is the exact expectation.
  score_QxK = np.array(list(itertools.permutations(range(6))), np.float32)
  query_labels = np.ones(len(score_QxK), np.int32)
  key_labels = np.array(key_labels)
  got = retrieval.chance_metrics(query_labels, key_labels, 2, ks=(1, 3))
  want = retrieval.retrieval_metrics(score_QxK, query_labels, key_labels, 2, ks=(1, 3), block=128)
  for name in want:
    assert got[name] == pytest.approx(want[name], abs=1e-5), name


@pytest.mark.parametrize("num_q, num_k, block", [(7, 11, 10), (3, 4, 100), (5, 6, 1)])
def test_score_matrix_in_blocks(num_q, num_k, block):
  rng = np.random.default_rng(1)
  queries_QxD = rng.normal(size=(num_q, 8)).astype(np.float32)
  keys_KxD = rng.normal(size=(num_k, 8)).astype(np.float32)
  score_QxK = retrieval.score_matrix(lambda q, k: jnp.sum(q * k, axis=-1), queries_QxD, keys_KxD,
                                     block)
  np.testing.assert_allclose(score_QxK, queries_QxD @ keys_KxD.T, rtol=1e-5, atol=1e-5)


def test_evaluate_retrieval_both_directions():
  rng = np.random.default_rng(2)
  music_labels, image_labels = rng.integers(0, 3, size=20), rng.integers(0, 3, size=30)
  score_MxI = rng.normal(size=(20, 30)).astype(np.float32)
  got = retrieval.evaluate_retrieval(score_MxI, music_labels, image_labels, 3, block=8)
  extra = {"chance": None, "queries": None, "per_class": None}
  assert got["image_to_music"] | extra == (
      retrieval.retrieval_metrics(score_MxI.T, image_labels, music_labels, 3) | extra)
  assert got["music_to_image"]["chance"] == retrieval.chance_metrics(music_labels, image_labels, 3)
  assert set(got["music_to_image"]) == {"p@1", "p@5", "p@10", "map", "mrr", "chance", "queries",
                                        "per_class"}
  assert got["music_to_image"]["queries"] == 20 and got["image_to_music"]["queries"] == 30
  # Per class: the mean over that class's queries alone; their mean is the macro figure.
  per_class = got["music_to_image"]["per_class"]
  for c in range(3):
    only_c = music_labels == c
    alone = retrieval.retrieval_metrics(score_MxI[only_c], music_labels[only_c], image_labels, 3)
    assert {m: per_class[m][c] for m in alone} == pytest.approx(alone)
  assert np.mean(per_class["mrr"]) == pytest.approx(got["music_to_image"]["mrr"])


def test_per_class_figures_leave_a_class_without_queries_out():
  got = retrieval.evaluate_retrieval(np.eye(2, 3, dtype=np.float32), np.array([0, 0]),
                                     np.array([0, 1, 2]), 3, ks=(1,))
  # Music 0 ranks image 0 (its class) first, music 1 image 1 (another class).
  assert got["music_to_image"]["per_class"]["p@1"] == [0.5, None, None]
  assert got["music_to_image"]["p@1"] == 0.5  # the classes without queries do not count


def test_rejects_bad_input():
  with pytest.raises(ValueError, match="must lie in"):
    retrieval.retrieval_metrics(SCORES, [0, 1, 0], KEY_LABELS, num_classes=2, ks=(1, 10))
  with pytest.raises(ValueError, match="labels must lie in"):
    retrieval.chance_metrics([0, 2], KEY_LABELS, num_classes=2)
  with pytest.raises(ValueError, match="does not match"):
    retrieval.retrieval_metrics(SCORES, [0, 1], KEY_LABELS, num_classes=2, ks=(1,))
