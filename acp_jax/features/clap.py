"""LAION CLAP's audio tower (transformers, PyTorch) as a music feature: the `clap` extra.

The weights are the Hugging Face checkpoint `laion/larger_clap_music` (HTSAT-base audio
encoder, 512-d projection; 48 kHz audio, 10 s windows) in a local directory the user
downloads: `config.json`, `model.safetensors`, `preprocessor_config.json`. They are read
with `local_files_only=True` and `use_safetensors=True`: never fetched, never unpickled.

`ClapEmbedder` embeds song segments: each segment is cut into non-overlapping 10 s
windows (the shorter tail dropped; a segment shorter than one window is repeat-padded
to one, CLAP's "repeatpad"), the windows of all segments are batched through the audio
tower only (the text tower is never built), and a segment's embedding is the mean of
its windows' L2-normalised audio embeddings (so its norm is at most 1). `song_embeddings`
is the file-to-matrix entry point, with the same segments as the music descriptor's.
`reference_embed` is transformers' straightforward path: the feature extractor and
`ClapModel.get_audio_features`, one window at a time.
"""

import importlib.util
import os

from etils import epath
import numpy as np

from acp_jax.features import music
from acp_jax.features import encoder_weights

SAMPLE_RATE = 48_000   # Hz, the rate CLAP was trained at
WINDOW_SECONDS = 10.0  # the audio tower's input length (the extractor's max_length_s)
DIM = 512              # larger_clap_music's projection_dim
CHECKPOINT = "laion/larger_clap_music"
DOWNLOAD = "https://huggingface.co/laion/larger_clap_music"
INSTALL = "pip install -e .[clap]"
WEIGHTS_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
# `save_random_weights`' tiny audio tower: HTSAT's layout (4 stages of Swin blocks over a
# 256x256 spectrogram image) at width 8 and one block per stage.
_TINY_AUDIO = dict(patch_embeds_hidden_size=8, depths=[1, 1, 1, 1],
                   num_attention_heads=[1, 1, 1, 1], hidden_size=64, projection_dim=16)
_TINY_TEXT = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                  intermediate_size=16, max_position_embeddings=16, projection_dim=16)
# larger_clap_music's audio tower (HTSAT-base): `ClapAudioConfig(**REAL_AUDIO)`.
REAL_AUDIO = dict(patch_embeds_hidden_size=128, depths=[2, 2, 12, 2],
                  num_attention_heads=[4, 8, 16, 32], hidden_size=1024, projection_dim=DIM)


def check_weights_dir(path: str | os.PathLike) -> epath.Path:
  """`path` as an epath if it holds a CLAP checkpoint in safetensors and the extra is in.

  Raises FileNotFoundError / ValueError naming the directory and the expected files, or
  ImportError naming the install command; reads only the listing and config.json.
  """
  path = epath.Path(path)
  fetch = (f"download {', '.join(WEIGHTS_FILES)} of {CHECKPOINT} from {DOWNLOAD} "
           "into it")
  if (path / "pytorch_model.bin").exists() and not (path / "model.safetensors").exists():
    raise ValueError(
        f"{path} holds pytorch_model.bin, a pickle, which is never loaded here (unpickling "
        "runs code): convert it to model.safetensors (transformers: "
        "ClapModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True) on a "
        f"machine you trust) or {fetch}.")
  config = encoder_weights.read_config(path, WEIGHTS_FILES, "CLAP", fetch)
  model_type = config.get("model_type")
  if model_type != "clap":
    raise ValueError(f"{path} holds a {model_type!r} checkpoint, not CLAP ('clap'): {fetch}.")
  for module in ("torch", "transformers"):
    if importlib.util.find_spec(module) is None:
      raise ImportError(f"The CLAP music tower needs torch and transformers: {INSTALL}")
  return path


def _import_extra():
  """(torch, transformers), or an ImportError naming the extra's install command."""
  try:
    import torch  # pylint: disable=g-import-not-at-top  (optional)
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"The CLAP music tower needs torch and transformers: {INSTALL} "
                      f"({e})") from e
  return torch, transformers


def _load(path: epath.Path, audio_only: bool):
  """(feature extractor, model in eval mode) from a checked directory: the audio tower
  alone (`ClapAudioModelWithProjection`), or the whole `ClapModel`."""
  _, transformers = _import_extra()
  local = dict(local_files_only=True)  # never reach the Hub, not even for a version check
  extractor = transformers.ClapFeatureExtractor.from_pretrained(os.fspath(path), **local)

  class AudioTower(transformers.ClapAudioModelWithProjection):
    # The checkpoint's text tower and logit scales are expected to stay unread.
    _keys_to_ignore_on_load_unexpected = [r"^text_", r"^logit_scale"]

  model_class = AudioTower if audio_only else transformers.ClapModel
  model, info = model_class.from_pretrained(
      os.fspath(path), use_safetensors=True, output_loading_info=True, **local)
  if info["missing_keys"]:
    raise ValueError(f"{path / 'model.safetensors'} lacks {len(info['missing_keys'])} of "
                     f"CLAP's weights ({sorted(info['missing_keys'])[:3]}...): it is not a "
                     f"complete {CHECKPOINT} checkpoint.")
  model.eval()
  if (extractor.sampling_rate, extractor.nb_max_samples) != (
      SAMPLE_RATE, round(WINDOW_SECONDS * SAMPLE_RATE)):
    raise ValueError(
        f"{path}'s feature extractor takes {extractor.nb_max_samples} samples at "
        f"{extractor.sampling_rate} Hz; this module cuts {WINDOW_SECONDS} s windows at "
        f"{SAMPLE_RATE} Hz ({CHECKPOINT}'s setting).")
  return extractor, model


def _window_batch(extractor, windows_BxL: np.ndarray) -> dict:
  """Model inputs of windows of at most WINDOW_SECONDS, shorter ones repeat-padded."""
  inputs = extractor(list(windows_BxL), sampling_rate=SAMPLE_RATE, padding="repeatpad",
                     return_tensors="pt")
  # With "fusion" the extractor flags one random window of a batch as longer than 10 s;
  # a window alone is always flagged (as in `reference_embed`), so every window is,
  # whatever batch it shares: no window's embedding depends on its batch.
  inputs["is_longer"][:] = extractor.truncation == "fusion"
  return inputs


def windows(segments_SxT: np.ndarray) -> np.ndarray:
  """(S*W) x min(T, window) windows, W = max(1, T // window) per segment, in order."""
  window = round(WINDOW_SECONDS * SAMPLE_RATE)
  segments_SxT = np.asarray(segments_SxT, np.float32)
  if segments_SxT.ndim != 2 or not segments_SxT.shape[1]:
    raise ValueError(f"Expected S x T segments of mono audio (T > 0), got shape "
                     f"{segments_SxT.shape}; stack a song's segments along axis 0.")
  count, length = segments_SxT.shape
  if length < window:
    return segments_SxT
  per_segment = length // window
  return segments_SxT[:, :per_segment * window].reshape(count * per_segment, window)


class ClapEmbedder:
  """Song segments at SAMPLE_RATE -> float32 S x dim CLAP embeddings (see module doc)."""

  def __init__(self, weights_dir: str | os.PathLike, batch_size: int = 8):
    self._torch, _ = _import_extra()
    self._extractor, self._model = _load(check_weights_dir(weights_dir), audio_only=True)
    self.batch_size = batch_size
    self.dim = self._model.config.projection_dim

  def embed_segments(self, segments_SxT: np.ndarray) -> np.ndarray:
    """Mean of each segment's L2-normalised window embeddings: float32 S x dim."""
    torch = self._torch
    windows_NxL = windows(segments_SxT)
    if not len(windows_NxL):
      return np.zeros((0, self.dim), np.float32)
    feats = []
    with torch.inference_mode():
      for start in range(0, len(windows_NxL), self.batch_size):
        inputs = _window_batch(self._extractor, windows_NxL[start:start + self.batch_size])
        embeds_BxD = self._model(**inputs).audio_embeds
        feats.append(torch.nn.functional.normalize(embeds_BxD, dim=-1).numpy())
    return np.concatenate(feats).reshape(len(segments_SxT), -1, self.dim).mean(axis=1)


def song_embeddings(path: str | os.PathLike, desc_cfg: music.DescriptorConfig,
                    embedder: ClapEmbedder) -> np.ndarray:
  """S x dim: CLAP embeddings of the song's segments at 48 kHz, the same S segments (same
  spans, same rejections) as `music.song_descriptors` with `desc_cfg`.

  The count and the 'silent' check come from the descriptor's own decode at its rate
  (`music.song_segments`; its resampled length rounds up, so 48 kHz audio alone could
  disagree by one segment at a boundary); the last 48 kHz segment may lack a sample or
  two, zero-padded. Raises music.AudioError like `music.song_descriptors`.
  """
  segments_SxN = music.song_segments(path, desc_cfg)
  segment_seconds = desc_cfg.segment_seconds
  length = round(segment_seconds * SAMPLE_RATE)
  y_T = music.load_audio(path, SAMPLE_RATE)[:len(segments_SxN) * length]
  y_T = np.pad(y_T, (0, len(segments_SxN) * length - len(y_T)))
  feat_SxD = embedder.embed_segments(y_T.reshape(len(segments_SxN), length))
  if not np.isfinite(feat_SxD).all():
    raise music.AudioError("non-finite", f"{path} gives NaN/Inf CLAP embeddings; inspect "
                           "the audio.")
  return feat_SxD


def load_reference(weights_dir: str | os.PathLike):
  """(feature extractor, full `ClapModel`) for `reference_embed`."""
  return _load(check_weights_dir(weights_dir), audio_only=False)


def reference_embed(extractor, model, segments_SxT: np.ndarray) -> np.ndarray:
  """transformers' straightforward path, one window at a time: float32 S x dim."""
  torch, _ = _import_extra()
  window = round(WINDOW_SECONDS * SAMPLE_RATE)
  out = []
  with torch.inference_mode():
    for segment in np.asarray(segments_SxT, np.float32):
      cuts = [segment[i:i + window] for i in range(0, len(segment) - window + 1, window)]
      embeds = [model.get_audio_features(**extractor(
          w, sampling_rate=SAMPLE_RATE, padding="repeatpad", return_tensors="pt")
      ).pooler_output[0].numpy() for w in cuts or [segment]]
      out.append(np.mean(embeds, axis=0))
  return np.asarray(out, np.float32).reshape(len(out), -1)


def save_random_weights(out_dir: str | os.PathLike, seed: int = 0,
                        audio_config: dict | None = None) -> epath.Path:
  """A seeded random `ClapModel` in `out_dir`, in the format of the real checkpoint.

  `config.json` + `model.safetensors` (`save_pretrained(safe_serialization=True)`) and
  `preprocessor_config.json`. Tiny by default (runs in milliseconds); `audio_config`
  replaces the audio tower's settings (`REAL_AUDIO`: larger_clap_music's sizes).
  """
  torch, transformers = _import_extra()
  torch.manual_seed(seed)
  audio = audio_config or _TINY_AUDIO
  config = transformers.ClapConfig(
      audio_config=audio, text_config={**_TINY_TEXT, "projection_dim": audio["projection_dim"]},
      projection_dim=audio["projection_dim"])
  out = epath.Path(out_dir)
  transformers.ClapModel(config).save_pretrained(os.fspath(out), safe_serialization=True)
  transformers.ClapFeatureExtractor(
      sampling_rate=SAMPLE_RATE, max_length_s=int(WINDOW_SECONDS), truncation="rand_trunc",
      padding="repeatpad").save_pretrained(os.fspath(out))
  return out
