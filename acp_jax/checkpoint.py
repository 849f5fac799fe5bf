"""A run's directory layout and its orbax checkpoints: latest (to resume) and best (to use).

  <workdir>/
    config.json                   the run's config (written at start)
    checkpoints/latest/<step>/    the whole train state, every seed (resume reads it)
    checkpoints/best/<step>/      best-by-validation params (and BatchNorm statistics)
                                  per seed and the input standardisation; <step> is
                                  when it was written, each seed's own best step is inside
    metrics.jsonl                 one JSON object per log or evaluation point
    results.json                  final metrics of the best params
    events.out.tfevents.*         TensorBoard

Consumers (probe, retrieval, report) call `load_best(workdir)`.
"""

import dataclasses
import json
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from acp_jax import pairs

# Config fields that shape the saved state: resuming with other values cannot work.
STATE_FIELDS = ("dataset", "model", "image_widths", "music_widths", "fusion_widths",
                "image_channels", "music_channels", "num_seeds", "objective", "projection_widths")


def write_config(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
  """Writes `config.json`; raises ValueError if the workdir holds a run of another shape."""
  path = epath.Path(workdir) / "config.json"
  if path.exists():
    previous = json.loads(path.read_text())
    current = json.loads(config.to_json())
    changed = [k for k in STATE_FIELDS if previous.get(k) != current.get(k)]
    if changed:
      raise ValueError(
          f"{workdir} holds a run with other {', '.join(changed)} "
          f"({', '.join(f'{k}={previous.get(k)}' for k in changed)}); its checkpoints cannot "
          "be resumed with this config. Use a new --workdir, or the old values.")
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json(indent=2))


class Checkpoints:
  """The latest and best checkpoint managers of one run."""

  def __init__(self, workdir: epath.PathLike):
    root = epath.Path(workdir) / "checkpoints"
    # One of each is enough: orbax writes to a temporary name and renames when complete,
    # so a run killed mid-save still finds the previous checkpoint. The two managers
    # save at the same steps, so their multi-process barriers need distinct names.
    options = lambda name: ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name))
    self.latest = ocp.CheckpointManager(root / "latest", options=options("latest"))
    self.best = ocp.CheckpointManager(root / "best", options=options("best"))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, abstract_state: Any) -> Any:
    """The latest state, laid out as `abstract_state` (ShapeDtypeStructs with shardings)."""
    return self.latest.restore(self.latest.latest_step(),
                               args=ocp.args.StandardRestore(abstract_state))

  def save(self, step: int, state: Any, best: dict[str, Any] | None) -> None:
    """Saves `state` as latest and, if given, `best` (see `load_best`) as best."""
    if self.latest.latest_step() != step:
      self.latest.save(step, args=ocp.args.StandardSave(state))
    if best is not None and self.best.latest_step() != step:
      self.best.save(step, args=ocp.args.StandardSave(best))

  def close(self) -> None:
    for manager in (self.latest, self.best):
      manager.wait_until_finished()
      manager.close()


@dataclasses.dataclass(frozen=True)
class Best:
  """The best-by-validation model of every seed of a run."""
  config: ml_collections.ConfigDict
  params: Any                          # a leading seed axis of size config.num_seeds
  batch_stats: Any                     # BatchNorm statistics, seed axis too; {} if none
  val_accuracy_S: np.ndarray
  step_S: np.ndarray                   # each seed's best step
  image_standardizer: pairs.Standardizer | None  # None: the model reads the rows as they are
  music_standardizer: pairs.Standardizer | None

  def seed_params(self, seed: int) -> Any:
    """The params of one seed, ready for `models.create_model(config).apply`."""
    return jax.tree.map(lambda x: x[seed], self.params)

  def seed_variables(self, seed: int) -> dict[str, Any]:
    """{'params', 'batch_stats'} of one seed: `models.create_model(config).apply`'s variables."""
    return jax.tree.map(lambda x: x[seed], {"params": self.params, "batch_stats": self.batch_stats})


def best_tree(params: Any, batch_stats: Any, val_accuracy_S: Any, step_S: Any,
              image_standardizer: pairs.Standardizer | None,
              music_standardizer: pairs.Standardizer | None) -> dict[str, Any]:
  """What the best checkpoint holds, as saved; a modality without a standardizer has no stats."""
  tree = {"params": params, "batch_stats": batch_stats, "val_accuracy_S": val_accuracy_S,
          "step_S": step_S}
  for name, standardizer in (("image", image_standardizer), ("music", music_standardizer)):
    if standardizer is not None:
      tree[f"{name}_mean_D"], tree[f"{name}_std_D"] = standardizer.mean_D, standardizer.std_D
  return tree


def load_best(workdir: epath.PathLike) -> Best:
  """The best checkpoint of the run in `workdir`, on the default device."""
  workdir = epath.Path(workdir)
  manager = ocp.CheckpointManager(workdir / "checkpoints" / "best",
                                  options=ocp.CheckpointManagerOptions(create=False))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"no best checkpoint in {workdir}/checkpoints/best; train first "
                            f"(python launch.py --config=... --workdir={workdir})")
  tree = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  host = lambda key: np.asarray(tree[key])
  standardizer = lambda name: (pairs.Standardizer(host(f"{name}_mean_D"), host(f"{name}_std_D"))
                               if f"{name}_mean_D" in tree else None)
  return Best(config=config, params=tree["params"], batch_stats=tree["batch_stats"],
              val_accuracy_S=host("val_accuracy_S"), step_S=host("step_S"),
              image_standardizer=standardizer("image"), music_standardizer=standardizer("music"))
