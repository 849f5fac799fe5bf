"""The training loop's metrics: `<workdir>/metrics.jsonl` and TensorBoard (clu).

`MetricsLog` writes the rows; `TrainMetrics` holds the per-step train metrics still on
device and pulls them to the host in batches, checking every step's loss.
"""

import json
import math
import time

from clu import metric_writers
from etils import epath
import jax
import ml_collections
import numpy as np
import tqdm

from acp_jax import UserError


class MetricsLog:
  """`<workdir>/metrics.jsonl` plus TensorBoard (clu), written by process 0 only.

  On a resume the rows past the restored step are dropped (they are about to be
  recomputed; a half-written last line of a run killed mid-write goes with them),
  and TensorBoard's event files are rewritten from the rows kept: both then hold
  exactly the rows of an uninterrupted run, no point twice.
  """

  def __init__(self, workdir: epath.Path, resume_step: int):
    self.active = jax.process_index() == 0
    self.path = workdir / "metrics.jsonl"
    kept = []
    if self.active:
      for line in self.path.read_text().splitlines() if self.path.exists() else ():
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        if row.get("step", math.inf) <= resume_step:
          kept.append(row)
      self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))
      for events in workdir.glob("events.out.tfevents.*"):
        events.unlink()
    self.writer = metric_writers.create_default_writer(workdir, just_logging=not self.active)
    for row in kept:
      self.writer.write_scalars(row["step"], {k: v for k, v in row.items() if k != "step"})

  def write(self, step: int, scalars: dict[str, float]) -> None:
    self.writer.write_scalars(step, scalars)
    if self.active:
      with self.path.open("a") as f:
        f.write(json.dumps({"step": step, **scalars}) + "\n")

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()


class TrainMetrics:
  """Per-step train metrics still on device, pulled to the host in batches.

  Pulling checks every step's loss (UserError on NaN/Inf) and writes one
  row per log point: mean loss and accuracy since the last row, and pairs/s of one
  model (one seed). The metrics since the last row (`window`) are saved with each
  checkpoint, so a resumed run's rows are an uninterrupted run's.
  """

  def __init__(self, config: ml_collections.ConfigDict, log: MetricsLog, progress: tqdm.tqdm,
               step: int, where: str, *, steps_per_dispatch: int, log_every: int,
               num_steps: int, window: dict | None = None):
    self.config, self.log, self.progress = config, log, progress
    self.steps_per_dispatch, self.log_every = steps_per_dispatch, log_every
    self.num_steps = num_steps  # a row is written at the last step too
    self.where = where  # names the last good checkpoint in errors
    self.pending = []  # (end step, device metrics) of dispatches not pulled yet
    self.since_log = [{k: np.asarray(v, np.float32) for k, v in metrics.items()}
                      for metrics in (window or {}).get("dispatches", [])]
    self.last_log = (step, time.perf_counter())

  def window(self) -> dict:
    """The pulled metrics not yet written, as JSON (each dispatch's KxS loss and accuracy)."""
    return {"dispatches": [{k: v.tolist() for k, v in m.items()} for m in self.since_log]}

  def add(self, end_step: int, metrics: dict) -> None:
    self.pending.append((end_step, metrics))

  def _due(self, step: int) -> bool:
    return step % self.log_every == 0 or step == self.num_steps

  def log_due(self) -> bool:
    return bool(self.pending) and self._due(self.pending[-1][0])

  def pull(self, last_good_step: int | None) -> None:
    for end, metrics in self.pending:
      metrics = jax.device_get(metrics)
      bad_KxS = ~np.isfinite(metrics["loss"])
      if bad_KxS.any():
        k, s = np.argwhere(bad_KxS)[0]
        step = end - self.steps_per_dispatch + k + 1
        raise UserError(
            f"loss is {metrics['loss'][k, s]} at step {step} (seed {self.config.seed + s}); "
            f"stopped. The last good checkpoint is step {last_good_step} in {self.where}. "
            "Lower config.learning_rate or check the input features for NaN/Inf.")
      self.since_log.append({k: np.asarray(v, np.float32) for k, v in metrics.items()})
      if self._due(end):
        self._write(end)
    self.pending.clear()

  def _write(self, step: int) -> None:
    now = time.perf_counter()
    pairs_per_second = (step - self.last_log[0]) * self.config.batch_size / (now - self.last_log[1])
    mean = lambda key: float(np.mean([m[key] for m in self.since_log]))
    self.log.write(step, {"train_loss": mean("loss"), "train_accuracy": mean("accuracy"),
                          "pairs_per_second": pairs_per_second})
    self.progress.set_postfix(loss=f"{mean('loss'):.4f}", pairs_per_s=f"{pairs_per_second:.0f}")
    self.progress.update(step - self.progress.n)
    self.since_log, self.last_log = [], (step, now)
