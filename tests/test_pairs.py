"""Device tables and pair sampling (on device, and on the host for the media stream):
balance, labels, uniformity; the input standardiser."""

import dataclasses

import jax
import numpy as np
import pytest

from acp_jax import feeds
from acp_jax import generated
from acp_jax import inputs
from acp_jax import items
from acp_jax import pairs


@pytest.fixture(scope="module")
def train_split() -> items.Split:
  return generated.make_splits(sizes={"train": (60, 21, 10)})["train"]


def _tables(split: items.Split) -> pairs.Tables:
  return pairs.make_tables(inputs.Standardizer.fit(split.images.features_NxD)(
      split.images.features_NxD), inputs.Standardizer.fit(split.music.features_NxD)(
          split.music.features_NxD), split.images.labels_N, split.music.labels_N)


def test_standardizer_uses_the_given_statistics():
  x_NxD = np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)
  standardize = inputs.Standardizer.fit(x_NxD)
  np.testing.assert_allclose(standardize(x_NxD), [[-1, 0], [1, 0]])  # a constant column -> 0
  np.testing.assert_allclose(standardize(np.array([[5.0, 6.0]])), [[3, 1]])
  # Statistics gathered in batches (a streamed corpus) are the same statistics.
  moments = inputs.Standardizer.of_moments(2, x_NxD.astype(np.float64).sum(0),
                                           (x_NxD.astype(np.float64) ** 2).sum(0))
  np.testing.assert_allclose(moments(x_NxD), [[-1, 0], [1, 0]])


def test_tables_list_music_by_class(train_split):
  tables = _tables(train_split)
  labels_M = train_split.music.labels_N[tables.music_by_class_M]
  assert (np.diff(labels_M) >= 0).all()
  for c in range(3):
    block = labels_M[tables.music_start_C[c]:tables.music_start_C[c] + tables.music_count_C[c]]
    assert (block == c).all()


def _device_pairs(split: items.Split, num: int) -> tuple[np.ndarray, ...]:
  sample = jax.jit(pairs.sample_pairs, static_argnums=2)
  return tuple(map(np.asarray, sample(jax.random.key(0), jax.device_put(_tables(split)), num)))


def _host_pairs(split: items.Split, num: int) -> tuple[np.ndarray, ...]:
  return feeds.PairSampler.of(split, num)(seed=0, step=3)


@pytest.mark.parametrize("sample", [_device_pairs, _host_pairs], ids=["device", "stream"])
def test_pairs_are_balanced_labelled_and_uniform(train_split, sample):
  image_B, music_B, label_B = sample(train_split, 60_000)
  np.testing.assert_array_equal(label_B, np.arange(60_000) % 2 == 0)
  image_class_B = train_split.images.labels_N[image_B]
  music_class_B = train_split.music.labels_N[music_B]
  np.testing.assert_array_equal(image_class_B == music_class_B, label_B == 1)
  # Images uniform; given the image's class, music uniform within it (true pairs) or
  # among all other classes' music (false pairs): every count within 5 sigma.
  expected = lambda n, k: (n / k, 5 * np.sqrt(n / k))
  counts = np.bincount(image_B, minlength=60)
  mean, tol = expected(60_000, 60)
  assert np.abs(counts - mean).max() < tol
  for c in range(3):
    for match in (True, False):
      rows = (image_class_B == c) & (label_B == match)
      allowed = np.flatnonzero((train_split.music.labels_N == c) == match)
      counts = np.bincount(music_B[rows], minlength=21)
      assert counts[np.setdiff1d(np.arange(21), allowed)].sum() == 0
      mean, tol = expected(rows.sum(), len(allowed))
      assert np.abs(counts[allowed] - mean).max() < tol


def test_gather_returns_the_standardised_rows(train_split):
  tables = _tables(train_split)
  image_BxD, music_BxD = pairs.gather(tables, np.array([3, 0]), np.array([1, 1]))
  np.testing.assert_array_equal(image_BxD, tables.image_NxD[[3, 0]])
  np.testing.assert_array_equal(music_BxD, tables.music_MxD[[1, 1]])


def test_unsampleable_split_is_explained(train_split):
  one_class = dataclasses.replace(train_split.music,
                                  labels_N=np.zeros_like(train_split.music.labels_N))
  with pytest.raises(ValueError, match="only music of that class"):
    pairs.check_sampleable(dataclasses.replace(train_split, music=one_class), "train")
  no_negative = dataclasses.replace(
      train_split.music, labels_N=np.where(train_split.music.labels_N == 2, 0,
                                           train_split.music.labels_N))
  with pytest.raises(ValueError, match="'negative' but no music of that class"):
    pairs.check_sampleable(dataclasses.replace(train_split, music=no_negative), "train")
