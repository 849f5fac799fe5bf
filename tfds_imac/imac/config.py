"""The imac builder config: how items are turned into features, and the synthetic presets."""

import dataclasses

import tensorflow_datasets as tfds

from acp_jax.features import music
from tfds_imac import synthetic as synthetic_corpus


@dataclasses.dataclass(eq=False, kw_only=True)
class ImacConfig(tfds.core.BuilderConfig):
  """How items are turned into features; `synthetic` set means a generated corpus."""
  segment_seconds: float = 60.0   # music cut into non-overlapping segments of this length
  window_seconds: float = 10.0    # descriptor window inside a segment
  hop_seconds: float = 5.0        # hop between descriptor windows
  image_size: int = 224           # Inception input side
  min_image_side: int = 32        # smaller images are skipped as unusable
  image_batch: int = 64           # images embedded per Inception call
  decode_ahead: int = 256         # images decoded ahead of the embedder (bounds memory)
  inception_seed: int = 0         # seed of the random-init Inception (synthetic, or opt-in)
  media: bool = False             # item-level records with pixels and waveforms (baselines)
  synthetic: synthetic_corpus.CorpusConfig | None = None

  @property
  def descriptor(self) -> music.DescriptorConfig:
    return music.DescriptorConfig(segment_seconds=self.segment_seconds,
                                  window_seconds=self.window_seconds,
                                  hop_seconds=self.hop_seconds)


# Keyword arguments of the generated-corpus configs.
SYNTHETIC = dict(segment_seconds=6.0, window_seconds=2.0, hop_seconds=1.0,
                 synthetic=synthetic_corpus.CorpusConfig())
# Weaker cues, more label noise, more items: objectives that tie on `synthetic` can differ.
SYNTHETIC_HARD = dict(SYNTHETIC, synthetic=synthetic_corpus.CorpusConfig(
    num_images=800, num_songs=240, label_noise=0.2, cue_strength=0.4))
