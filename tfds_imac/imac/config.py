"""The imac builder config: how items are turned into features, and the synthetic presets."""

import dataclasses

from etils import epath
import tensorflow_datasets as tfds

from acp_jax.features import inception
from acp_jax.features import music
from tfds_imac import synthetic as synthetic_corpus

# Image encoders: the paper's Inception-V3 (2048-d pool features), or a frozen
# contrastive image tower (acp_jax/features/clip.py): CLIP ViT-B/32 or SigLIP B/16.
IMAGE_ENCODERS = ("inception", "clip", "siglip")
# Music encoders: the paper's 193-d descriptor, or LAION CLAP's audio tower
# (acp_jax/features/clap.py, the `clap` extra).
MUSIC_ENCODERS = ("descriptor", "clap")


@dataclasses.dataclass(eq=False, kw_only=True)
class ImacConfig(tfds.core.BuilderConfig):
  """How items are turned into features; `synthetic` set means a generated corpus.

  Every config cuts songs into the same segments and pairs items by the same rule, so
  the configs of one corpus hold the same fixed pairs (the same pair fingerprints),
  whatever their encoders. A frozen encoder's weights come from a local directory
  (tfds_imac/imac/weights.py), never from a hub.
  """
  segment_seconds: float = 60.0   # music cut into non-overlapping segments of this length
  window_seconds: float = 10.0    # descriptor window inside a segment
  hop_seconds: float = 5.0        # hop between descriptor windows
  image_size: int = 224           # decoded image side (squashed, aspect not kept)
  min_image_side: int = 32        # smaller images are skipped as unusable
  image_batch: int = 64           # images embedded per encoder call
  decode_ahead: int = 256         # images decoded ahead of the embedder (bounds memory)
  inception_seed: int = 0         # seed of the random-init Inception (synthetic, or opt-in)
  image_encoder: str = "inception"   # one of IMAGE_ENCODERS
  # One of MUSIC_ENCODERS. CLAP embeds a segment as the mean of the unit-norm embeddings
  # of its 10 s windows at 48 kHz (a 60 s segment: 6 windows; one shorter than 10 s is
  # repeat-padded): acp_jax/features/clap.py.
  music_encoder: str = "descriptor"
  media: bool = False             # item-level records with pixels and waveforms (baselines)
  synthetic: synthetic_corpus.CorpusConfig | None = None

  def __post_init__(self):
    if self.image_encoder not in IMAGE_ENCODERS or self.music_encoder not in MUSIC_ENCODERS:
      raise ValueError(
          f"imac/{self.name}: image_encoder={self.image_encoder!r} must be one of "
          f"{IMAGE_ENCODERS} and music_encoder={self.music_encoder!r} one of {MUSIC_ENCODERS}.")
    if self.media and (self.image_encoder, self.music_encoder) != ("inception", "descriptor"):
      raise ValueError(f"imac/{self.name}: media configs keep the paper's encoders.")

  @property
  def feature_dims(self) -> tuple[int | None, int | None]:
    """(image, music) feature widths of the encoders; None for a frozen encoder, whose
    width is its checkpoint's (512 for CLIP ViT-B/32 and CLAP, 768 for SigLIP B/16)."""
    return (inception.FEATURE_DIM if self.image_encoder == "inception" else None,
            music.DESCRIPTOR_DIM if self.music_encoder == "descriptor" else None)

  @property
  def descriptor(self) -> music.DescriptorConfig:
    return music.DescriptorConfig(segment_seconds=self.segment_seconds,
                                  window_seconds=self.window_seconds,
                                  hop_seconds=self.hop_seconds)


@dataclasses.dataclass(frozen=True)
class Encoders:
  """What embeds a build's items (`weights.resolve`). A label names weights in the metadata: Inception's
  "imagenet" or "random(seed=N)"; a frozen encoder's directory name and a digest of
  its files, so a run can tell that a dataset was rebuilt with other weights."""
  image: str                        # one of config.IMAGE_ENCODERS
  image_weights: epath.Path | None  # Inception's .h5 (None: random init), else a directory
  image_label: str
  music: str                        # one of config.MUSIC_ENCODERS
  music_weights: epath.Path | None  # CLAP's directory; None for the descriptor
  music_label: str | None           # None for the descriptor, which has no weights

  def metadata(self) -> dict:
    return {"inception_weights": self.image_label if self.image == "inception" else None,
            "encoders": {"image": self.image, "image_weights": self.image_label,
                         "music": self.music, "music_weights": self.music_label}}


# Keyword arguments of the generated-corpus configs.
SYNTHETIC = dict(segment_seconds=6.0, window_seconds=2.0, hop_seconds=1.0,
                 synthetic=synthetic_corpus.CorpusConfig())
# Weaker cues, more label noise, more items: objectives that tie on `synthetic` can differ.
SYNTHETIC_HARD = dict(SYNTHETIC, synthetic=synthetic_corpus.CorpusConfig(
    num_images=800, num_songs=240, label_noise=0.2, cue_strength=0.4))
# Frozen foundation encoders in place of the paper's features.
CLIP_CLAP = dict(image_encoder="clip", music_encoder="clap")
SIGLIP_CLAP = dict(image_encoder="siglip", music_encoder="clap")
