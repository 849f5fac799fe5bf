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


def make_embedder(encoder: str, weights: epath.Path | None, seed: int, batch_size: int
                  ) -> inception.ImageEmbedder | clip.VisionEmbedder:
  """An image encoder: `embedder(uint8 BxHxWx3) -> float32 B x embedder.dim`.

  Inception-V3 with the Keras weights file `weights`, or seeded random init if None; a
  frozen CLIP or SigLIP tower (`encoder`) with the weights directory `weights`.
  """
  if encoder != "inception":
    return clip.VisionEmbedder(encoder, weights, batch_size)
  variables = (inception.load_keras_weights(weights) if weights is not None
               else inception.random_variables(seed))
  return inception.ImageEmbedder(variables, batch_size)


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
