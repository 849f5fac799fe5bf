"""Decoding of raw IMAC media into model inputs, failing with a countable reason.

Both functions return `(value, None)` or `(None, reason)` instead of raising, so one
bad file never aborts a build and worker processes never need to pickle exceptions.
"""

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from acp_jax.features import music


def load_image(path, size: int, min_side: int) -> tuple[np.ndarray | None, str | None]:
  """RGB uint8 `size x size x 3` image, upright, resized bilinearly without keeping aspect.

  The EXIF orientation is applied before resizing. Grey, palette, CMYK and 16-bit
  images become 8-bit RGB; alpha is dropped, as Keras's `load_img` does.
  """
  try:
    with Image.open(path) as img:
      if min(img.size) < min_side:
        return None, f"image smaller than {min_side} px"
      # A full-size decode: libjpeg's reduced-scale decode (PIL's `draft`) is 1.4-2x
      # faster on 2-4K photos but moved their Inception features by up to 2.6e-3
      # (relative) on grainy ones, more than the 1e-3 a faithful decode may cost.
      img.load()  # decode now: truncated files fail here, not later
      ImageOps.exif_transpose(img, in_place=True)
      rgb = _to_rgb(img).resize((size, size), Image.Resampling.BILINEAR)
      return np.asarray(rgb, np.uint8), None
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    return None, "unreadable image"


def _to_rgb(img: Image.Image) -> Image.Image:
  """8-bit RGB; `convert` alone would clip 16/32-bit greyscale to white."""
  if img.mode.startswith("I;16"):  # 16-bit greyscale: 65535 -> 255
    grey = np.round(np.asarray(img, np.float32) / 257).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
  if img.mode in ("I", "F"):  # 32-bit int or float: no fixed range, stretch to 0..255
    arr = np.asarray(img, np.float32)
    span = max(float(arr.max() - arr.min()), 1e-6)
    return Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8)).convert("RGB")
  if img.mode == "P" and "transparency" in img.info:
    img = img.convert("RGBA")  # convert("RGB") of such a palette warns on every file
  return img if img.mode == "RGB" else img.convert("RGB")  # convert would copy it


def describe_song(path, cfg: music.DescriptorConfig) -> tuple[np.ndarray | None, str | None]:
  """`S x 193` descriptors of a song's segments."""
  try:
    return music.song_descriptors(path, cfg), None
  except music.AudioError as e:
    return None, f"audio: {e.reason}"
  except Exception as e:  # pylint: disable=broad-except
    # A decoder or librosa failure on one odd file must not abort the whole build.
    return None, f"audio: failed ({type(e).__name__})"
