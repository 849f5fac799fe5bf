"""Labels (paper Table 1 and the song rule), the hash split and the fixed pairs."""

import numpy as np
import pytest

from acp_jax import labels
from tfds_imac.imac import splits


def test_table1_regrouping():
  by_class = {c: sorted(e for e, k in labels.EMOTION_TO_CLASS.items() if labels.CLASSES[k] == c)
              for c in labels.CLASSES}
  assert by_class == {"positive": ["amusement", "awe", "excitement"],
                      "neutral": ["contentment"],
                      "negative": ["anger", "disgust", "fear", "sadness"]}
  assert set(labels.EMOTIONS) == set(labels.EMOTION_TO_CLASS)


@pytest.mark.parametrize("scores, expected", [
    ((3, 1, 0), 0), ((0, 2, 1), 1), ((0, 1, 5), 2),
    ((2, 2, 0), 0), ((0, 2, 2), 1), ((2, 0, 2), 0), ((1, 1, 1), 0),  # ties: more positive
])
def test_song_class(scores, expected):
  assert labels.song_class(scores) == expected


def test_song_class_rejects_wrong_length():
  with pytest.raises(ValueError, match="expected 3 scores"):
    labels.song_class((1, 2))


def test_split_is_deterministic_and_near_70_10_20():
  keys = [f"image:awe/{i}" for i in range(20000)]
  assigned = [splits.assign_split(k) for k in keys]
  assert assigned == [splits.assign_split(k) for k in keys]
  fractions = [assigned.count(s) / len(keys) for s in splits.SPLITS]
  np.testing.assert_allclose(fractions, [0.7, 0.1, 0.2], atol=0.01)


def test_split_does_not_depend_on_other_items():
  # Adding items never moves an existing one: assignment is a function of the id alone.
  assert splits.assign_split("music:song42") == splits.assign_split("music:song42")
  assert splits.item_hash("a") != splits.item_hash("b")


def _pairs(n_img=101, n_mus=37, seed=0):
  rng = np.random.default_rng(seed)
  img, mus = rng.integers(0, 3, n_img), rng.integers(0, 3, n_mus)
  return img, mus, splits.make_pairs(img, mus, seed_key="test")


def test_pairs_balanced_consistent_and_covering():
  img, mus, (image_P, music_P, label_P, flips) = _pairs()
  assert flips == 0
  assert len(label_P) == len(img) + len(mus)
  assert abs(int(label_P.sum()) * 2 - len(label_P)) <= 1
  np.testing.assert_array_equal(label_P, (img[image_P] == mus[music_P]).astype(np.int32))
  assert set(image_P) == set(range(len(img))) and set(music_P) == set(range(len(mus)))


def test_pairs_are_fixed_for_a_split_and_differ_across_splits():
  img, mus, first = _pairs()
  _, _, again = _pairs()
  for a, b in zip(first[:3], again[:3]):
    np.testing.assert_array_equal(a, b)
  other = splits.make_pairs(img, mus, seed_key="validation")
  assert not np.array_equal(first[1], other[1])


def test_pairs_flip_when_no_partner_exists():
  image_P, music_P, label_P, flips = splits.make_pairs(np.array([0, 0]), np.array([0]), "x")
  # Image 1 wants a false partner but every music item is of its class.
  assert flips >= 1 and label_P.tolist() == [1, 1, 1]
