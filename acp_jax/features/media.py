"""Decoding of raw IMAC media into model inputs, failing with a countable reason.

Both functions return `(value, None)` or `(None, reason)` instead of raising, so one
bad file never aborts a build and worker processes never need to pickle exceptions.
"""

import numpy as np
from PIL import Image, UnidentifiedImageError

from acp_jax.features import music


def load_image(path, size: int, min_side: int) -> tuple[np.ndarray | None, str | None]:
  """RGB uint8 `size x size x 3` image, resized bilinearly without keeping aspect."""
  try:
    with Image.open(path) as img:
      img.load()  # decode now: truncated files fail here, not later
      if min(img.size) < min_side:
        return None, f"image smaller than {min_side} px"
      if img.mode in ("I", "I;16", "I;16B", "F"):
        # 16/32-bit greyscale would clip to white in convert("RGB"); rescale first.
        arr = np.asarray(img, np.float32)
        span = max(float(arr.max() - arr.min()), 1e-6)
        img = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8))
      rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
      return np.asarray(rgb, np.uint8), None
  except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
    return None, "unreadable image"


def describe_song(path, cfg: music.DescriptorConfig) -> tuple[np.ndarray | None, str | None]:
  """`S x 193` descriptors of a song's segments."""
  try:
    return music.song_descriptors(path, cfg), None
  except music.AudioError as e:
    return None, f"audio: {e.reason}"
  except Exception as e:  # pylint: disable=broad-except
    # A decoder or librosa failure on one odd file must not abort the whole build.
    return None, f"audio: failed ({type(e).__name__})"
