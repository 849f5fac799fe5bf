"""Deterministic train/validation/test assignment and the fixed correspondence pairs.

Split: an item goes to a split by a hash of its id, never by listing order, so adding
or removing files moves no other item. Songs are assigned by song id, so every
segment of a song lands in the same split.

Pairs (documented in README.md): within a split, items are ordered by their hash.
Walking the images and then the music segments, the k-th item gets one pair whose
target label alternates true/false with k, so the pairs are balanced 50/50 (within
one) and every item of the split appears at least once. The partner is drawn
uniformly, with a generator seeded by the split name, from the other modality's
items of the same class (true) or of the other classes (false). If no such partner
exists the label flips; the builder counts such flips.
"""

import hashlib
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "validation", "test")


def item_hash(key: str) -> float:
  """Uniform number in [0, 1) from a string, stable across runs and machines."""
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def assign_split(key: str, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> str:
  h = item_hash(key)
  edges = np.cumsum(fractions)
  return SPLITS[min(int(np.searchsorted(edges, h, side="right")), len(SPLITS) - 1)]


def make_pairs(image_labels: np.ndarray, music_labels: np.ndarray, seed_key: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """Fixed pairs for one split; items must already be in hash order.

  Returns (image_index_P, music_index_P, label_P, flips).
  """
  rng = np.random.default_rng(int(item_hash(seed_key) * 2**63))
  image_P, music_P, label_P = [], [], []
  flips = 0

  def partner(labels_N, cls, want_match):
    nonlocal flips
    pool = np.flatnonzero((labels_N == cls) == want_match)
    if not len(pool):
      flips += 1
      want_match = not want_match
      pool = np.flatnonzero((labels_N == cls) == want_match)
    return int(rng.choice(pool)), want_match

  for k, cls in enumerate(image_labels):
    j, match = partner(music_labels, cls, k % 2 == 0)
    image_P.append(k), music_P.append(j), label_P.append(match)
  for k, cls in enumerate(music_labels, start=len(image_labels)):
    i, match = partner(image_labels, cls, k % 2 == 0)
    image_P.append(i), music_P.append(k - len(image_labels)), label_P.append(match)
  as_int = lambda x: np.asarray(x, np.int32)
  return as_int(image_P), as_int(music_P), as_int(label_P), flips
