"""Per-item extraction that every build mode runs: image embedding and segment waveforms.

Free of builder state, so the in-process engine (`in_process`), the Beam workers
(`beam_pipeline`) and the media examples run the same code. An image's pixels come
from `media.load_image`, a song's features from `media.song_features`.
"""

from etils import epath
import numpy as np

from acp_jax.features import clip
from acp_jax.features import inception
from acp_jax.features import music
from tfds_imac.imac import config
from tfds_imac.imac import weights


def make_embedder(cfg: config.ImacConfig, encoders: weights.Encoders
                  ) -> inception.ImageEmbedder | clip.VisionEmbedder:
  """The image encoder of `cfg`: `embedder(uint8 BxHxWx3) -> float32 B x embedder.dim`.

  Inception-V3 with the Keras weights, or seeded random init if there are none; a
  frozen CLIP or SigLIP tower with the weights in its directory.
  """
  if encoders.image != "inception":
    return clip.VisionEmbedder(encoders.image, encoders.image_weights, cfg.image_batch)
  variables = (inception.load_keras_weights(encoders.image_weights)
               if encoders.image_weights is not None
               else inception.random_variables(cfg.inception_seed))
  return inception.ImageEmbedder(variables, cfg.image_batch)


def embed_image_batch(embedder, pixels_BxHxWx3: np.ndarray
                      ) -> tuple[np.ndarray, list[str | None]]:
  """float32 B x D features and, per row, None or the reason to skip the image."""
  feat_BxD = embedder(pixels_BxHxWx3)
  finite_B = np.isfinite(feat_BxD).all(axis=1)
  return feat_BxD, [None if ok else "non-finite image features" for ok in finite_B]


def segment_waveform(song_path: epath.Path, desc_cfg: music.DescriptorConfig) -> np.ndarray:
  """int16 S x segment_samples: the song's segments as the descriptor saw them."""
  segments_SxT = music.segment(music.load_audio(song_path, desc_cfg.sample_rate), desc_cfg)
  return np.round(np.clip(segments_SxT, -1, 1) * 32767).astype(np.int16)
