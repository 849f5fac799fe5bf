"""Real-world media as users have it: EXIF-rotated, progressive, 16-bit and odd-mode
images; mp3/m4a/aac/ogg/flac/wav audio at 44.1/48 kHz, mono or stereo, minutes long."""

import tracemalloc
import warnings

import av
import numpy as np
from PIL import Image, ImageOps
import pytest
import soundfile as sf

from acp_jax.features import media
from acp_jax.features import music

SIZE = 32  # load_image's output side
SR = 22050


def _blocks(width: int, height: int) -> Image.Image:
  """Flat 16-px colour blocks, none alike under a rotation or flip; JPEG keeps them."""
  rng = np.random.default_rng(0)
  block_HxWx3 = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
  return Image.fromarray(block_HxWx3.repeat(16, axis=0).repeat(16, axis=1))


def _with_orientation(upright: Image.Image, orientation: int) -> tuple[Image.Image, bytes]:
  """The stored image that a viewer honouring EXIF `orientation` shows upright, and its EXIF."""
  turn = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
          6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}[orientation]
  stored = upright.transpose(turn)
  exif = Image.Exif()
  exif[0x0112] = orientation  # the Orientation tag
  return stored, exif.tobytes()


def _load(path) -> np.ndarray:
  pixels, reason = media.load_image(path, SIZE, 8)
  assert reason is None, reason
  return pixels.astype(int)


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_is_applied_before_resizing(tmp_path, orientation):
  upright = _blocks(96, 64)
  upright.save(tmp_path / "upright.jpg", quality=95)
  stored, exif = _with_orientation(upright, orientation)
  stored.save(tmp_path / "rotated.jpg", quality=95, exif=exif)
  assert stored.size != upright.size or orientation in (2, 3, 4)
  diff = np.abs(_load(tmp_path / "rotated.jpg") - _load(tmp_path / "upright.jpg"))
  assert diff.mean() < 1.5 and diff.max() < 12, (diff.mean(), diff.max())


@pytest.mark.parametrize("width, height", [
    (4032, 3024), (3000, 4000), (1023, 767), (225, 223), (224, 224), (224, 1000), (40, 33),
    (33, 2000), (101, 7), (1, 1)])
@pytest.mark.parametrize("size", [224, 32, 299])
@pytest.mark.parametrize("one_block", [True, False])
def test_resize_equals_pillows_bilinear_byte_for_byte(width, height, size, one_block):
  # Shrinking and enlarging, odd sizes, one axis only, none; 16-row bands with a short
  # last one; PIL's pixels read in place or (a chain of blocks) copied. Random pixels:
  # any weight, rounding or band edge off shows in some byte.
  pixels_HxWx3 = np.random.default_rng(width * height).integers(
      0, 256, (height, width, 3), dtype=np.uint8)
  allocator = Image.core.get_use_block_allocator()
  Image.core.set_use_block_allocator(int(one_block))
  try:
    rgb = Image.fromarray(pixels_HxWx3)
  finally:
    Image.core.set_use_block_allocator(allocator)
  expected = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(media.resize_bilinear(rgb, size), expected)


@pytest.mark.parametrize("kind, options", [
    ("RGB", dict(quality=90)), ("RGB", dict(quality=95, subsampling=0)),
    ("RGB", dict(quality=75, subsampling=1)), ("RGB", dict(quality=90, progressive=True)),
    ("RGB", dict(quality=85, optimize=True)), ("L", dict(quality=90)),
    ("CMYK", dict(quality=90)), ("RGB", dict(quality=90, exif=_with_orientation(
        _blocks(96, 64), 6)[1]))])
def test_jpegs_load_as_pils_decode_and_resize_would(tmp_path, kind, options):
  # Upright RGB and grey JPEGs decode through libjpeg-turbo directly; CMYK and rotated
  # ones through PIL. Either way, the bytes of PIL's decode, rotation and resize.
  rng = np.random.default_rng(0)
  grain_HxWx1 = rng.normal(0, 6, (777, 1001, 1))
  scene_HxWx3 = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
                           .resize((1001, 777), Image.Resampling.BICUBIC), np.float64)
  photo = Image.fromarray(np.clip(scene_HxWx3 + grain_HxWx1, 0, 255).astype(np.uint8))
  photo.convert(kind).save(tmp_path / "photo.jpg", **options)
  with Image.open(tmp_path / "photo.jpg") as img:
    expected = np.asarray(ImageOps.exif_transpose(img).convert("RGB").resize(
        (SIZE, SIZE), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(_load(tmp_path / "photo.jpg"), expected)


def _saved(tmp_path, name: str, img: Image.Image, **kw):
  img.save(tmp_path / name, **kw)
  return tmp_path / name


@pytest.mark.parametrize("kind", ["progressive jpeg", "cmyk jpeg", "webp", "rgba png"])
def test_colour_modes_and_formats_give_the_rgb_pixels(tmp_path, kind):
  rgb = _blocks(64, 48)
  reference = _load(_saved(tmp_path, "ref.png", rgb))
  path = {
      "progressive jpeg": lambda: _saved(tmp_path, "p.jpg", rgb, quality=95, subsampling=0,
                                         progressive=True),
      "cmyk jpeg": lambda: _saved(tmp_path, "c.jpg", rgb.convert("CMYK"), quality=95,
                                  subsampling=0),
      "webp": lambda: _saved(tmp_path, "w.webp", rgb, lossless=True),
      "rgba png": lambda: _saved(tmp_path, "a.png", Image.merge(
          "RGBA", (*rgb.split(), Image.linear_gradient("L").resize(rgb.size)))),
  }[kind]()
  with Image.open(path) as img:
    assert img.mode == {"cmyk jpeg": "CMYK", "rgba png": "RGBA"}.get(kind, "RGB")
  diff = np.abs(_load(path) - reference)
  lossless = kind in ("webp", "rgba png")
  assert diff.max() == 0 if lossless else (diff.mean() < 1.5 and diff.max() < 12), diff.max()


def test_palette_png_with_transparency_converts_silently(tmp_path):
  palette = _blocks(64, 48).quantize(16)
  # A tRNS chunk of partial alphas, as image editors write it (read back as bytes).
  path = _saved(tmp_path, "p.png", palette, transparency=bytes([0, 128] + [255] * 14))
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # Pillow warns per file on a plain convert("RGB")
    pixels = _load(path)
  np.testing.assert_array_equal(pixels, _load(_saved(tmp_path, "rgb.png", palette.convert("RGB"))))


@pytest.mark.parametrize("mode", ["16-bit grey png", "8-bit grey"])
def test_greyscale_keeps_its_levels(tmp_path, mode):
  grey_HxW = np.linspace(40, 200, 64 * 48).reshape(48, 64).round().astype(np.uint8)
  if mode == "16-bit grey png":
    img = Image.fromarray(grey_HxW.astype(np.uint16) * 257)
    assert img.mode == "I;16"
  else:
    img = Image.fromarray(grey_HxW)
  pixels = _load(_saved(tmp_path, "g.png", img))
  expected = _load(_saved(tmp_path, "rgb.png", Image.fromarray(grey_HxW).convert("RGB")))
  np.testing.assert_array_equal(pixels, expected)  # not stretched, not clipped to white


def _tone_TxC(seconds: float, rate: int, channels: int) -> np.ndarray:
  """A 440 Hz sine; the second channel at half amplitude, so the mono mix is 0.375."""
  t_T = np.arange(round(seconds * rate)) / rate
  left_T = 0.5 * np.sin(2 * np.pi * 440 * t_T)
  return np.stack([left_T, 0.5 * left_T][:channels], axis=1).astype(np.float32)


def _encode_av(path, wave_TxC: np.ndarray, rate: int, codec: str, container: str | None):
  layout = "stereo" if wave_TxC.shape[1] == 2 else "mono"
  with av.open(str(path), "w", format=container) as out:
    stream = out.add_stream(codec, rate=rate, layout=layout)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave_TxC.T), format="fltp",
                                       layout=layout)
    frame.sample_rate = rate
    for packet in [*stream.encode(frame), *stream.encode(None)]:
      out.mux(packet)


@pytest.mark.parametrize("suffix, rate, channels", [
    ("m4a", 44100, 2), ("aac", 48000, 2), ("mp3", 48000, 2), ("mp3", 44100, 1),
    ("ogg", 44100, 2), ("flac", 48000, 1), ("wav", 48000, 2), ("wav", 44100, 1)])
def test_audio_formats_decode_to_mono_at_the_model_rate(tmp_path, suffix, rate, channels):
  seconds, wave_TxC, path = 2.0, _tone_TxC(2.0, rate, channels), tmp_path / f"song.{suffix}"
  if suffix == "m4a":
    _encode_av(path, wave_TxC, rate, "aac", None)
  elif suffix == "aac":
    _encode_av(path, wave_TxC, rate, "aac", "adts")  # raw AAC, as some downloaders save it
  elif suffix == "mp3":
    _encode_av(path, wave_TxC, rate, "libmp3lame", None)
  else:
    sf.write(path, wave_TxC, rate)
  y_T = music.load_audio(path, SR)
  assert y_T.dtype == np.float32 and y_T.ndim == 1
  # AAC keeps its encoder padding (~2k samples at most); the others decode exactly.
  assert 0 <= len(y_T) - seconds * SR <= (0.05 * SR if suffix in ("m4a", "aac") else 1)
  middle_T = y_T[SR // 4:int(1.75 * SR)]
  spectrum_F = np.abs(np.fft.rfft(middle_T))
  assert np.argmax(spectrum_F) * SR / len(middle_T) == pytest.approx(440, abs=1)
  amplitude = np.sqrt(2) * middle_T.std()
  assert amplitude == pytest.approx(0.5 if channels == 1 else 0.375, rel=0.07)


@pytest.mark.parametrize("kind, reason", [
    ("garbage m4a", "unreadable"), ("cut m4a", "unreadable"), ("cut aac", "truncated")])
def test_broken_ffmpeg_files_raise_audio_error_with_reason(tmp_path, kind, reason):
  suffix = kind.split()[1]
  path = tmp_path / f"song.{suffix}"
  if kind.startswith("garbage"):
    path.write_bytes(b"not audio at all" * 64)
  else:
    _encode_av(path, _tone_TxC(2.0, 44100, 2), 44100, "aac", "adts" if suffix == "aac" else None)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])  # m4a: its index is lost
  with pytest.raises(music.AudioError) as e:
    music.load_audio(path, SR)
  assert e.value.reason == reason, str(e.value)


def test_a_ten_minute_stereo_48k_song_is_held_once_as_mono(tmp_path):
  rate, seconds, path = 48000, 610, tmp_path / "long.wav"
  with sf.SoundFile(path, "w", rate, 2, subtype="PCM_16") as f:
    block_TxC = _tone_TxC(10.0, rate, 2)  # 440 Hz fits 10 s exactly: blocks join smoothly
    for _ in range(seconds // 10):
      f.write(block_TxC)
  tracemalloc.start()
  try:
    y_T = music.load_audio(path, SR)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert len(y_T) == seconds * SR
  stereo_bytes = seconds * rate * 2 * 4  # the whole song as float32 stereo
  assert peak < stereo_bytes, f"peak {peak / 2**20:.0f} MiB"
  assert np.sqrt(2) * y_T[-SR:].std() == pytest.approx(0.375, rel=0.01)
