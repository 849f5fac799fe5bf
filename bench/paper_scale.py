r"""The paper's run at IMAC's size, end to end and phase by phase.

  python -m bench.paper_scale [--epochs=N] [--scale=1] [--signal=0.3] [--json]

Runs `configs/acp.py` (the paper setting) unchanged but for the epoch cap, through
`train.train_and_evaluate` as a real run does (compile, training with validation and
early stopping, test metrics, retrieval, figures, report), on features generated at
IMAC's sizes (acp_jax/generated.py: 85,007 images and ~15k music segments, 70:10:20,
fixed pairs one per item by the builder's rule) with a class signal a model can learn
(`--signal`, against unit noise; `--label_noise` of the labels redrawn, which sets the
oracle). `--scale` multiplies every size; `--objective=supcon` trains configs/
contrastive.py's supcon instead, `--class_loss_weight=1` configs/acp.py:class_loss.

Prints a table and writes one JSON object (`--json`: to stdout alone) with the seconds
of each phase (`phases_s`: data, compile, train, then each evaluator and the report),
steps, pairs/s, peak host RSS, peak device memory where the backend reports it, and
test accuracy and AUC against the oracle. An all-pairs retrieval grows with the product
of the two sides: its phase grows ~16x at 4x the size where training grows 4x.
"""

import contextlib
import json
import platform
import resource
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax

from acp_jax import generated
from acp_jax import train
from configs import acp
from configs import contrastive

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags (not defined on import: bench.device imports this module)."""
  flags.DEFINE_integer("epochs", 1, "Epoch cap (the paper's is 50).")
  flags.DEFINE_float("scale", 1.0, "Multiplies IMAC's split sizes.")
  flags.DEFINE_float("signal", 0.3, "Std of the class means per feature, against unit noise.")
  flags.DEFINE_float("label_noise", 0.3, "Fraction of labels redrawn uniformly.")
  flags.DEFINE_enum("objective", "correspondence", ["correspondence", "supcon"],
                    "configs/acp.py's, or configs/contrastive.py's supcon.")
  flags.DEFINE_float("class_loss_weight", 0.0,
                     "The towers' class loss (configs/acp.py:class_loss has 1; the paper 0).")
  flags.DEFINE_bool("json", False, "Print the JSON object alone.")


def cpu_name() -> str:
  """The CPU model and core count, as lscpu names it (for the figures' machine)."""
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return f"{names[0]} x {len(names)}"
  except (OSError, IndexError):
    return platform.processor() or "unknown"


def peak_device_gb() -> float | None:
  """Peak memory of the first device since the process started, where the backend says."""
  stats = jax.local_devices()[0].memory_stats()
  return stats["peak_bytes_in_use"] / 1e9 if stats and "peak_bytes_in_use" in stats else None


def run(workdir: str, *, epochs: int, scale: float, signal: float, label_noise: float,
        objective: str = "correspondence", class_loss_weight: float = 0.0,
        seed: int = 0) -> dict:
  """One run; returns the benchmark's JSON object."""
  start = time.perf_counter()
  splits = generated.make_splits(seed, signal=signal, label_noise=label_noise,
                                 sizes=generated.imac_sizes(scale), imac_pairs=True)
  generate_seconds = time.perf_counter() - start
  config = (acp.get_config() if objective == "correspondence"
            else contrastive.get_config("supcon"))
  config.dataset = "generated"
  config.num_epochs = epochs
  if class_loss_weight:
    config.class_loss_weight = class_loss_weight
  results = train.train_and_evaluate(config, workdir, splits=splits)
  train_s = results["phases_s"]["train"]
  end_of_run = {k: v for k, v in results["phases_s"].items()
                if k not in ("data", "compile", "train")}
  return {
      "machine": cpu_name(), "device": str(jax.devices()[0].device_kind),
      "num_devices": jax.device_count(), "objective": objective,
      "class_loss_weight": config.class_loss_weight, "epochs": epochs,
      "scale": scale, "signal": signal, "label_noise": label_noise,
      "images": {name: len(s.images.ids) for name, s in splits.items()},
      "music": {name: len(s.music.ids) for name, s in splits.items()},
      "test_pairs": results["test_pairs"], "generate_s": generate_seconds,
      "phases_s": results["phases_s"], "end_of_run_s": sum(end_of_run.values()),
      "end_of_run_over_train": sum(end_of_run.values()) / train_s,
      "steps": results["steps"], "best_step": results["best_step"],
      "pairs_per_second": results["pairs_per_second"],
      "steps_per_second": results["pairs_per_second"] / config.batch_size,
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
      "peak_device_gb": peak_device_gb(),
      "test_accuracy": results["test_accuracy"], "test_auc": results["test_auc"],
      "oracle_accuracy": results["oracle_accuracy"]}


def table(report: dict) -> str:
  lines = [f"{report['machine']}; {report['num_devices']} x {report['device']}; "
           f"{report['objective']}, {report['epochs']} epoch(s) at {report['scale']}x IMAC "
           f"({sum(report['images'].values())} images, {sum(report['music'].values())} "
           f"segments, {report['test_pairs']} test pairs), signal {report['signal']}",
           f"{'phase':<12} {'seconds':>9}", f"{'generate':<12} {report['generate_s']:>9.1f}"]
  lines += [f"{phase:<12} {seconds:>9.1f}" for phase, seconds in report["phases_s"].items()]
  lines += [f"end of run: {report['end_of_run_s']:.1f} s = "
            f"{report['end_of_run_over_train']:.2f} x the training phase",
            f"steps {report['steps']} (best {report['best_step']}), "
            f"{report['steps_per_second']:.1f} steps/s, {report['pairs_per_second']:.0f} pairs/s",
            f"peak RSS {report['peak_rss_gb']:.2f} GB, peak device memory "
            + (f"{report['peak_device_gb']:.2f} GB" if report["peak_device_gb"] is not None
               else "not reported by this backend"),
            f"test accuracy {report['test_accuracy']:.3f}, AUC {report['test_auc']:.3f}, "
            f"oracle {report['oracle_accuracy']:.3f}"]
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # orbax logs every save at INFO, as launch.py says
  # With --json, stdout holds the JSON alone: the run's own lines go to stderr.
  quiet = contextlib.redirect_stdout(sys.stderr) if FLAGS.json else contextlib.nullcontext()
  with tempfile.TemporaryDirectory() as workdir, quiet:
    report = run(workdir, epochs=FLAGS.epochs, scale=FLAGS.scale,
                 signal=FLAGS.signal, label_noise=FLAGS.label_noise, objective=FLAGS.objective,
                 class_loss_weight=FLAGS.class_loss_weight)
  if FLAGS.json:
    print(json.dumps(report))
  else:
    print(table(report))
    print(json.dumps(report))


if __name__ == "__main__":
  define_flags()
  app.run(main)
