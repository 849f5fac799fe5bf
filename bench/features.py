"""Feature extraction throughput against the straightforward references, in one run.

  python -m bench.features [--seconds 120] [--images 64] [--json]

Music: audio-seconds/s of `music.descriptor` against the literal per-window librosa
recipe (`music.reference_descriptor`) on the paper's 60 s / 10 s / 5 s setting.
Images: images/s of `inception.ImageEmbedder` against `keras.applications`' InceptionV3
(TensorFlow backend), alternated call by call at the builder's batch size.
"""

import argparse
import json
import time

import numpy as np

from acp_jax.features import inception
from acp_jax.features import music


def _best_time(fn, repeats: int) -> float:
  fn()  # warm-up: numba / XLA compilation
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def _music(seconds: float, repeats: int) -> dict:
  cfg = music.DescriptorConfig()
  rng = np.random.default_rng(0)
  t_T = np.arange(int(seconds * cfg.sample_rate)) / cfg.sample_rate
  chord = sum(np.sin(2 * np.pi * f * t_T) for f in (220.0, 277.2, 329.6))
  y_T = (0.2 * chord * (1 + np.sin(2 * np.pi * 2 * t_T)) + 0.01 * rng.standard_normal(t_T.size))
  segments = music.segment(y_T.astype(np.float32), cfg)
  audio_s = len(segments) * cfg.segment_seconds
  fast = _best_time(lambda: [music.descriptor(s, cfg) for s in segments], repeats)
  ref = _best_time(lambda: [music.reference_descriptor(s, cfg) for s in segments], repeats)
  return {"descriptor_audio_s_per_s": audio_s / fast,
          "librosa_reference_audio_s_per_s": audio_s / ref, "ratio": ref / fast}


def _images(n: int, repeats: int) -> dict:
  """The Flax embedder against Keras' InceptionV3 on n random 224x224 images, alternated.

  Each time is one call on the whole batch (the builder embeds 64 at a time) after a
  warm-up call, so compilation is excluded: uint8 pixels to host features for the
  embedder (transfer and scaling included), pre-scaled float32 to features for Keras'
  predict. Alternating the two lets the load from other processes hit both alike; the
  ratio is the median of the per-pair ratios.
  """
  import keras  # pylint: disable=g-import-not-at-top  (heavy; only this half needs it)
  images = np.random.default_rng(0).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
  embedder = inception.ImageEmbedder(inception.random_variables(0), batch_size=n)
  model = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                         input_shape=(224, 224, 3))
  x = images.astype(np.float32) / 127.5 - 1
  calls = {"flax": lambda: embedder(images),
           "keras": lambda: model.predict(x, batch_size=n, verbose=0)}
  times = {name: [] for name in calls}
  for name, call in calls.items():
    call()  # warm-up: XLA / TensorFlow compilation
  for _ in range(repeats):
    for name, call in calls.items():
      start = time.perf_counter()
      call()
      times[name].append(time.perf_counter() - start)
  ratios = np.asarray(times["keras"]) / np.asarray(times["flax"])
  return {"flax_images_per_s": n / min(times["flax"]),
          "keras_images_per_s": n / min(times["keras"]),
          "ratio": float(np.median(ratios)),
          "ratio_range": [float(ratios.min()), float(ratios.max())]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=120.0, help="audio length for music")
  parser.add_argument("--images", type=int, default=64, help="batch of 224x224 images")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  args = parser.parse_args()
  result = {"music": _music(args.seconds, args.repeats), "inception": _images(args.images, args.repeats)}
  if args.json:
    print(json.dumps(result))
    return
  m, i = result["music"], result["inception"]
  print(f"music descriptor: {m['descriptor_audio_s_per_s']:.1f} audio-s/s, literal librosa "
        f"{m['librosa_reference_audio_s_per_s']:.1f} audio-s/s, ratio {m['ratio']:.2f}x")
  print(f"inception (batch {args.images}): flax {i['flax_images_per_s']:.1f} images/s, "
        f"keras {i['keras_images_per_s']:.1f} images/s (best of {args.repeats}), ratio "
        f"{i['ratio']:.2f}x (median; {i['ratio_range'][0]:.2f}-{i['ratio_range'][1]:.2f}x)")


if __name__ == "__main__":
  main()
