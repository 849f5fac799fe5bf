"""Training in other processes: killed and resumed, on 4 fake devices, on 2 hosts, via launch.py."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import fakes
from acp_jax import checkpoint
from acp_jax import evaluate
from acp_jax import generated
from acp_jax import train

REPO = pathlib.Path(__file__).resolve().parents[1]
# Wall-clock figures differ between runs; everything else must not.
TIMING_KEYS = ("pairs_per_second", "pairs_per_second_all_seeds", "phases_s")


def _env(**extra) -> dict[str, str]:
  path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
  return {**os.environ, "PYTHONPATH": path, **extra}


def _start(config, workdir: pathlib.Path, **env) -> subprocess.Popen:
  """The fakes driver training `config` in `workdir`, in a new process."""
  workdir.mkdir(parents=True, exist_ok=True)
  config_json = workdir.parent / f"{workdir.name}.json"
  config_json.write_text(config.to_json())
  log = (workdir.parent / f"{workdir.name}.log").open("w")
  return subprocess.Popen([sys.executable, str(REPO / "tests" / "fakes.py"), str(config_json),
                           str(workdir)], cwd=REPO, env=_env(**env), stdout=log,
                          stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, workdir: pathlib.Path) -> None:
  log = workdir.parent / f"{workdir.name}.log"
  assert process.wait(timeout=300) == 0, log.read_text()[-3000:]


def _outcome(workdir: pathlib.Path) -> tuple[dict, list[dict]]:
  """results.json and metrics.jsonl without the wall-clock figures."""
  drop = lambda row: {k: v for k, v in row.items() if k not in TIMING_KEYS}
  rows = [drop(json.loads(line)) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return drop(json.loads((workdir / "results.json").read_text())), rows


def _assert_close(actual, expected, tol: float, where: str = "") -> None:
  """Equal structure and strings; numbers equal to `tol` (relative or absolute)."""
  if isinstance(expected, dict):
    assert sorted(actual) == sorted(expected), where
    for key in expected:
      _assert_close(actual[key], expected[key], tol, f"{where}.{key}")
  elif isinstance(expected, list):
    assert len(actual) == len(expected), where
    for i, (a, e) in enumerate(zip(actual, expected)):
      _assert_close(a, e, tol, f"{where}[{i}]")
  elif isinstance(expected, (int, float)) and not isinstance(expected, bool):
    assert actual == pytest.approx(expected, rel=tol, abs=tol), where
  else:
    assert actual == expected, where


def _assert_same(actual, expected, tol: float) -> None:
  _assert_close(actual[0], expected[0], tol, "results")
  _assert_close(actual[1], expected[1], tol, "metrics")


def _scalars(workdir: pathlib.Path) -> list[tuple[int, str, float]]:
  """Every TensorBoard scalar of a run but the wall-clock ones, as (step, tag, value)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  points = []
  for path in workdir.glob("events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      points += [(event.step, v.tag, float(tf.make_ndarray(v.tensor))) for v in event.summary.value
                 if v.tag not in TIMING_KEYS]
  return sorted(points)


def test_run_killed_at_several_moments_resumes_to_the_same_result(tmp_path):
  # 88 steps, 2 seeds, a checkpoint every 12 steps.
  config = fakes.small_config(num_epochs=4, patience=100, num_seeds=2)
  reference = tmp_path / "reference"
  train.train_and_evaluate(config, str(reference), splits=generated.make_splits())

  workdir = tmp_path / "killed"
  for moment in ("saving:24", "saved:48", "results"):
    process = _start(config, workdir, FAKES_KILL_AT=moment)
    assert process.wait(timeout=300) == -signal.SIGKILL, (
        workdir.parent / f"{workdir.name}.log").read_text()[-3000:]
    assert not (workdir / "results.json").exists()
    if moment == "saving:24":
      # Killed mid-save: the checkpoint of step 24 was left half-written.
      assert list((workdir / "checkpoints").glob("24.orbax-checkpoint-tmp*")), moment
  _finish(_start(config, workdir), workdir)

  _assert_same(_outcome(workdir), _outcome(reference), tol=1e-6)
  scalars, expected_scalars = _scalars(workdir), _scalars(reference)
  assert [point[:2] for point in scalars] == [point[:2] for point in expected_scalars]
  assert [point[2] for point in scalars] == pytest.approx([point[2] for point in expected_scalars],
                                                          rel=1e-6)
  # What probes and retrieval load is what results.json reports, seed by seed.
  results = json.loads((workdir / "results.json").read_text())
  best, expected = checkpoint.load_best(workdir), checkpoint.load_best(reference)
  assert best.step_S.tolist() == [row["best_step"] for row in results["per_seed"]]
  for s, row in enumerate(results["per_seed"]):
    for leaf, want in zip(jax.tree.leaves(best.seed_params(s)),
                          jax.tree.leaves(expected.seed_params(s))):
      np.testing.assert_allclose(leaf, want, rtol=1e-6, atol=1e-7)
  test = evaluate.restore(workdir, splits=generated.make_splits()).pair_metrics("test")
  assert np.asarray(test["accuracy"]).tolist() == pytest.approx(
      [row["test_accuracy"] for row in results["per_seed"]])


@pytest.fixture(scope="module")
def four_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("four_devices") / "run"
  config = fakes.small_config(num_seeds=2)
  _finish(_start(config, workdir, XLA_FLAGS="--xla_force_host_platform_device_count=4"), workdir)
  return config, workdir


def test_four_devices_match_one(tmp_path, four_device_run):
  config, workdir = four_device_run
  train.train_and_evaluate(config, str(tmp_path), splits=generated.make_splits())
  # Sharded reductions add in another order: equal to float tolerance.
  _assert_same(_outcome(workdir), _outcome(tmp_path), tol=1e-4)


def test_two_processes_match_one(tmp_path, four_device_run):
  config, four_device_workdir = four_device_run
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  workdir = tmp_path / "run"
  processes = [_start(config, workdir, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                      JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                      JAX_PROCESS_ID=str(i)) for i in range(2)]
  for process in processes:
    _finish(process, workdir)
  # Two hosts of 2 devices run the program of one host of 4.
  _assert_same(_outcome(workdir), _outcome(four_device_workdir), tol=1e-6)


def _python(code: str, **env) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(**env),
                        capture_output=True, text=True, timeout=120)


def test_batch_not_divisible_by_devices_is_explained():
  result = _python("from acp_jax import inputs; inputs.make_mesh(6)",
                   XLA_FLAGS="--xla_force_host_platform_device_count=4")
  assert "UserError: batch_size 6 is not divisible by the 4 devices" in result.stderr
  assert "--config.batch_size=8" in result.stderr


def _launch(tmp_path, *flags, **env) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "launch.py", f"--workdir={tmp_path / 'run'}", *flags],
                        cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=120)


def test_launch_applies_overrides_and_reports_errors_briefly(tmp_path):
  result = _launch(tmp_path, "--config=configs/acp.py:synthetic", "--config.batch_size=7")
  assert result.returncode != 0
  assert "batch_size must be even (half true, half false pairs), got 7" in result.stderr
  assert "Traceback" not in result.stderr


def test_launch_shows_the_traceback_of_other_errors(tmp_path):
  # Any error but a UserError is a bug: the traceback says where it happened.
  result = _python(
      "import sys, launch\nfrom absl import app\n"
      "def job(config, workdir): raise ValueError('an internal bug')\n"
      "launch.JOBS['train'] = job\n"
      f"sys.argv = ['launch.py', '--config=configs/acp.py', '--workdir={tmp_path}']\n"
      "app.run(launch.main)")
  assert result.returncode != 0
  assert "Traceback" in result.stderr and "ValueError: an internal bug" in result.stderr


def test_launch_without_imac_says_how_to_get_it(tmp_path):
  result = _launch(tmp_path, "--config=configs/acp.py", f"--config.data_dir={tmp_path / 'tfds'}")
  assert result.returncode != 0
  assert "tfds build" in result.stderr and "configs/acp.py:synthetic" in result.stderr
  # Quiet start-up: the message is all there is (no TensorFlow, oneDNN or absl lines).
  assert result.stderr.startswith("error: The dataset 'imac/features' is not prepared"), (
      result.stderr)
