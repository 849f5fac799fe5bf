"""Decoding of raw IMAC media into model inputs, failing with a countable reason.

`load_image` and `song_features` return `(value, None)` or `(None, reason)` instead of
raising, so one bad file never aborts a build and worker processes never need to pickle
exceptions.
"""

import functools
import io
import math

import numba
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
import pyarrow as pa
import simplejpeg

from acp_jax.features import music
from acp_jax.features import numba_cache


def load_image(path, size: int, min_side: int) -> tuple[np.ndarray | None, str | None]:
  """RGB uint8 `size x size x 3` image, upright, resized bilinearly without keeping aspect.

  The EXIF orientation is applied before resizing. Grey, palette, CMYK and 16-bit
  images become 8-bit RGB; alpha is dropped, as Keras's `load_img` does.
  """
  # From now on this process's PIL allocates each image in one block of memory, which
  # it can share without a copy (Image.__arrow_c_array__, for `resize_bilinear`); by
  # default a large image is a chain of 16 MB blocks. A process-wide switch, left on:
  # decoding threads would race to restore it.
  Image.core.set_use_block_allocator(1)
  try:
    with open(path, "rb") as f:
      data = f.read()
    with Image.open(io.BytesIO(data)) as img:
      if min(img.size) < min_side:
        return None, f"image smaller than {min_side} px"
      # A full-size decode: libjpeg's reduced-scale decode (PIL's `draft`) is 1.4-2x
      # faster on 2-4K photos but moved their Inception features by up to 2.6e-3
      # (relative) on grainy ones, more than the 1e-3 a faithful decode may cost.
      if (img.format == "JPEG" and img.mode in ("RGB", "L")
          and img.getexif().get(ExifTags.Base.Orientation, 1) not in range(2, 9)):
        # An upright RGB or grey JPEG, most photos: libjpeg-turbo with the settings
        # PIL uses, called directly, gives the same bytes ~20% faster (17 against 21
        # ms for bench/build.py's 5 MP photos), already with the pad byte.
        rgbx_HxW = simplejpeg.decode_jpeg(data, colorspace="RGBX").view(np.uint32)[..., 0]
      else:
        img.load()  # decode now: truncated files fail here, not later
        ImageOps.exif_transpose(img, in_place=True)
        rgbx_HxW = _rgbx(_to_rgb(img))
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    return None, "unreadable image"
  return _resize_rgbx(rgbx_HxW, size), None


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


def song_features(path, cfg: music.DescriptorConfig, clap_weights=None
                  ) -> tuple[np.ndarray | None, str | None]:
  """`S x D` features of a song's segments: the 193-d descriptor, or with `clap_weights`
  (a checkpoint directory) CLAP embeddings of the same segments. A model that fails to
  load raises: that is no fault of the song."""
  embedder = None if clap_weights is None else _clap_embedder(clap_weights)
  try:
    if embedder is None:
      return music.song_descriptors(path, cfg), None
    from acp_jax.features import clap  # pylint: disable=g-import-not-at-top  (the extra)
    return clap.song_embeddings(path, cfg, embedder), None
  except music.AudioError as e:
    return None, f"audio: {e.reason}"
  except Exception as e:  # pylint: disable=broad-except
    # A decoder or librosa failure on one odd file must not abort the whole build.
    return None, f"audio: failed ({type(e).__name__})"


@functools.cache
def _clap_embedder(weights):
  """One CLAP model per process (a build's workers each load it once)."""
  from acp_jax.features import clap  # pylint: disable=g-import-not-at-top  (the extra)
  return clap.ClapEmbedder(weights)


def resize_bilinear(rgb: Image.Image, size: int) -> np.ndarray:
  """`np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))`, the same bytes.

  PIL's resize (Resample.c) runs a scalar loop per output pixel: 15.8 ms for
  bench/build.py's 5 MP photos. This runs its arithmetic (the same fixed-point weights,
  integer sums and rounding, rows then columns) on 16 rows at once in SIMD lanes,
  reading PIL's pixels in place: 8.2 ms in the same run, and the same bytes. Nothing
  less will do: random-init Inception features move by ~3e-3 (relative) when a tenth
  of the pixels are off by one.
  """
  return _resize_rgbx(_rgbx(rgb), size)


def _rgbx(rgb: Image.Image) -> np.ndarray:
  """H x W uint32: an RGB image's pixels as PIL keeps them (R, G, B, a pad byte)."""
  try:  # in place, if PIL allocated them in one block
    rgbx_B = pa.array(rgb).flatten().to_numpy(zero_copy_only=True)
  except ValueError:  # a chain of blocks: a copy
    rgbx_B = np.asarray(rgb.convert("RGBX"))
  return rgbx_B.view(np.uint32).reshape(rgb.size[1], rgb.size[0])


@numba_cache.first_call_serialised  # numba's cache, written by the first process alone
def _resize_rgbx(rgbx_HxW: np.ndarray, size: int) -> np.ndarray:
  """size x size x 3 uint8: `resize_bilinear` of pixels as `_rgbx` gives them."""
  height, width = rgbx_HxW.shape
  rows_HxSx4 = np.empty((height, size, 4), np.uint8)
  _resample_rows(rgbx_HxW, *_bilinear_weights(width, size), rows_HxSx4)
  out_SxSx3 = np.empty((size, size, 3), np.uint8)
  _resample_columns(rows_HxSx4, *_bilinear_weights(height, size), out_SxSx3)
  return out_SxSx3


_PRECISION_BITS = 22  # PIL's fixed point for 8-bit images: 32 - 8 - 2
_LANES = 16           # image rows resampled together, one per SIMD lane


@numba.njit(cache=True, nogil=True)
def _bilinear_weights(size_in, size_out):  # pragma: no cover  (compiled)
  """PIL's precompute_coeffs and normalize_coeffs_8bpc for its bilinear filter over the
  whole image: per output pixel, the first input pixel and count (S x 2) and the
  fixed-point weights (S x taps, zero past the count)."""
  scale = size_in / size_out
  support = max(scale, 1.0)  # the triangle's half-width, stretched when shrinking
  weights_SxK = np.zeros((size_out, int(math.ceil(support)) * 2 + 1), np.int32)
  bounds_Sx2 = np.zeros((size_out, 2), np.int32)
  w_K = np.empty(weights_SxK.shape[1], np.float64)
  inverse = 1.0 / support  # PIL multiplies by it (dividing rounds differently)
  for s in range(size_out):
    center = (s + 0.5) * scale
    first = max(int(center - support + 0.5), 0)
    count = min(int(center + support + 0.5), size_in) - first
    total = 0.0
    for k in range(count):
      distance = abs((k + first - center + 0.5) * inverse)
      w_K[k] = 1.0 - distance if distance < 1.0 else 0.0
      total += w_K[k]
    for k in range(count):
      weight = w_K[k] / total if total != 0.0 else w_K[k]
      weights_SxK[s, k] = int(0.5 + weight * (1 << _PRECISION_BITS))
    bounds_Sx2[s, 0], bounds_Sx2[s, 1] = first, count
  return bounds_Sx2, weights_SxK


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _weighted_sum(rows_RxB, bounds_2, weights_K, sums_B):  # pragma: no cover  (compiled)
  """PIL's integer sum for one output pixel, over every byte of a row at once:
  sums_B = half a unit + sum over k < count of rows_RxB[first + k] * weights_K[k]."""
  first, count = bounds_2[0], bounds_2[1]
  for b in range(sums_B.shape[0]):
    sums_B[b] = 1 << (_PRECISION_BITS - 1)
  for k in range(count):
    weight, row_B = weights_K[k], rows_RxB[first + k]
    for b in range(sums_B.shape[0]):
      sums_B[b] += np.int32(row_B[b]) * weight


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _resample_rows(rgbx_HxW, bounds_Sx2, weights_SxK, out_HxSx4):  # pragma: no cover
  """Each row's width resampled, PIL's ImagingResampleHorizontal_8bpc on 16 rows at a
  time: the band is transposed (pixels as 32-bit words) so that one input column's 16
  rows x 4 channels are 64 contiguous bytes, summed as 64 lanes."""
  height, width = rgbx_HxW.shape
  band_WxL = np.empty((width, _LANES), np.uint32)
  band_WxB = band_WxL.view(np.uint8).reshape(width, _LANES * 4)
  sums_B = np.empty(_LANES * 4, np.int32)
  for y0 in range(0, height, _LANES):
    rows = min(_LANES, height - y0)
    # 16 x 16 pixel blocks, each written to 16 whole cache lines of the band while they
    # are in L1: 1.7x faster than filling the band one lane at a time.
    for x0 in range(0, width - _LANES + 1, _LANES):
      for x in range(x0, x0 + _LANES):  # a fixed count, which LLVM unrolls
        for lane in range(_LANES):  # a last band of fewer rows repeats its last row
          band_WxL[x, lane] = rgbx_HxW[y0 + min(lane, rows - 1), x]
    for x in range(width - width % _LANES, width):
      for lane in range(_LANES):
        band_WxL[x, lane] = rgbx_HxW[y0 + min(lane, rows - 1), x]
    for s in range(bounds_Sx2.shape[0]):
      _weighted_sum(band_WxB, bounds_Sx2[s], weights_SxK[s], sums_B)
      for lane in range(rows):
        for c in range(4):
          out_HxSx4[y0 + lane, s, c] = min(max(sums_B[lane * 4 + c] >> _PRECISION_BITS, 0), 255)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _resample_columns(rows_HxSx4, bounds_Tx2, weights_TxK, out_TxSx3):  # pragma: no cover
  """Each column's height resampled, PIL's ImagingResampleVertical_8bpc: whole rows of
  the row-resampled image weighted and summed, dropping the fourth byte."""
  height, width, _ = rows_HxSx4.shape
  rows_HxB = rows_HxSx4.reshape(height, width * 4)
  sums_B = np.empty(width * 4, np.int32)
  for t in range(bounds_Tx2.shape[0]):
    _weighted_sum(rows_HxB, bounds_Tx2[t], weights_TxK[t], sums_B)
    for s in range(width):
      for c in range(3):
        out_TxSx3[t, s, c] = min(max(sums_B[s * 4 + c] >> _PRECISION_BITS, 0), 255)
