"""A run's directory layout, its orbax checkpoints, and the config check of a resume.

  <workdir>/
    config.json                   the run's config (written at start)
    dataset.json                  what the dataset was at start: its fixed pairs' fingerprints
                                  and the encoders (and weights) of its features
    checkpoints/<step>/state/     the whole train state, every seed (resume reads it)
    checkpoints/<step>/best/      best-by-validation params (and BatchNorm statistics)
                                  per seed and the input standardisation; each seed's
                                  own best step is inside
    metrics.jsonl                 one JSON object per log or evaluation point
    results.json                  final metrics of the best params
    events.out.tfevents.*         TensorBoard

Both items of a step are one orbax checkpoint, committed at once (written under a
temporary name, renamed when complete): a run killed at any moment, mid-save
included, leaves a latest state and a best model of the same step, so the best
model is the one the state (and the results.json it leads to) reports.

A restored run (acp_jax/evaluate.py: the evaluate and retrieve jobs) calls `load_best(workdir)`.
"""

import dataclasses
from collections.abc import Mapping
import json
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from acp_jax import UserError
from acp_jax import inputs
from acp_jax import items

# Config fields that shape the saved state: a checkpoint of other values does not fit.
STATE_FIELDS = ("dataset", "model", "image_widths", "music_widths", "fusion_widths",
                "image_channels", "music_channels", "num_seeds", "objective", "projection_widths",
                "class_loss_weight")

# The config fields a resumed run may change: they cannot change its result. Every
# other field (seed, optimiser, batch, data, model, inputs, evaluation and stopping)
# must equal the workdir's config.json. A dotted name covers its sub-fields.
FREE_FIELDS = (
    "data_dir",                 # where the dataset is stored, not which (dataset is checked)
    "log_every_steps",          # train-metric rows; the state does not depend on them
    "checkpoint_every_epochs",  # when the state is saved, not what it is
    "num_epochs",               # the step budget: a larger one continues the run
    "report",                   # what the closing report shows
    "evals",                    # the evaluators run on the best params (acp_jax/evaluate.py)
)

# Fields added to the config after runs were saved without them, with the value those
# runs had: `read_config` fills them in, so that such runs resume and restore.
ADDED_FIELDS = {
    "objective": "correspondence",  # before contrastive objectives, every run was ACP-Net's
    "class_loss_weight": 0.0,       # the paper's loss alone
}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{dotted name: value} of a config as JSON."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  return {name: value for key, sub in tree.items()
          for name, value in _flat(sub, f"{prefix}.{key}" if prefix else key).items()}


def changed_fields(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple]:
  """{dotted field: (previous, current)} of two configs as JSON that differ outside FREE_FIELDS."""
  previous, current = _flat(previous), _flat(current)
  free = lambda name: any(name == f or name.startswith(f + ".") for f in FREE_FIELDS)
  return {name: (previous.get(name), current.get(name))
          for name in sorted(set(previous) | set(current))
          if not free(name) and previous.get(name) != current.get(name)}


def read_config(workdir: epath.PathLike) -> dict[str, Any]:
  """The run's `config.json` as JSON, with the ADDED_FIELDS it lacks."""
  config = json.loads((epath.Path(workdir) / "config.json").read_text())
  for name, value in ADDED_FIELDS.items():
    config.setdefault(name, value)
  return config


def write_config(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
  """Writes `config.json`; raises UserError if the workdir holds a run of another config.

  A resume continues the same run: every field but FREE_FIELDS has to match.
  """
  path = epath.Path(workdir) / "config.json"
  if path.exists():
    changed = changed_fields(read_config(workdir), json.loads(config.to_json()))
    if changed:
      raise UserError(
          f"{workdir} holds a run with other {', '.join(changed)} ("
          + "; ".join(f"{k}: {old!r} there, {new!r} here" for k, (old, new) in changed.items())
          + "); a resumed run keeps every field that can change its result. Use a new "
          f"--workdir, or the old values (only {', '.join(FREE_FIELDS)} may differ).")
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json(indent=2))


def check_dataset(workdir: epath.PathLike, splits: Mapping[str, items.Split], *,
                  write: bool = False) -> None:
  """Raises UserError when `splits` are not what the run in `workdir` trained on.

  Compares the fixed pairs and the encoders of the features with `dataset.json`; a run
  saved before that file is not checked. `write`: at the start of training, writes it
  when absent (a resume checks it like a restore).
  """
  path = epath.Path(workdir) / "dataset.json"
  current = {"pair_fingerprint": {name: split.fingerprint for name, split in splits.items()},
             "encoders": splits["test"].encoders}
  if not path.exists():
    if write and jax.process_index() == 0:
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(current, indent=2))
    return
  trained = json.loads(path.read_text())
  describe = lambda enc: (f"image encoder {enc['image']} ({enc['image_weights']}), music "
                          f"encoder {enc['music']} ({enc['music_weights']})")
  if None not in (trained["encoders"], current["encoders"]) and (
      trained["encoders"] != current["encoders"]):
    raise UserError(
        f"{workdir} was trained on features from {describe(trained['encoders'])}; the dataset "
        f"now holds features from {describe(current['encoders'])}. Its params do not read "
        "these features: rebuild the dataset with the run's encoders and weights, or train "
        "a new run on this one.")
  changed = [name for name, fingerprint in current["pair_fingerprint"].items()
             if None not in (fingerprint, trained["pair_fingerprint"].get(name))
             and fingerprint != trained["pair_fingerprint"][name]]
  if changed:
    raise UserError(
        f"the {', '.join(changed)} pairs of the dataset are not the ones {workdir} trained "
        "on (other pair fingerprints): the dataset was rebuilt from other items or by "
        "another pairing rule. Rebuild it as it was, or train a new run.")


# What one checkpoint holds: the train state, the best model (`best_tree`) and the
# train metrics since the last log row (JSON; see train.TrainMetrics).
ITEMS = ("state", "best", "train_window")


class Checkpoints:
  """The checkpoints of one run: each save holds the latest state and the best model."""

  def __init__(self, workdir: epath.PathLike):
    # One is enough: orbax writes to a temporary name and renames when complete, so a
    # run killed mid-save still finds the previous checkpoint, both items of it.
    self.manager = ocp.CheckpointManager(
        epath.Path(workdir) / "checkpoints", item_names=ITEMS,
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict]:
    """(state, train window) of the latest checkpoint, the state laid out as `abstract_state`
    (ShapeDtypeStructs with shardings)."""
    restored = self.manager.restore(self.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), train_window=ocp.args.JsonRestore()))
    return restored.state, restored.train_window

  def save(self, step: int, state: Any, best: dict[str, Any], train_window: dict) -> None:
    """Saves `state`, `best` (see `best_tree` and `load_best`) and `train_window` at once."""
    if self.latest_step() != step:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), best=ocp.args.StandardSave(best),
          train_window=ocp.args.JsonSave(train_window)))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


@dataclasses.dataclass(frozen=True)
class Best:
  """The best-by-validation model of every seed of a run."""
  config: ml_collections.ConfigDict
  params: Any                          # a leading seed axis of size config.num_seeds
  batch_stats: Any                     # BatchNorm statistics, seed axis too; {} if none
  val_accuracy_S: np.ndarray
  step_S: np.ndarray                   # each seed's best step
  image_standardizer: inputs.Standardizer | None  # None: the model reads the rows as they are
  music_standardizer: inputs.Standardizer | None

  def seed_params(self, seed: int) -> Any:
    """The params of one seed, ready for `models.create_model(config).apply`."""
    return jax.tree.map(lambda x: x[seed], self.params)

  def seed_variables(self, seed: int) -> dict[str, Any]:
    """{'params', 'batch_stats'} of one seed: `models.create_model(config).apply`'s variables."""
    return jax.tree.map(lambda x: x[seed], {"params": self.params, "batch_stats": self.batch_stats})


def best_tree(params: Any, batch_stats: Any, val_accuracy_S: Any, step_S: Any,
              image_standardizer: inputs.Standardizer | None,
              music_standardizer: inputs.Standardizer | None) -> dict[str, Any]:
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
  manager = ocp.CheckpointManager(workdir / "checkpoints", item_names=ITEMS,
                                  options=ocp.CheckpointManagerOptions(create=False))
  step = manager.latest_step()
  if step is None:
    raise UserError(f"no checkpoint in {workdir}/checkpoints; train first "
                    f"(python launch.py --config=... --workdir={workdir})")
  tree = manager.restore(step, args=ocp.args.Composite(best=ocp.args.StandardRestore())).best
  manager.close()
  config = ml_collections.ConfigDict(read_config(workdir))
  host = lambda key: np.asarray(tree[key])
  standardizer = lambda name: (inputs.Standardizer(host(f"{name}_mean_D"), host(f"{name}_std_D"))
                               if f"{name}_mean_D" in tree else None)
  return Best(config=config, params=tree["params"], batch_stats=tree["batch_stats"],
              val_accuracy_S=host("val_accuracy_S"), step_S=host("step_S"),
              image_standardizer=standardizer("image"), music_standardizer=standardizer("music"))
