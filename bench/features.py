"""Feature extraction throughput against the straightforward references, in one run.

  python -m bench.features [--seconds 120] [--images 64] [--json]

Music: audio-seconds per CPU-second of `music.descriptor` (modes "exact" and "fast")
against the literal per-window librosa recipe (`music.reference_descriptor`) on the
paper's 60 s / 10 s / 5 s setting, on recorded-like audio, on one pinned core (CPU
affinity plus threadpoolctl) and in CPU seconds, so the figures are per core even on a
loaded machine.
Images: images/s of `inception.ImageEmbedder` (its default backend, and the Flax one)
against `keras.applications`' InceptionV3 `predict` (TensorFlow backend), alternated call
by call at the builder's batch size.
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import time

import numpy as np
import threadpoolctl

from acp_jax.features import inception
from acp_jax.features import music


def _best_time(fn, repeats: int, clock=time.perf_counter) -> float:
  fn()  # warm-up: numba / XLA compilation
  times = []
  for _ in range(repeats):
    start = clock()
    fn()
    times.append(clock() - start)
  return min(times)


def _recorded_like(seconds: float, sr: int) -> np.ndarray:
  """Float32 mono: detuned chords with harmonics, clicks, noise bursts, a silent gap."""
  rng = np.random.default_rng(0)
  t_T = np.arange(int(seconds * sr)) / sr
  detune = 2 ** (16 / 1200)  # 16 cents sharp of A440, near a CQT tuning-bin edge
  roots_T = 220.0 * detune * 2 ** (np.array([0, 5, 7, 3])[(t_T // 2.5).astype(int) % 4] / 12)
  y_T = sum(0.3 / h * np.sin(2 * np.pi * h * ratio * roots_T * t_T)
            for ratio in (1, 1.26, 1.5) for h in range(1, 5))
  since_beat_T = t_T % 0.5
  y_T += np.exp(-since_beat_T / 0.01) * rng.standard_normal(t_T.size)  # clicks and bursts
  y_T *= (t_T % 20) > 3  # three silent seconds every twenty
  return (0.5 * y_T / np.abs(y_T).max()).astype(np.float32)


@contextlib.contextmanager
def _one_core():
  """Runs the body on one CPU core (affinity) with every BLAS/OpenMP pool at 1 thread."""
  cores = os.sched_getaffinity(0)
  os.sched_setaffinity(0, {min(cores)})
  try:
    with threadpoolctl.threadpool_limits(1):
      yield
  finally:
    os.sched_setaffinity(0, cores)


def music_throughput(seconds: float, repeats: int) -> dict:
  """Audio-seconds per CPU-second of each descriptor mode and of the literal recipe.

  One pinned core, timed by its process CPU time: other users' load on the machine
  then does not count, so the figures stay per core on a shared machine.
  """
  exact = music.DescriptorConfig()
  fast = dataclasses.replace(exact, mode="fast")
  segments = music.segment(_recorded_like(seconds, exact.sample_rate), exact)
  audio_s = len(segments) * exact.segment_seconds

  def cpu_seconds(describe, cfg):
    return _best_time(lambda: [describe(s, cfg) for s in segments], repeats,
                      clock=time.process_time)
  with _one_core():
    exact_s = cpu_seconds(music.descriptor, exact)
    fast_s = cpu_seconds(music.descriptor, fast)
    ref_s = cpu_seconds(music.reference_descriptor, exact)
  return {"exact_audio_s_per_s": audio_s / exact_s, "fast_audio_s_per_s": audio_s / fast_s,
          "librosa_reference_audio_s_per_s": audio_s / ref_s,
          "exact_ratio": ref_s / exact_s, "fast_ratio": ref_s / fast_s}


def image_throughput(n: int, repeats: int) -> dict:
  """The embedder against Keras' InceptionV3 on n random 224x224 images, alternated.

  Each time is one call on the whole batch (the builder embeds 64 at a time) after a
  warm-up call, so compilation is excluded: uint8 pixels to host features for the
  embedder (transfer and scaling included), pre-scaled float32 to features for Keras'
  predict. The embedder runs with its default backend (Keras' model on TensorFlow on
  CPU, see `inception.default_backend`) and, for the record, with the Flax one.
  Alternating the calls lets the load from other processes hit all alike; a ratio is
  the median of the per-round ratios. Keras runs on its configured backend, returned
  (TensorFlow by default; bench.device picks JAX on accelerators, where this install's
  TensorFlow, tensorflow-cpu, cannot go).
  """
  import keras  # pylint: disable=g-import-not-at-top  (heavy; only this half needs it)
  images = np.random.default_rng(0).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
  variables = inception.random_variables(0)
  backend = inception.default_backend()
  embedders = {name: inception.ImageEmbedder(variables, batch_size=n, backend=name)
               for name in dict.fromkeys((backend, "flax"))}
  model = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                         input_shape=(224, 224, 3))
  x = images.astype(np.float32) / 127.5 - 1
  calls = {name: functools.partial(embedder, images) for name, embedder in embedders.items()}
  calls["keras_predict"] = lambda: model.predict(x, batch_size=n, verbose=0)
  times = {name: [] for name in calls}
  for call in calls.values():
    call()  # warm-up: XLA / TensorFlow compilation
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - start)
  times = {name: np.asarray(t) for name, t in times.items()}
  ratios = times["keras_predict"] / times[backend]
  return {"backend": backend, "keras_backend": keras.backend.backend(),
          "images_per_s": float(n / times[backend].min()),
          "keras_images_per_s": float(n / times["keras_predict"].min()),
          "ratio": float(np.median(ratios)),
          "ratio_range": [float(ratios.min()), float(ratios.max())],
          "flax_images_per_s": float(n / times["flax"].min()),
          "flax_ratio": float(np.median(times["keras_predict"] / times["flax"]))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=120.0, help="audio length for music")
  parser.add_argument("--images", type=int, default=64, help="batch of 224x224 images")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  args = parser.parse_args()
  result = {"music": music_throughput(args.seconds, args.repeats),
            "inception": image_throughput(args.images, args.repeats)}
  if args.json:
    print(json.dumps(result))
    return
  m, i = result["music"], result["inception"]
  print(f"music descriptor, one core: exact {m['exact_audio_s_per_s']:.1f} audio-s/s "
        f"({m['exact_ratio']:.2f}x), fast {m['fast_audio_s_per_s']:.1f} audio-s/s "
        f"({m['fast_ratio']:.2f}x), literal librosa "
        f"{m['librosa_reference_audio_s_per_s']:.1f} audio-s/s")
  print(f"inception (batch {args.images}): embedder ({i['backend']}) "
        f"{i['images_per_s']:.1f} images/s, keras predict {i['keras_images_per_s']:.1f} "
        f"images/s (best of {args.repeats}), ratio {i['ratio']:.2f}x (median; "
        f"{i['ratio_range'][0]:.2f}-{i['ratio_range'][1]:.2f}x); flax backend "
        f"{i['flax_images_per_s']:.1f} images/s ({i['flax_ratio']:.2f}x)")


if __name__ == "__main__":
  main()
