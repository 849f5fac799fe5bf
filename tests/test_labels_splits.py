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


def _items(n_img=300, n_songs=40, seed=0):
  """Image ids with extensions and segment ids `<song>#<k>`, with their classes."""
  rng = np.random.default_rng(seed)
  emotion_N = rng.choice(labels.EMOTIONS, n_img)
  image_ids = [f"{e}/img_{i:05d}.{'png' if i % 9 == 0 else 'jpg'}" for i, e in enumerate(emotion_N)]
  image_labels = np.array([labels.EMOTION_TO_CLASS[e] for e in emotion_N])
  segments = [(f"song_{s:04d}#{k:03d}", c) for s, c in enumerate(rng.integers(0, 3, n_songs))
              for k in range(rng.integers(1, 4))]
  return image_ids, image_labels, [m for m, _ in segments], np.array([c for _, c in segments])


def _pair_set(image_ids, image_labels, music_ids, music_labels) -> set:
  image_P, music_P, label_P, _ = splits.make_pairs(image_ids, image_labels, music_ids, music_labels)
  return {(image_ids[i], music_ids[j], int(l)) for i, j, l in zip(image_P, music_P, label_P)}


def test_pairs_follow_classes_and_cover_every_item():
  image_ids, img, music_ids, mus = _items()
  image_P, music_P, label_P, flips = splits.make_pairs(image_ids, img, music_ids, mus)
  assert flips == 0
  np.testing.assert_array_equal(label_P, (img[image_P] == mus[music_P]).astype(np.int32))
  assert set(image_P) == set(range(len(img))) and set(music_P) == set(range(len(mus)))
  # One pair chosen by each item; a pair chosen from both sides is kept once.
  assert len(set(zip(image_P, music_P))) == len(label_P) <= len(img) + len(mus)
  keys = [(image_ids[i], music_ids[j]) for i, j in zip(image_P, music_P)]
  assert keys == sorted(keys)
  assert 0.4 < label_P.mean() < 0.6


def test_pairs_depend_on_ids_not_on_input_order():
  image_ids, img, music_ids, mus = _items()
  rng = np.random.default_rng(1)
  pi, pm = rng.permutation(len(image_ids)), rng.permutation(len(music_ids))
  shuffled = ([image_ids[i] for i in pi], img[pi], [music_ids[j] for j in pm], mus[pm])
  assert _pair_set(*shuffled) == _pair_set(image_ids, img, music_ids, mus)


def test_removing_items_changes_only_their_pairs():
  image_ids, img, music_ids, mus = _items()
  full = _pair_set(image_ids, img, music_ids, mus)
  rng = np.random.default_rng(2)
  keep_i = np.sort(rng.choice(len(image_ids), int(0.85 * len(image_ids)), replace=False))
  gone_songs = {"song_0003", "song_0017", "song_0029"}
  keep_m = [j for j, m in enumerate(music_ids) if m.split("#")[0] not in gone_songs]
  kept_ids = {image_ids[i] for i in keep_i} | {music_ids[j] for j in keep_m}
  reduced = _pair_set([image_ids[i] for i in keep_i], img[keep_i],
                      [music_ids[j] for j in keep_m], mus[keep_m])
  surviving = {p for p in full if p[0] in kept_ids and p[1] in kept_ids}
  assert len(surviving) > 0.6 * len(full)
  assert surviving <= reduced
  # New pairs are only those of items whose partner was removed.
  lost_partner = {x for i, m, _ in full - surviving for x in (i, m)}
  assert all(i in lost_partner or m in lost_partner for i, m, _ in reduced - surviving)


def test_fingerprint_names_the_pair_list():
  image_ids, img, music_ids, mus = _items()
  image_P, music_P, label_P, _ = splits.make_pairs(image_ids, img, music_ids, mus)
  pairs = ([image_ids[i] for i in image_P], [music_ids[j] for j in music_P], label_P)
  fingerprint = splits.pair_fingerprint(*pairs)
  assert len(fingerprint) == 12 and int(fingerprint, 16) >= 0
  assert splits.pair_fingerprint(*(x[::-1] for x in pairs)) == fingerprint  # order-free
  renamed = [image_ids[0].rsplit(".", 1)[0] + ".webp"] + image_ids[1:]  # one id changed
  image_P2, music_P2, label_P2, _ = splits.make_pairs(renamed, img, music_ids, mus)
  assert splits.pair_fingerprint([renamed[i] for i in image_P2], [music_ids[j] for j in music_P2],
                                 label_P2) != fingerprint


def test_pairs_flip_when_no_partner_exists():
  image_P, music_P, label_P, flips = splits.make_pairs(
      ["awe/a.jpg", "awe/b.jpg", "awe/c.jpg"], np.array([0, 0, 0]), ["s#000"], np.array([0]))
  # Every item is of one class: a `false` target has no eligible partner and flips.
  assert flips >= 1 and set(label_P.tolist()) == {1}
  assert len(label_P) == 3 and set(image_P.tolist()) == {0, 1, 2}


def test_balance_on_a_split_of_imac_size():
  """The train split of IMAC: ~60,000 images, ~10,500 one-minute segments."""
  image_ids, img, music_ids, mus = _items(n_img=60000, n_songs=5250, seed=3)
  _, _, label_P, flips = splits.make_pairs(image_ids, img, music_ids, mus)
  assert flips == 0
  assert abs(label_P.mean() - 0.5) < 0.01, label_P.mean()
