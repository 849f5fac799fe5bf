"""The L3-Net media stream: host memory flat in corpus size, speed against the in-memory path.

  python -m bench.media [--images 2000] [--dispatches 6] [--workers 2]
                        [--steps_per_dispatch 4] [--json]

Builds two generated item-level media corpora in the media configs' format (ArrayRecord,
one record per item: 224x224 uint8 pixels, 6 s int16 segments, features), the larger
4x the smaller (`--images` images and a third as many segments), under `--data_dir`
(kept for the next run). Then, in one run:

  * pipeline: each corpus in a fresh process, the paper-setting L3-Net input (batch 32,
    224x224 images, 128-band log-spectrograms made on device, `--steps_per_dispatch`)
    read through `feeds.StreamFeed` with `--workers` processes: steps/s and peak RSS
    of the main process and of the largest worker;
  * step: training steps/s of the CPU demo's L3-Net (configs/l3net.py:synthetic) on
    the smaller corpus, streamed against the in-memory path (`feeds.TableFeed`: every
    item's input made once and held on device), measured alternately. Where a
    streamed step's time goes: configs/l3net.py's docstring.
"""

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

import jax
import numpy as np
import tensorflow_datasets as tfds

from acp_jax import data
from acp_jax import feeds
from acp_jax import inputs
from acp_jax import items
from acp_jax import labels
from acp_jax import models
from acp_jax import objectives
from acp_jax import train
from configs import l3net
from tfds_imac.imac import examples

SEGMENT_SECONDS = 6.0
SAMPLE_RATE = 22050


@dataclasses.dataclass(eq=False, kw_only=True)
class CorpusConfig(tfds.core.BuilderConfig):
  num_images: int = 0
  num_segments: int = 0


class AcpBenchMedia(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Generated items in the media configs' record format: train_images and train_music."""
  VERSION = tfds.core.Version("1.1.0")  # 1.1.0: the media configs' records, without zlib
  BUILDER_CONFIGS = []  # made per size by `build`

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=examples.media_item_features(224),
                                          disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {"train_images": self._generate_examples("image", self.builder_config.num_images),
            "train_music": self._generate_examples("music", self.builder_config.num_segments)}

  def _generate_examples(self, modality: str, num: int):
    rng = np.random.default_rng(0 if modality == "image" else 1)
    time_T = np.arange(round(SEGMENT_SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    for i in range(num):
      cue = int(rng.integers(len(labels.CLASSES)))
      image = modality == "image"
      emotion = [e for e, name in enumerate(labels.EMOTIONS)
                 if labels.EMOTION_TO_CLASS[name] == cue][0] if image else -1
      item_id = (f"{labels.EMOTIONS[emotion]}/{i:06d}.jpg" if image
                 else f"song{i // 10:05d}#{i % 10:03d}")
      tone_T = 0.3 * np.sin(2 * np.pi * 220 * (1 + cue) * time_T) + rng.normal(0, 0.05, time_T.size)
      yield i, {
          "id": item_id, "label": cue, "cue": cue, "emotion": emotion,
          "song_id": "" if image else item_id.split("#")[0],
          "features": rng.normal(size=2048 if image else 193).astype(np.float32),
          "pixels": (rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) if image
                     else np.zeros((0, 224, 3), np.uint8)),
          "waveform": (np.zeros((0,), np.int16) if image
                       else np.round(np.clip(tone_T, -1, 1) * 32767).astype(np.int16))}


def _builder(size: str, num_images: int, data_dir: str) -> tfds.core.DatasetBuilder:
  images = num_images * (4 if size == "large" else 1)
  config = CorpusConfig(name=f"{size}_{images}", num_images=images, num_segments=images // 3)
  return AcpBenchMedia(config=config, data_dir=data_dir, file_format="array_record")


def build(size: str, num_images: int, data_dir: str) -> items.Split:
  """The train split of a generated corpus (built if absent), streamed from its records."""
  builder = _builder(size, num_images, data_dir)
  builder.download_and_prepare()
  images, music = (data.items_of_source(builder.as_data_source(split=split))
                    for split in ("train_images", "train_music"))
  # The benchmark evaluates nothing: two placeholder fixed pairs.
  return items.Split(images, music, items.Pairs(np.zeros(2, np.int32), np.zeros(2, np.int32),
                                                np.array([1, 0], np.int32)))


def _peak_rss_mb(who: int) -> float:
  return resource.getrusage(who).ru_maxrss / 1024


def pipeline(size: str, num_images: int, data_dir: str, dispatches: int, workers: int,
             steps_per_dispatch: int) -> dict:
  """Steps/s and peak RSS of the paper-setting L3-Net input (read, placed, made on device)."""
  config = l3net.get_config()
  config.input.workers = workers
  config.steps_per_dispatch = steps_per_dispatch
  split = build(size, num_images, data_dir)
  feed = feeds.StreamFeed(config, {"train": split}, inputs.make_mesh(config.batch_size),
                          objectives.create_objective(config))
  # Every step's model inputs made on device, one step after the other as in training.
  make_inputs = jax.jit(lambda batches: jax.lax.map(
      jax.vmap(lambda batch: feed.step_inputs(None, batch)[:2]), batches))
  batches = feed.train_data(0, (dispatches + 1) * config.steps_per_dispatch)
  jax.block_until_ready(make_inputs(next(batches)))  # compiles; workers start
  start = time.perf_counter()
  for batch in batches:
    jax.block_until_ready(make_inputs(batch))
  seconds = time.perf_counter() - start
  feed.close()
  return {"images": len(split.images.ids), "segments": len(split.music.ids),
          "steps_per_s": dispatches * config.steps_per_dispatch / seconds,
          "peak_rss_mb": _peak_rss_mb(resource.RUSAGE_SELF),
          "worker_peak_rss_mb": _peak_rss_mb(resource.RUSAGE_CHILDREN)}


def pipeline_in_fresh_process(size: str, num_images: int, data_dir: str, dispatches: int,
                              workers: int, steps_per_dispatch: int) -> dict:
  """`pipeline` in a new interpreter, so that its peak RSS is the input's alone."""
  out = subprocess.run([sys.executable, "-m", "bench.media", "--pipeline", size,
                        "--images", str(num_images), "--data_dir", data_dir,
                        "--dispatches", str(dispatches), "--workers", str(workers),
                        "--steps_per_dispatch", str(steps_per_dispatch)],
                       capture_output=True, text=True,
                       # The caller may hold most of an accelerator already (JAX preallocates).
                       env=dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false"))
  if out.returncode:
    raise RuntimeError(f"bench.media --pipeline {size} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def step_throughput(num_images: int, data_dir: str, dispatches: int, steps_per_dispatch: int,
                    rounds: int = 2, batch_size: int | None = None) -> dict:
  """Training steps/s of the CPU demo's L3-Net on the smaller corpus, streamed and in memory.

  Also the device memory the in-memory path holds for the corpus (its tables' bytes).
  `batch_size`: the config's (64) unless given.
  """
  config = l3net.get_config("synthetic")
  config.steps_per_dispatch = steps_per_dispatch
  config.batch_size = batch_size or config.batch_size
  split = build("small", num_images, data_dir)
  mesh = inputs.make_mesh(config.batch_size)
  model, tx = models.create_model(config), train.make_optimizer(config)
  objective = objectives.create_objective(config)
  both = {"stream": feeds.StreamFeed(config, {"train": split}, mesh, objective),
          "in_memory": feeds.TableFeed(config, {"train": split}, mesh, objective)}
  # Both feeds give the model the same inputs: one init, compiled once.
  assert both["stream"].item_shapes == both["in_memory"].item_shapes
  init = train.make_init(config, model, tx, *both["stream"].item_shapes)
  run = {}
  for name, feed in both.items():
    state, _ = train.create_state(init, mesh)
    chunk = train.make_train_chunk(config, model, tx, feed, objective).lower(
        state, feed.train_spec).compile()
    run[name] = [chunk, state, feed.train_data(0, 10 ** 6), []]
  for _ in range(rounds):  # alternate, so that the machine's load weighs on both alike
    for name, (chunk, state, batches, times) in run.items():
      state, _ = chunk(state, next(batches))  # warm: the stream's buffers refill
      jax.block_until_ready(state)
      start = time.perf_counter()
      for _ in range(dispatches):
        state, metrics = chunk(state, next(batches))
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - start)
      run[name][1] = state
  for feed in both.values():
    feed.close()
  steps = dispatches * config.steps_per_dispatch
  per_s = {name: steps / min(times) for name, (_, _, _, times) in run.items()}
  table_bytes = sum(x.nbytes for x in jax.tree.leaves(both["in_memory"].tables["train"]))
  return {"stream_steps_per_s": per_s["stream"], "in_memory_steps_per_s": per_s["in_memory"],
          "stream_vs_in_memory": per_s["stream"] / per_s["in_memory"],
          "in_memory_table_mb": table_bytes / 2**20}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--images", type=int, default=2000, help="images of the smaller corpus")
  parser.add_argument("--data_dir", default="/tmp/acp_bench_media")
  parser.add_argument("--dispatches", type=int, default=6, help="measured dispatches per run")
  parser.add_argument("--workers", type=int, default=2, help="input worker processes")
  parser.add_argument("--steps_per_dispatch", type=int, default=4,
                      help="steps per dispatch (the configs' 16 and 10 hold more in memory)")
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--pipeline", choices=("small", "large"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.pipeline:  # one corpus, in the fresh process the parent started
    print(json.dumps(pipeline(args.pipeline, args.images, args.data_dir, args.dispatches,
                              args.workers, args.steps_per_dispatch)))
    return
  for size in ("small", "large"):  # built once, before any measurement
    _builder(size, args.images, args.data_dir).download_and_prepare()
  results = {}
  for size in ("small", "large"):
    results[f"pipeline_{size}"] = pipeline_in_fresh_process(
        size, args.images, args.data_dir, args.dispatches, args.workers,
        args.steps_per_dispatch)
    print(f"pipeline_{size}", results[f"pipeline_{size}"], file=sys.stderr, flush=True)
  small, large = results["pipeline_small"], results["pipeline_large"]
  results["large_vs_small"] = {key: large[key] / small[key] for key in
                               ("images", "steps_per_s", "peak_rss_mb", "worker_peak_rss_mb")}
  results["step_small"] = step_throughput(args.images, args.data_dir, args.dispatches,
                                          args.steps_per_dispatch)
  if args.json:
    print(json.dumps(results, indent=2))
    return
  for size in ("small", "large"):
    r = results[f"pipeline_{size}"]
    print(f"L3-Net input, {r['images']} images / {r['segments']} segments: "
          f"{r['steps_per_s']:.2f} steps/s, peak RSS {r['peak_rss_mb']:.0f} MB "
          f"(largest worker {r['worker_peak_rss_mb']:.0f} MB)")
  ratio = results["large_vs_small"]
  print(f"large / small: {ratio['images']:.1f}x the images, {ratio['steps_per_s']:.2f}x the "
        f"steps/s, {ratio['peak_rss_mb']:.2f}x the peak RSS "
        f"({ratio['worker_peak_rss_mb']:.2f}x per worker)")
  step = results["step_small"]
  print(f"demo L3-Net training, smaller corpus: streamed {step['stream_steps_per_s']:.2f} "
        f"steps/s, in memory {step['in_memory_steps_per_s']:.2f} steps/s: "
        f"{step['stream_vs_in_memory']:.2f}x")


if __name__ == "__main__":
  # TFDS locates a builder by its module, which must not be __main__.
  from bench import media  # pylint: disable=import-self
  media.main()
