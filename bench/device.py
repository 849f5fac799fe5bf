r"""Every accelerator figure the README lacks, in one command.

  python -m bench.device --out=DIR [--smoke] [--budgets=train=120,...] [--parts=train,...]

Runs the benchmarks one after the other in this process, each part at the sizes of
`SIZES` (`--smoke`: `SMOKE_SIZES`, toy sizes that check the machinery on a CPU):
  * train: bench/train.py at batch 256 and 4096: pairs/s, the step's fraction of the
    matmul peak measured in the same run, the speedup over the straightforward loop;
  * features: bench/features.py: Inception-V3 images/s of the embedder against Keras'
    `predict` on the same device (on accelerators Keras runs on JAX: this install's
    TensorFlow is CPU-only), and the music descriptor's audio-s/s on one host core
    against the literal librosa recipe;
  * l3net_streamed: bench/media.py: the CPU demo's L3-Net trained streamed against in
    memory on one generated corpus (steps/s, the in-memory tables' device memory), and
    the paper-setting input streamed in a fresh process (steps/s, peak host memory);
  * paper_scale: bench/paper_scale.py at IMAC's size for 2 epochs, its phases and peak
    memories, and the paper's 50 epochs extrapolated: the training phase per epoch x 50
    plus the end-of-run phases once. It runs first, so that the peak memories, which
    are the process's since it started, are its own;
  * build: bench/build.py's stage costs on a generated IMAC-format corpus and the full
    IMAC build they extrapolate to, per core and on all of this machine's cores.
A part starts only while the run's budget (the sum of the parts') still holds the part's
own; one that does not, that raises or that is not in `--parts` is recorded as
{"skipped": reason} and the others go on. Writes DIR/device.json and DIR/device.md (one
row per figure); exits non-zero when the JSON fails `check_schema`.
"""

import importlib.metadata
import json
import math
import numbers
import os
import platform
import sys
import tempfile
import time
import traceback

from absl import app
from absl import flags
import jax

FLAGS = flags.FLAGS

PARTS = ("train", "features", "l3net_streamed", "paper_scale", "build")  # the JSON's order
# Per part, in the order they run: the budget in seconds and the part's keyword arguments.
# The budgets add up to 7.5 minutes, sized for one H100-class GPU.
SIZES = {
    "paper_scale": (150, dict(epochs=2, scale=1.0)),
    "train": (90, dict(batch_sizes=[256, 4096], rounds=3, round_seconds=1.0,
                       peak_sizes=[1024, 2048, 4096], steps_per_dispatch=None)),
    "features": (75, dict(images=64, repeats=3, music_seconds=60.0, music_repeats=1)),
    "l3net_streamed": (90, dict(images=1000, dispatches=6, steps_per_dispatch=4, workers=2,
                                batch_size=None)),
    "build": (45, dict(images=None, songs=2, song_seconds=(180.0, 300.0))),
}
# Toy sizes: every code path at least once. The budgets leave room for a loaded machine.
SMOKE_SIZES = {
    "paper_scale": (60, dict(epochs=1, scale=0.01)),
    "train": (60, dict(batch_sizes=[16], rounds=1, round_seconds=0.01, peak_sizes=[128],
                       steps_per_dispatch=1)),
    "features": (60, dict(images=1, repeats=1, music_seconds=0.0, music_repeats=1)),
    "l3net_streamed": (90, dict(images=12, dispatches=1, steps_per_dispatch=1, workers=0,
                                batch_size=4)),
    "build": (60, dict(images=1, songs=1, song_seconds=(62.0, 62.0))),  # one 60 s segment
}
VERSIONS = ("jax", "jaxlib", "flax", "optax", "tensorflow", "keras")
HEADER = ("device", "num_devices", "machine")  # the report's keys that parts report too


def define_flags() -> None:
  """The command line's flags (defined when run, as the other benches do)."""
  flags.DEFINE_string("out", None, "Directory for device.json and device.md.", required=True)
  flags.DEFINE_bool("smoke", False, "Toy sizes on CPU: checks the command, not the device.")
  flags.DEFINE_list("budgets", [], "Overrides of part budgets in seconds, e.g. train=120.")
  flags.DEFINE_list("parts", list(PARTS), "The parts to run; the others are skipped.")


def run_train(work: str, **kwargs) -> dict:
  """bench/train.py's report: the matmul peak and, per batch size, both loops against it."""
  del work
  from bench import train  # pylint: disable=g-import-not-at-top  (after KERAS_BACKEND, see main)
  return train.run(**kwargs)


def run_features(work: str, *, images: int, repeats: int, music_seconds: float,
                 music_repeats: int) -> dict:
  """bench/features.py: Inception-V3 on the device against Keras; music if `music_seconds`."""
  del work
  from bench import features  # pylint: disable=g-import-not-at-top
  result = {"inception": features.image_throughput(images, repeats)}
  if music_seconds:
    result["music"] = features.music_throughput(music_seconds, music_repeats)
  return result


def run_l3net_streamed(work: str, *, images: int, dispatches: int, steps_per_dispatch: int,
                       workers: int, batch_size: int | None) -> dict:
  """bench/media.py: training steps streamed and in memory; the streamed input's memory."""
  from bench import media  # pylint: disable=g-import-not-at-top
  data_dir = os.path.join(work, "media")
  return {"step": media.step_throughput(images, data_dir, dispatches, steps_per_dispatch,
                                        batch_size=batch_size),
          "pipeline": media.pipeline_in_fresh_process("small", images, data_dir, dispatches,
                                                      workers, steps_per_dispatch)}


def run_paper_scale(work: str, *, epochs: int, scale: float) -> dict:
  """bench/paper_scale.py's report, and the paper's 50 epochs extrapolated from it."""
  from bench import paper_scale  # pylint: disable=g-import-not-at-top
  report = paper_scale.run(os.path.join(work, "paper_scale"), epochs=epochs, scale=scale,
                           signal=0.3, label_noise=0.3)
  report["epochs_50_s"] = report["phases_s"]["train"] / epochs * 50 + report["end_of_run_s"]
  return report


def run_build(work: str, *, images: int | None, songs: int,
              song_seconds: tuple[float, float]) -> dict:
  """bench/build.py's stage costs on a generated corpus, and the full IMAC from them.

  `images`: IMAC's ratio to the songs' audio unless given.
  """
  from etils import epath  # pylint: disable=g-import-not-at-top
  from bench import build  # pylint: disable=g-import-not-at-top
  corpus = epath.Path(work) / "build"
  images = images or build.imac_images(songs)
  audio_s = build.write_corpus(corpus, images, songs, song_seconds=song_seconds)
  stages = build.stage_costs(corpus)
  core_h = build.full_imac_core_h_stages(stages)
  return {"images": images, "audio_s": audio_s, **stages, "full_imac_core_h_stages": core_h,
          "cores": os.cpu_count(), "full_imac_h_stages_all_cores": core_h / os.cpu_count()}


RUNS = {"train": run_train, "features": run_features, "l3net_streamed": run_l3net_streamed,
        "paper_scale": run_paper_scale, "build": run_build}


def _leaves(tree: dict, prefix: str = "") -> dict:
  """The leaves of a nested dict, keyed by their path ("a.b")."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def run_parts(sizes: dict, selected: list[str], work: str) -> dict:
  """Each selected part in turn, within the run's budget; one that fails is skipped, with why."""
  total_s = sum(budget for name, (budget, _) in sizes.items() if name in selected)
  start, parts = time.perf_counter(), {}
  for name, (budget, kwargs) in sizes.items():
    part = {"budget_s": budget, "settings": kwargs}
    left = round(total_s - (time.perf_counter() - start))  # whole seconds, as the budgets
    part_start = time.perf_counter()
    if name not in selected:
      part["skipped"] = "not in --parts"
    elif left < budget:
      part["skipped"] = f"budget: {left} s of the run's {total_s} s left, {budget} s needed"
    else:
      print(f"bench.device: {name} ({budget} s budget)", file=sys.stderr, flush=True)
      try:
        result = RUNS[name](work, **kwargs)
        for key in HEADER:  # the run's, in the report's header
          result.pop(key, None)
        leaves = _leaves(result)
        part["figures"] = {key: float(value) for key, value in leaves.items()  # numpy's too
                           if isinstance(value, numbers.Real) and not isinstance(value, bool)}
        part["notes"] = {key: value for key, value in leaves.items() if isinstance(value, str)}
      except Exception as e:  # pylint: disable=broad-except  (the other parts go on)
        traceback.print_exc()
        part["skipped"] = f"raised {type(e).__name__}: {e}"[:2000]
    part["wall_s"] = time.perf_counter() - part_start
    parts[name] = part
  return {name: parts[name] for name in PARTS}


def _version(package: str) -> str:
  """The installed version of `package` (or of its CPU-only wheel)."""
  for name in (package, f"{package}-cpu"):  # tensorflow-cpu is the pinned TensorFlow
    try:
      return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return "not installed"


def check_schema(report: dict) -> list[str]:
  """What is wrong with a device.json object: [] if nothing."""
  problems = [f"missing top-level key {key!r}" for key in (*HEADER, "versions", "parts")
              if key not in report]
  parts = report.get("parts", {})
  if set(parts) != set(PARTS):
    problems.append(f"parts are {sorted(parts)}, not {sorted(PARTS)}")
  for name, part in parts.items():
    skipped, figures = part.get("skipped"), part.get("figures")
    if (skipped is None) == (figures is None):
      problems.append(f"{name}: needs exactly one of figures and a skipped reason")
    elif skipped is not None and not (isinstance(skipped, str) and skipped):
      problems.append(f"{name}: skipped is not a reason: {skipped!r}")
    elif figures is not None and not (isinstance(figures, dict) and figures and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in figures.values())):
      problems.append(f"{name}: figures are not a non-empty dict of finite numbers")
    for key in ("budget_s", "wall_s"):
      if not isinstance(part.get(key), (int, float)):
        problems.append(f"{name}: {key} is not a number")
  return problems


def markdown(report: dict) -> str:
  """device.md: the machine, then one row per figure with the device as its column."""
  column = f"{report['num_devices']} x {report['device']} ({report['platform']})"
  lines = [f"# bench.device{' --smoke' if report['smoke'] else ''}", "",
           f"Host CPU: {report['machine']}. Versions: "
           + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", "",
           f"| part | figure | {column} |", "|---|---|---|"]
  for name, part in report["parts"].items():
    lines.append(f"| {name} | wall s (budget {part['budget_s']} s) | {part['wall_s']:.1f} |")
    if "skipped" in part:
      lines.append(f"| {name} | skipped | {part['skipped'].splitlines()[0]} |")
      continue
    lines += [f"| {name} | {key} | {value:.4g} |" for key, value in part["figures"].items()]
    lines += [f"| {name} | {key} | {value} |" for key, value in part["notes"].items()]
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  del argv
  # Keras beside the Flax embedder on the same device: on accelerators Keras must run on
  # JAX (TensorFlow here is CPU-only). Set before the benches import TensorFlow, which
  # imports Keras: they are imported in the parts.
  os.environ.setdefault("KERAS_BACKEND", "tensorflow" if jax.default_backend() == "cpu"
                        else "jax")
  from bench import paper_scale  # pylint: disable=g-import-not-at-top
  sizes = dict(SMOKE_SIZES if FLAGS.smoke else SIZES)
  budgets = dict(override.split("=") for override in FLAGS.budgets)
  if unknown := (set(FLAGS.parts) | set(budgets)) - set(PARTS):
    raise app.UsageError(f"unknown parts {sorted(unknown)}; the parts are {PARTS}")
  for name, seconds in budgets.items():
    sizes[name] = (float(seconds), sizes[name][1])
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as work:
    parts = run_parts(sizes, FLAGS.parts, work)
  report = {"device": str(jax.devices()[0].device_kind), "platform": jax.devices()[0].platform,
            "num_devices": jax.device_count(),
            "versions": {"python": platform.python_version(),
                         **{package: _version(package) for package in VERSIONS}},
            "machine": paper_scale.cpu_name(), "smoke": FLAGS.smoke,
            "wall_s": time.perf_counter() - start, "parts": parts}
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "device.json"), "w") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(FLAGS.out, "device.md"), "w") as f:
    f.write(markdown(report))
  print(markdown(report))
  if problems := check_schema(report):
    sys.exit("device.json fails the schema check:\n" + "\n".join(problems))


if __name__ == "__main__":
  define_flags()
  app.run(main)
