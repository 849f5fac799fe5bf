"""IMAC splits as host-side item tables plus the fixed correspondence pairs.

The TFDS examples are pairs that carry both items' features; training wants the
items once each (pairs are sampled on device), and evaluation wants the fixed pairs
as indices into those item tables. `load_splits` turns one into the other.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Items:
  """One modality of one split, one row per distinct item."""
  ids: tuple[str, ...]        # item ids, sorted
  features_NxD: np.ndarray    # float32
  labels_N: np.ndarray        # int32, index into labels.CLASSES
  cues_N: np.ndarray          # int32 hidden cue class (synthetic data), -1 if unknown
  emotions_N: np.ndarray | None = None  # int32 index into labels.EMOTIONS (images)


@dataclasses.dataclass(frozen=True)
class Pairs:
  """The fixed correspondence pairs of a split, as indices into its Items."""
  image_P: np.ndarray   # int32
  music_P: np.ndarray   # int32
  labels_P: np.ndarray  # int32, 1 = true correspondence (same class)


@dataclasses.dataclass(frozen=True)
class Split:
  images: Items
  music: Items
  pairs: Pairs
