r"""Runs the job a config names: python launch.py --config=configs/acp.py --workdir=DIR.

Jobs (`config.job`, default `train`), each a function (config, workdir) in acp_jax:
  train     train, then evaluate the best params (configs/acp.py, ...); re-running the
            same command resumes from the latest checkpoint in DIR
  evaluate  evaluate a trained run's best checkpoint again (configs/evaluate.py, and
            configs/probe.py with the Table 5 probes)
  retrieve  rank a dataset's items against an audio or image file (configs/retrieve.py)
  compare   train a grid of runs on several features configs of the same pairs, and
            report them side by side (configs/compare.py)

Multi-process (multi-host) runs need no code change: on a managed cluster (SLURM,
Open MPI, Cloud TPU, ...) JAX finds its peers itself; elsewhere set
JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID for every process.
"""

import os
import sys

# Quiet start-up: TensorFlow (loaded by TFDS, and by the image embedder on CPU) prints
# CPU-feature and oneDNN notices from C++ as it loads, before any flag is parsed, the
# oneDNN one whatever the log level: it loads here with stderr closed. oneDNN stays on:
# the embedder runs on its kernels, and a build from here must equal one by `tfds build`.
# --verbosity brings the notices back.
if not any(arg.startswith(("--verbosity", "-v=")) for arg in sys.argv):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  _stderr, _devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(_devnull, 2)
  try:
    import tensorflow  # noqa: F401
  finally:
    os.dup2(_stderr, 2)
    os.close(_stderr)
    os.close(_devnull)

from absl import app  # noqa: E402  (after quieting TensorFlow)
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from acp_jax import UserError  # noqa: E402
from acp_jax import compare  # noqa: E402
from acp_jax import evaluate  # noqa: E402
from acp_jax import query  # noqa: E402
from acp_jax import train  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
config_flags.DEFINE_config_file("config", None, "Job configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

JOBS = {"train": train.train_and_evaluate, "evaluate": evaluate.run, "retrieve": query.run,
        "compare": compare.run}

# Set by the schedulers JAX detects on its own, when they run more than one process.
_CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def maybe_initialize_distributed() -> None:
  """Joins a multi-process run if the environment describes one; else does nothing."""
  if "JAX_COORDINATOR_ADDRESS" in os.environ:
    number = lambda name: int(os.environ[name]) if name in os.environ else None
    jax.distributed.initialize(num_processes=number("JAX_NUM_PROCESSES"),
                               process_id=number("JAX_PROCESS_ID"))
  elif any(int(os.environ.get(name, "1")) > 1 for name in _CLUSTER_SIZE_VARIABLES):
    jax.distributed.initialize()


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    # Orbax logs each checkpoint save in a dozen INFO lines, TFDS warns about folders
    # it will create; the progress bars and the closing summary are what a run shows.
    # --verbosity=0 brings INFO back.
    logging.set_verbosity(logging.ERROR)
  # TensorFlow only reads the dataset (TFDS): keep it off the accelerators JAX uses.
  # Imported here so that importing this module (tests do) does not load TensorFlow.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.experimental.set_visible_devices([], "GPU")
  maybe_initialize_distributed()
  logging.info("JAX process %d of %d, local devices %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  job = FLAGS.config.get("job", "train")
  if job not in JOBS:
    raise app.UsageError(f"unknown config.job {job!r}; known: {sorted(JOBS)}")
  try:
    JOBS[job](FLAGS.config, FLAGS.workdir)
  except UserError as e:
    # The message says how to fix it; a traceback would bury it. Any other error is a
    # bug, and its traceback shows where.
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
