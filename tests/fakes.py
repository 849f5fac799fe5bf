"""Fake IMAC media splits, tiny configs, and a driver that trains.

The splits are acp_jax/generated.py's; `with_media` adds pixels and waveforms that
show the cue too (for the baselines).

As a script, trains on fake splits in a fresh process (for the kill/resume,
multi-device and multi-process tests):

  [FAKES_KILL_AT=MOMENT] python tests/fakes.py CONFIG_JSON WORKDIR

MOMENT (see `kill_at`) makes the process SIGKILL itself there.
"""

import dataclasses
import json
import os
import pathlib
import signal
import sys
import tempfile

import jax
import ml_collections
import numpy as np

from acp_jax import generated
from acp_jax import items
from configs import acp
from configs import l3net
from configs import spectrogram_acp

# The tests compile the same small programs in many runs and processes, and XLA:CPU
# takes seconds for each: share the compilations through a persistent cache.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "acp_jax_tests_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)

def with_media(splits: dict[str, items.Split], seed: int = 0, *, image_side: int = 16,
               seconds: float = 1.0) -> dict[str, items.Split]:
  """The splits as a media config's: each item's record (its `source`) holds its features,
  uint8 pixels of the cue's colour or int16 tones of the cue's pitch, as tfds.data_source's."""
  rng = np.random.default_rng(seed)
  colour_Cx3 = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200]], np.float32)
  pitch_C = np.array([220.0, 660.0, 1980.0])
  time_T = np.arange(round(seconds * 22050)) / 22050
  no_pixels, no_waveform = np.zeros((0, image_side, 3), np.uint8), np.zeros((0,), np.int16)

  def records(its: items.Items, field: str, media_N: np.ndarray) -> list[dict]:
    emotions_N = its.emotions_N if its.emotions_N is not None else -np.ones_like(its.cues_N)
    return [{"id": item_id, "label": its.labels_N[i], "cue": its.cues_N[i],
             "emotion": emotions_N[i], "song_id": "", "features": its.features_NxD[i],
             "pixels": no_pixels, "waveform": no_waveform, field: media_N[i]}
            for i, item_id in enumerate(its.ids)]

  out = {}
  for name, split in splits.items():
    image_cue_N, music_cue_M = split.images.cues_N, split.music.cues_N
    pixels = colour_Cx3[image_cue_N][:, None, None] + rng.normal(
        0, 40, (len(image_cue_N), image_side, image_side, 3))
    tones = 0.3 * np.sin(2 * np.pi * pitch_C[music_cue_M][:, None] * time_T) + rng.normal(
        0, 0.05, (len(music_cue_M), len(time_T)))
    media_items = lambda its, field, media_N: dataclasses.replace(
        its, features_NxD=None, source=records(its, field, media_N))
    out[name] = dataclasses.replace(
        split,
        images=media_items(split.images, "pixels", np.clip(pixels, 0, 255).astype(np.uint8)),
        music=media_items(split.music, "waveform", np.round(tones * 32767).astype(np.int16)))
  return out


def small_config(**overrides) -> ml_collections.ConfigDict:
  """The synthetic config shrunk to a few seconds: tiny widths, ~20 steps, frequent events."""
  config = acp.get_config("synthetic")
  config.image_widths = (32, 16)
  config.music_widths = (16, 16, 16, 16)
  config.fusion_widths = (16, 8, 8)
  config.batch_size = 16                # 22 steps per epoch of the 340 fake train images
  config.num_epochs = 1
  config.num_seeds = 1
  config.steps_per_dispatch = 2
  config.log_every_steps = 4
  config.eval_every_epochs = 0.25       # every 6 steps
  config.checkpoint_every_epochs = 0.5  # every 12 steps
  config.evals = acp.evals_config()     # no probes: tests that want Table 5 add them
  config.update(overrides)
  return config


def small_media_config(model: str, **overrides) -> ml_collections.ConfigDict:
  """A baseline's synthetic config shrunk as `small_config`: 8x8 images, 8 bands, 2 conv blocks."""
  config = {"l3net": l3net, "spectrogram_acp": spectrogram_acp}[model].get_config("synthetic")
  shrunk = small_config()
  for key in ("batch_size", "num_epochs", "num_seeds", "steps_per_dispatch", "log_every_steps",
              "eval_every_epochs", "checkpoint_every_epochs", "evals", "report"):
    config[key] = shrunk[key]
  config.spectrogram.num_mel_bins = 8
  config.input.workers = 0              # read in the test's process: no worker start-up
  config.input.standardizer_items = 64
  config.music_channels = (4, 8)
  if model == "l3net":
    config.image_channels = (4, 8)
    config.image_size = 8                 # resized from with_media's 16x16
  else:
    config.image_widths = (32, 8)
    config.music_widths = (8,)
    config.fusion_widths = (16, 8, 8)
  config.update(overrides)
  return config


def kill_at(moment: str) -> None:
  """Makes this process SIGKILL itself at `moment`.

  'saving:STEP': as soon as the checkpoint of STEP is being written (orbax commits it
  in the background); 'saved:STEP': once it is committed; 'results': when the run is
  about to evaluate its best params and write results.json.
  """
  from acp_jax import checkpoint
  from acp_jax import evaluate

  kill = lambda *_, **__: os.kill(os.getpid(), signal.SIGKILL)
  what, _, step = moment.partition(":")
  if what == "results":
    evaluate.evaluate_run = kill
    return
  save = checkpoint.Checkpoints.save

  def save_then_kill(self, save_step, *args):
    save(self, save_step, *args)
    if save_step == int(step):
      if what == "saved":
        self.manager.wait_until_finished()
      kill()

  checkpoint.Checkpoints.save = save_then_kill


def main(config_json: str, workdir: str) -> None:
  # Imported here: launch defines absl flags on import, which only the driver wants.
  import launch
  from acp_jax import train

  if "FAKES_KILL_AT" in os.environ:
    kill_at(os.environ["FAKES_KILL_AT"])
  launch.maybe_initialize_distributed()
  config = ml_collections.ConfigDict(json.loads(pathlib.Path(config_json).read_text()))
  train.train_and_evaluate(config, workdir, splits=generated.make_splits())


if __name__ == "__main__":
  main(*sys.argv[1:])
