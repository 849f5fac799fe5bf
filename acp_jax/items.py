"""A split in memory: its items, one row per distinct item of each modality, and its fixed pairs.

`acp_jax/data.py` makes these from a prepared TFDS dataset; tests make them directly.
"""

from collections.abc import Sequence
import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Items:
  """One modality of one split, one row per distinct item."""
  ids: tuple[str, ...]        # item ids, sorted
  # float32 features of the dataset (Inception-V3, music descriptor); None for the items of
  # a media config, whose features are in `source`.
  features_NxD: np.ndarray | None
  labels_N: np.ndarray        # int32, index into labels.CLASSES
  cues_N: np.ndarray          # int32 hidden cue class (synthetic data), -1 if unknown
  emotions_N: np.ndarray | None = None  # int32 index into labels.EMOTIONS (images)
  # Media configs: record i is item i, a dict with 'features', 'pixels' (uint8 H x W x 3,
  # images) and 'waveform' (int16 segment at 22050 Hz, music); e.g. a tfds.data_source.
  source: Sequence[dict[str, Any]] | None = None


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
  fingerprint: str | None = None  # the dataset's pair_fingerprint of this split; None: unknown
  # Which Inception-V3 made the image features: "imagenet", "random(seed=N)"; None: unknown
  # or another encoder.
  inception_weights: str | None = None
  # The dataset's encoders and weights: {"image", "image_weights", "music", "music_weights"}
  # (tfds_imac/imac/weights.py); None: unknown.
  encoders: dict | None = None
  # Accuracy on the fixed pairs of answering 'match' iff the items' cue classes agree
  # (recorded by the build of a synthetic corpus); None: cues unknown.
  oracle_accuracy: float | None = None
  # Root of the split's raw corpus (images/<emotion>/<name>.<ext>, music/<song_id>.<ext>),
  # if known: a synthetic config's generated corpus.
  corpus_root: Any = None
  # Seconds of a music segment (the dataset's descriptor): segment `<song_id>#<k>` starts
  # k segments into its song. None: unknown.
  segment_seconds: float | None = None
