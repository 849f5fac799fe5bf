"""Feature-level splits generated with a known class signal: no media, no TFDS.

Every item has a hidden cue class; its features are the cue's mean plus Gaussian
noise, and its label is the cue except for a `label_noise` fraction relabelled at
random (as in the synthetic corpus), so the oracle accuracy is known and below 1.
The tests train on them at the synthetic corpus's size (`SIZES`); bench/paper_scale.py
at IMAC's (`imac_sizes`).
"""

import numpy as np

from acp_jax import items
from acp_jax import labels
from tfds_imac.imac import splits as imac_splits

IMAGE_DIM = 2048   # Inception-V3 pool features
MUSIC_DIM = 193    # the paper's music descriptor
NUM_CLASSES = len(labels.CLASSES)
# (images, music, fixed pairs) per split, about the synthetic corpus's sizes.
SIZES = {"train": (340, 130, 340), "validation": (50, 20, 100), "test": (100, 40, 200)}


def imac_sizes(scale: float = 1.0) -> dict[str, tuple[int, int, int]]:
  """IMAC's split sizes times `scale`: 85,007 images and ~15k music segments, 70:10:20;
  fixed pairs one per item, as the builder makes them."""
  sizes = {}
  for name, share in (("train", 0.7), ("validation", 0.1), ("test", 0.2)):
    num_images, num_music = round(85_007 * share * scale), round(15_000 * share * scale)
    sizes[name] = (num_images, num_music, num_images + num_music)
  return sizes


def _items(rng: np.random.Generator, prefix: str, num: int, means_CxD: np.ndarray,
           label_noise: float, with_emotions: bool) -> items.Items:
  cues_N = rng.integers(0, NUM_CLASSES, num).astype(np.int32)
  relabel_N = rng.random(num) < label_noise
  labels_N = np.where(relabel_N, rng.integers(0, NUM_CLASSES, num), cues_N).astype(np.int32)
  features_NxD = means_CxD[cues_N] + rng.normal(size=(num, means_CxD.shape[1]))
  emotions_N = None
  if with_emotions:
    by_class = [[e for e, name in enumerate(labels.EMOTIONS)
                 if labels.EMOTION_TO_CLASS[name] == c] for c in range(NUM_CLASSES)]
    emotions_N = np.array([rng.choice(by_class[c]) for c in labels_N], np.int32)
  return items.Items(ids=tuple(f"{prefix}{i:05d}" for i in range(num)),
                    features_NxD=features_NxD.astype(np.float32), labels_N=labels_N,
                    cues_N=cues_N, emotions_N=emotions_N)


def _pairs(rng: np.random.Generator, images: items.Items, music: items.Items,
           num: int) -> items.Pairs:
  """Balanced fixed pairs: images uniform, music of the same class for half of them."""
  image_P = rng.integers(0, len(images.ids), num).astype(np.int32)
  labels_P = (np.arange(num) % 2 == 0).astype(np.int32)
  music_P = np.empty(num, np.int32)
  for p, (i, match) in enumerate(zip(image_P, labels_P)):
    same = music.labels_N == images.labels_N[i]
    music_P[p] = rng.choice(np.flatnonzero(same if match else ~same))
  return items.Pairs(image_P, music_P, labels_P)


def make_splits(seed: int = 0, *, signal: float = 0.3, label_noise: float = 0.1,
                image_dim: int = IMAGE_DIM, music_dim: int = MUSIC_DIM,
                sizes: dict[str, tuple[int, int, int]] | None = None,
                imac_pairs: bool = False) -> dict[str, items.Split]:
  """Train, validation and test splits sharing each modality's class means.

  Args:
    seed: seeds everything.
    signal: std of the class means per dimension, against unit noise.
    label_noise: fraction of items whose label is redrawn uniformly.
    image_dim, music_dim: feature sizes.
    sizes: (images, music, fixed pairs) per split; defaults to `SIZES`.
    imac_pairs: fixed pairs by the imac builder's pairing rule (one per item, so the
      pair counts in `sizes` are ignored) instead of drawn at random.
  """
  rng = np.random.default_rng(seed)
  image_means_CxD = signal * rng.normal(size=(NUM_CLASSES, image_dim))
  music_means_CxD = signal * rng.normal(size=(NUM_CLASSES, music_dim))
  splits = {}
  for name, (num_images, num_music, num_pairs) in (sizes or SIZES).items():
    images = _items(rng, f"{name}/img", num_images, image_means_CxD, label_noise, True)
    music = _items(rng, f"{name}/mus", num_music, music_means_CxD, label_noise, False)
    if imac_pairs:
      fixed = items.Pairs(*imac_splits.make_pairs(images.ids, images.labels_N, music.ids,
                                                  music.labels_N)[:3])
    else:
      fixed = _pairs(rng, images, music, num_pairs)
    fingerprint = imac_splits.pair_fingerprint([images.ids[i] for i in fixed.image_P],
                                               [music.ids[m] for m in fixed.music_P],
                                               fixed.labels_P)
    # Every cue is known here: the oracle answers 'match' iff the two cues agree.
    oracle = np.mean((images.cues_N[fixed.image_P] == music.cues_N[fixed.music_P])
                     == (fixed.labels_P == 1))
    splits[name] = items.Split(images, music, fixed, fingerprint, oracle_accuracy=float(oracle))
  return splits
