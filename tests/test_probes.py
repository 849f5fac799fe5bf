"""MLP probes: learn separable embeddings, stay at chance on shuffled labels, reproducible."""

import numpy as np
import pytest

from acp_jax.evaluators import probes

HPARAMS = dict(hidden=(512, 32), learning_rate=1e-3, epochs=30, batch_size=64, dropout=0.4,
               weight_decay=1e-4, patience=5)


def _embeddings(num_classes: int, sizes=(480, 160, 320), dim=64, spread=1.0, seed=0):
  """(X, y) for train, validation and test: Gaussian class clusters in `dim` dimensions."""
  rng = np.random.default_rng(seed)
  means_CxD = spread * rng.normal(size=(num_classes, dim))
  out = []
  for size in sizes:
    y_N = rng.integers(0, num_classes, size=size)
    out += [means_CxD[y_N] + rng.normal(size=(size, dim)), y_N]
  return out


def test_separable_embeddings_far_above_chance():
  result = probes.train_probe(*_embeddings(8), num_classes=8, seed=0, **HPARAMS)
  assert result["test_accuracy"] > 0.9 > result["chance"] + 0.7
  assert result["chance"] == 1 / 8
  confusion = np.array(result["confusion"])
  assert confusion.shape == (8, 8) and confusion.sum() == 320
  assert np.trace(confusion) / 320 == pytest.approx(result["test_accuracy"])
  assert 1 <= result["best_epoch"] <= result["epochs_run"] == len(result["history"])
  assert result["val_accuracy"] == max(row["val_accuracy"] for row in result["history"])


def test_shuffled_labels_stay_near_chance():
  train_X, train_y, val_X, val_y, test_X, test_y = _embeddings(3)
  rng = np.random.default_rng(1)
  shuffled = [rng.permutation(y) for y in (train_y, val_y, test_y)]
  result = probes.train_probe(train_X, shuffled[0], val_X, shuffled[1], test_X, shuffled[2],
                             num_classes=3, seed=0, **HPARAMS)
  assert abs(result["test_accuracy"] - 1 / 3) < 0.1
  assert result["majority"] == pytest.approx(
      np.mean(shuffled[2] == np.bincount(shuffled[0]).argmax()))


def test_deterministic_for_a_seed():
  data = _embeddings(3, sizes=(200, 60, 60), spread=0.3)
  hparams = HPARAMS | dict(epochs=4, patience=4)
  first = probes.train_probe(*data, num_classes=3, seed=3, **hparams)
  assert probes.train_probe(*data, num_classes=3, seed=3, **hparams) == first
  assert probes.train_probe(*data, num_classes=3, seed=4, **hparams)["history"] != first["history"]


def test_rejects_labels_out_of_range():
  train_X, train_y, val_X, val_y, test_X, test_y = _embeddings(3, sizes=(20, 10, 10))
  with pytest.raises(ValueError, match=r"test: labels must lie in \[0, 2\)"):
    probes.train_probe(train_X, train_y % 2, val_X, val_y % 2, test_X, test_y, num_classes=2,
                      seed=0, **HPARAMS)
