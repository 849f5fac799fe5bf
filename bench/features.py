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

  python -m bench.features --encoders clip,siglip,clap [--images 64] [--seconds 120]

Frozen encoders instead (their own command: CLIP and SigLIP need Keras's JAX backend):
images/s of `clip.VisionEmbedder` against keras-hub's converter + `predict`, audio-s/s of
`clap.ClapEmbedder` against transformers' extractor + `get_audio_features` one window at
a time, alternated call by call on all cores, each tower built at its real size with
random weights (speeds do not depend on the weights); with the FLOPs per image / per
audio second and the time to embed the full IMAC at the measured speed.
"""

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import tempfile
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


def _alternated(calls: dict, repeats: int) -> dict:
  """Per call name, its wall times over `repeats` rounds after one warm-up round; the
  calls alternate so that other processes' load hits all alike."""
  for call in calls.values():
    call()  # warm-up: compilation
  times = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - start)
  return {name: np.asarray(t) for name, t in times.items()}


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
  times = _alternated(calls, repeats)
  ratios = times["keras_predict"] / times[backend]
  return {"backend": backend, "keras_backend": keras.backend.backend(),
          "images_per_s": float(n / times[backend].min()),
          "keras_images_per_s": float(n / times["keras_predict"].min()),
          "ratio": float(np.median(ratios)),
          "ratio_range": [float(ratios.min()), float(ratios.max())],
          "flax_images_per_s": float(n / times["flax"].min()),
          "flax_ratio": float(np.median(times["keras_predict"] / times["flax"]))}


def vision_throughput(name: str, n: int, repeats: int) -> dict:
  """`clip.VisionEmbedder` against keras-hub's path, real-size tower, random weights.

  One call embeds n 224x224 uint8 images: to host embeddings for the embedder (transfer
  and preprocessing included), converter + `predict` for the reference. FLOPs per image
  are XLA's count for the compiled tower.
  """
  from acp_jax.features import clip  # pylint: disable=g-import-not-at-top  (keras on JAX)
  from bench.build import IMAC_IMAGES  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  images = np.random.default_rng(0).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
  with tempfile.TemporaryDirectory() as weights:
    clip.save_random_weights(name, weights, **clip.REAL_SIZES[name])
    embedder = clip.VisionEmbedder(name, weights, batch_size=n)
    backbone, converter = clip.load_preset(name, weights)
  tower = clip.vision_tower(backbone)
  variables = ([v.value for v in tower.trainable_variables],
               [v.value for v in tower.non_trainable_variables])
  x_1xSxSx3 = jax.ShapeDtypeStruct((1, *tower.input.shape[1:]), np.float32)
  flops = jax.jit(lambda v, x: tower.stateless_call(*v, x)[0]).lower(
      variables, x_1xSxSx3).compile().cost_analysis()["flops"]
  speeds = _ours_against_reference(
      functools.partial(embedder, images),
      lambda: clip.reference_embed(tower, converter, images, n), n, repeats)
  return {"unit": "image", **speeds, "gflop_per_unit": float(flops) / 1e9,
          "dim": embedder.dim, "imac_hours": IMAC_IMAGES / speeds["per_s"] / 3600}


def clap_throughput(seconds: float, repeats: int) -> dict:
  """`clap.ClapEmbedder` against transformers' one-window path, larger_clap_music's
  audio tower with random weights, on one `seconds`-long segment of recorded-like audio.
  FLOPs are torch's count of the audio tower on one window (the extractor's STFT aside).
  """
  from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top  (clap extra)
  from acp_jax.features import clap  # pylint: disable=g-import-not-at-top
  from bench.build import IMAC_AUDIO_S  # pylint: disable=g-import-not-at-top
  segment_1xT = _recorded_like(seconds, clap.SAMPLE_RATE)[None]
  window_1xT = segment_1xT[:, :round(clap.WINDOW_SECONDS * clap.SAMPLE_RATE)]
  with tempfile.TemporaryDirectory() as weights:
    clap.save_random_weights(weights, audio_config=clap.REAL_AUDIO)
    embedder = clap.ClapEmbedder(weights)
    reference = clap.load_reference(weights)
  with flop_counter.FlopCounterMode(display=False) as counter:
    embedder.embed_segments(window_1xT)
  speeds = _ours_against_reference(
      functools.partial(embedder.embed_segments, segment_1xT),
      lambda: clap.reference_embed(*reference, segment_1xT),
      len(clap.windows(segment_1xT)) * clap.WINDOW_SECONDS, repeats)
  return {"unit": "audio second", **speeds,
          "gflop_per_unit": counter.get_total_flops() / clap.WINDOW_SECONDS / 1e9,
          "dim": embedder.dim, "imac_hours": IMAC_AUDIO_S / speeds["per_s"] / 3600}


def _ours_against_reference(ours, reference, amount: float, repeats: int) -> dict:
  """Units per second of both calls (each handles `amount` units; best of `repeats`,
  alternated) and the reference's time over ours (median of the rounds, and range)."""
  times = _alternated({"ours": ours, "reference": reference}, repeats)
  ratios = times["reference"] / times["ours"]
  return {"per_s": float(amount / times["ours"].min()),
          "reference_per_s": float(amount / times["reference"].min()),
          "ratio": float(np.median(ratios)),
          "ratio_range": [float(ratios.min()), float(ratios.max())]}


def _print_encoders(result: dict, args) -> None:
  for name, r in result.items():
    size = f"{args.seconds:.0f} s segment" if name == "clap" else f"batch {args.images}"
    print(f"{name} ({size}): ours {r['per_s']:.2f} {r['unit']}s/s, reference "
          f"{r['reference_per_s']:.2f} {r['unit']}s/s (best of {args.repeats}), ratio "
          f"{r['ratio']:.2f}x (median; {r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}x); "
          f"{r['gflop_per_unit']:.2f} GFLOP per {r['unit']}; full IMAC "
          f"{r['imac_hours']:.1f} h at this speed")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=120.0, help="audio length for music")
  parser.add_argument("--images", type=int, default=64, help="batch of 224x224 images")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--encoders", default="",
                      help="comma-separated clip,siglip,clap: these frozen encoders only")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  args = parser.parse_args()
  if args.encoders:
    # Before anything imports keras: the CLIP/SigLIP towers run on its JAX backend.
    os.environ.setdefault("KERAS_BACKEND", "jax")
    result = {name: clap_throughput(args.seconds, args.repeats) if name == "clap"
              else vision_throughput(name, args.images, args.repeats)
              for name in args.encoders.split(",")}
    if args.json:
      print(json.dumps(result))
    else:
      _print_encoders(result, args)
    return
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
