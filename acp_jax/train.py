"""Training and evaluation of a correspondence model on IMAC splits.

`train_and_evaluate(config, workdir)` at the bottom reads top to bottom: mesh,
input, model and state, update step and evaluation, checkpoint, loop, results; the
pieces it calls come above it in the same order.

* Data parallel over every device of every process: one mesh axis 'data'; the
  params and the item tables are replicated, each step's pairs sharded.
* `config.num_seeds` independent models train at once: every array of the state has
  a leading seed axis and the step is vmapped over it. Each seed keeps its own best
  params and stops after `config.patience` evaluations without a better validation
  accuracy: its best params freeze (the vmapped step still updates its params, at no
  extra cost, but they are never used); the run ends when every seed has stopped.
* Every random draw of step t of seed s comes from fold_in(key(seed + s), t), and the
  state is the whole of what carries over between steps, so a resumed run repeats
  an uninterrupted one exactly. Each checkpoint holds the state, the best model and
  the train metrics not yet logged, committed at once; a resume must keep every config
  field that can change the result (checkpoint.FREE_FIELDS lists the others).
"""

from collections.abc import Callable
import dataclasses
import functools
import json
import math
import time
from typing import Any

from clu import metric_writers
from etils import epath
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax
import scipy.stats
from sklearn.metrics import roc_auc_score
import tqdm

from acp_jax import UserError
from acp_jax import analysis
from acp_jax import checkpoint
from acp_jax import data
from acp_jax import inference
from acp_jax import inputs
from acp_jax import models
from acp_jax import objectives
from acp_jax import pairs
from acp_jax import probe
from acp_jax import report
from acp_jax import stream


@flax.struct.dataclass
class TrainState:
  """What carries over between steps, for every seed (leading axis S)."""
  step: jax.Array                 # int32 scalar, steps done
  params: Any
  batch_stats: Any                # untrained state: BatchNorm statistics, match threshold; or {}
  opt_state: Any
  best_params: Any                # params at each seed's best validation accuracy so far
  best_batch_stats: Any
  best_val_accuracy_S: jax.Array  # -1 before the first evaluation
  best_step_S: jax.Array
  evals_since_best_S: jax.Array   # a seed trains while this is below config.patience


# ---------------------------------------------------------------------------- mesh

def make_mesh(batch_size: int) -> jax.sharding.Mesh:
  """A 1-D 'data' mesh over all devices; raises UserError if the batch does not split."""
  num_devices = jax.device_count()
  if batch_size % 2:
    raise UserError(f"batch_size must be even (half true, half false pairs), got {batch_size}")
  if batch_size % num_devices:
    raise UserError(f"batch_size {batch_size} is not divisible by the {num_devices} devices; "
                     f"use a multiple of {num_devices}, e.g. --config.batch_size="
                     f"{max(1, round(batch_size / num_devices)) * num_devices}")
  # Auto axes: XLA carries the batch sharding through the model (GSPMD).
  return jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


# ---------------------------------------------------------------------------- model and state

def seed_keys(config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array]:
  """Per-seed (init_key_S, train_key_S); seed s of a run is a run of seed config.seed + s."""
  keys_Sx2 = jax.vmap(lambda s: jax.random.split(jax.random.key(s)))(
      config.seed + jnp.arange(config.num_seeds))
  return keys_Sx2[:, 0], keys_Sx2[:, 1]


def make_init(config: ml_collections.ConfigDict, model: Any, tx: optax.GradientTransformation,
              image_dim: int | tuple[int, ...], music_dim: int | tuple[int, ...]
              ) -> Callable[[], TrainState]:
  """The state at step 0, as a function of nothing (all randomness from config.seed).

  `image_dim`, `music_dim`: one item's input shape (D for features, e.g. H x W x 3 for media).
  """

  def init() -> TrainState:
    init_key_S, _ = seed_keys(config)
    row = lambda dim: jnp.zeros((1, *np.atleast_1d(dim)))
    variables = jax.vmap(lambda key: model.init(key, row(image_dim), row(music_dim)))(init_key_S)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=jax.vmap(tx.init)(params), best_params=params,
                      best_batch_stats=batch_stats,
                      best_val_accuracy_S=-jnp.ones(config.num_seeds),
                      best_step_S=jnp.zeros(config.num_seeds, jnp.int32),
                      evals_since_best_S=jnp.zeros(config.num_seeds, jnp.int32))

  return init


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (the paper's), with decoupled weight decay if config.weight_decay > 0."""
  return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)


def create_state(init: Callable[[], TrainState],
                 mesh: jax.sharding.Mesh) -> tuple[TrainState, TrainState]:
  """(state, abstract_state): the state created in place, replicated on every device."""
  shapes = jax.eval_shape(init)
  shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), shapes)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          shapes, shardings)
  return jax.jit(init, out_shardings=shardings)(), abstract


# ---------------------------------------------------------------------------- update step

def make_train_chunk(config: ml_collections.ConfigDict, model: Any,
                     tx: optax.GradientTransformation, mesh: jax.sharding.Mesh,
                     feed: inputs.Feed | None = None,
                     ) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """`config.steps_per_dispatch` steps of every seed: (state, data) -> (state, metrics).

  `feed` (acp_jax/inputs.py) turns the data into each step's model inputs and targets;
  default: the data are item tables and `config.objective` (acp_jax/objectives.py) says
  what is sampled on device (`inputs.TableFeed`). The objective gives the loss. Metrics
  are per step and seed: {'loss': KxS, 'accuracy': KxS}.
  """
  objective = objectives.create_objective(config)
  pairs_of = feed.pairs if feed else functools.partial(
      inputs.sample_inputs, batch_size=config.batch_size, mesh=mesh, sample=objective.sample)
  # Data per step (a stream: K x S x ...) or the same tables for every step and seed.
  per_step = feed is not None and feed.per_step

  def seed_step(params, batch_stats, opt_state, key, step_data):
    sample_key, dropout_key = jax.random.split(key)
    image_BxD, music_BxD, target_B = pairs_of(sample_key, step_data)

    def loss_fn(params):
      return objective.loss(model, {"params": params, "batch_stats": batch_stats}, image_BxD,
                            music_BxD, target_B, dropout_key)

    (loss, (accuracy, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss, accuracy

  def train_chunk(state: TrainState, feed_data: Any) -> tuple[TrainState, dict]:
    _, train_key_S = seed_keys(config)

    def one_step(carry, step_data):
      step, params, batch_stats, opt_state = carry
      step_key_S = jax.vmap(jax.random.fold_in, (0, None))(train_key_S, step)
      params, batch_stats, opt_state, loss_S, accuracy_S = jax.vmap(
          seed_step, (0, 0, 0, 0, 0 if per_step else None))(
              params, batch_stats, opt_state, step_key_S, step_data if per_step else feed_data)
      return (step + 1, params, batch_stats, opt_state), {"loss": loss_S, "accuracy": accuracy_S}

    (step, params, batch_stats, opt_state), metrics = jax.lax.scan(
        one_step, (state.step, state.params, state.batch_stats, state.opt_state),
        xs=feed_data if per_step else None, length=config.steps_per_dispatch,
        unroll=config.unroll_steps)
    return state.replace(step=step, params=params, batch_stats=batch_stats,
                         opt_state=opt_state), metrics

  return jax.jit(train_chunk, donate_argnums=0)


# ---------------------------------------------------------------------------- evaluation

def pair_metrics(model: Any, objective: objectives.Objective, variables: dict,
                 image_NxE: jax.Array, music_MxE: jax.Array, fixed: dict) -> dict:
  """{'loss', 'accuracy', 'match_prob', 'cut', 'accuracy_at_cut'} of the fixed pairs, from
  their items' embeddings.

  'accuracy' is the model's own decision; 'cut' is the best shift of its threshold on
  these pairs by `objective.choose_cut` (0 for ACP-Net), and 'accuracy_at_cut' the
  accuracy with it.
  """
  logits_Px2 = model.apply(variables, image_NxE[fixed["image_P"]], music_MxE[fixed["music_P"]],
                           method="fuse")
  label_P = fixed["label_P"]
  score_P = logits_Px2[:, 1] - logits_Px2[:, 0]  # > 0 iff the argmax says 'match'
  cut = objective.choose_cut(score_P, label_P)
  return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits_Px2, label_P).mean(),
          "accuracy": jnp.mean((score_P > 0) == label_P),
          "match_prob": jax.nn.softmax(logits_Px2)[:, 1],
          "cut": cut, "accuracy_at_cut": jnp.mean((score_P > cut) == label_P)}


def make_feed_evaluate(model: Any, feed: inputs.Feed, objective: objectives.Objective
                       ) -> Callable[[Any, Any, str], dict]:
  """(params, batch_stats, split name) -> per seed metrics as `make_evaluate`, on the
  embeddings the feed makes of the split's items."""
  score = jax.jit(jax.vmap(functools.partial(pair_metrics, model, objective), (0, 0, 0, None)))

  def evaluate(params, batch_stats, split):
    variables_S = {"params": params, "batch_stats": batch_stats}
    return score(variables_S, *feed.embed(model, variables_S, split), feed.fixed[split])

  return evaluate


def make_evaluate(model: Any, batch_size: int | None = None,
                  objective: objectives.Objective = objectives.Correspondence(),
                  ) -> Callable[[Any, pairs.Tables, dict, Any], dict]:
  """(params, tables, fixed pairs, batch_stats) -> per seed `pair_metrics` of item tables.

  params and batch_stats (omitted: none) have a seed axis; 'match_prob' is SxP, the rest
  S. Each item is embedded once, `batch_size` items at a time (all at once if None);
  only the head runs per pair. BatchNorm uses its running statistics.
  """

  def evaluate_seed(params, batch_stats, tables, fixed):
    variables = {"params": params, "batch_stats": batch_stats}
    image_NxE = inputs.embed_rows(model, variables, tables.image_NxD, "embed_image", batch_size)
    music_MxE = inputs.embed_rows(model, variables, tables.music_MxD, "embed_music", batch_size)
    return pair_metrics(model, objective, variables, image_NxE, music_MxE, fixed)

  evaluate_seeds = jax.jit(jax.vmap(evaluate_seed, (0, 0, None, None)))
  return lambda params, tables, fixed, batch_stats=None: evaluate_seeds(
      params, {} if batch_stats is None else batch_stats, tables, fixed)


def make_record_eval(config: ml_collections.ConfigDict
                     ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Validation metrics of the current params, folded into each seed's best and patience.

  An embedding model's match threshold is set on these pairs first, so a seed's best
  params are kept with the threshold they were judged with.
  """
  objective = objectives.create_objective(config)

  def record_eval(state: TrainState, metrics: dict) -> tuple[TrainState, dict]:
    state = state.replace(batch_stats=objective.calibrate(state.batch_stats, metrics["cut"]))
    metrics = {**metrics, "accuracy": metrics["accuracy_at_cut"]}
    active_S = state.evals_since_best_S < config.patience
    # Strictly better only: on a tie the earlier (less fitted) params stay.
    better_S = active_S & (metrics["accuracy"] > state.best_val_accuracy_S)
    pick = lambda new, old: jnp.where(better_S.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)
    state = state.replace(
        best_params=jax.tree.map(pick, state.params, state.best_params),
        best_batch_stats=jax.tree.map(pick, state.batch_stats, state.best_batch_stats),
        best_val_accuracy_S=jnp.where(better_S, metrics["accuracy"], state.best_val_accuracy_S),
        best_step_S=jnp.where(better_S, state.step, state.best_step_S),
        evals_since_best_S=jnp.where(better_S, 0, state.evals_since_best_S + active_S))
    return state, {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}

  return jax.jit(record_eval, donate_argnums=0)


@jax.jit
def all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# ---------------------------------------------------------------------------- schedule and metrics

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


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Step counts of a run; every event falls at the end of a dispatch."""
  steps_per_dispatch: int
  num_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, num_train_images: int) -> "Schedule":
    per_dispatch = config.steps_per_dispatch
    steps_per_epoch = math.ceil(num_train_images / config.batch_size)
    whole = lambda steps: max(1, round(steps / per_dispatch)) * per_dispatch
    return cls(steps_per_dispatch=per_dispatch,
               # At most num_epochs.
               num_steps=max(1, config.num_epochs * steps_per_epoch // per_dispatch) * per_dispatch,
               log_every=whole(config.log_every_steps),
               eval_every=whole(config.eval_every_epochs * steps_per_epoch),
               checkpoint_every=whole(config.checkpoint_every_epochs * steps_per_epoch))

  def due(self, step: int, every: int) -> bool:
    return step % every == 0 or step == self.num_steps


class TrainMetrics:
  """Per-step train metrics still on device, pulled to the host in batches.

  Pulling checks every step's loss (UserError on NaN/Inf) and writes one
  row per log point: mean loss and accuracy since the last row, and pairs/s of one
  model (one seed). The metrics since the last row (`window`) are saved with each
  checkpoint, so a resumed run's rows are an uninterrupted run's.
  """

  def __init__(self, config: ml_collections.ConfigDict, schedule: Schedule, log: MetricsLog,
               progress: tqdm.tqdm, step: int, where: str, window: dict | None = None):
    self.config, self.schedule, self.log, self.progress = config, schedule, log, progress
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

  def log_due(self) -> bool:
    return bool(self.pending) and self.schedule.due(self.pending[-1][0], self.schedule.log_every)

  def pull(self, last_good_step: int | None) -> None:
    for end, metrics in self.pending:
      metrics = jax.device_get(metrics)
      bad_KxS = ~np.isfinite(metrics["loss"])
      if bad_KxS.any():
        k, s = np.argwhere(bad_KxS)[0]
        step = end - self.schedule.steps_per_dispatch + k + 1
        raise UserError(
            f"loss is {metrics['loss'][k, s]} at step {step} (seed {self.config.seed + s}); "
            f"stopped. The last good checkpoint is step {last_good_step} in {self.where}. "
            "Lower config.learning_rate or check the input features for NaN/Inf.")
      self.since_log.append({k: np.asarray(v, np.float32) for k, v in metrics.items()})
      if self.schedule.due(end, self.schedule.log_every):
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


# ---------------------------------------------------------------------------- checkpoint

def save_checkpoint(ckpts: checkpoint.Checkpoints, state: TrainState,
                    standardizers: tuple[pairs.Standardizer | None, pairs.Standardizer | None],
                    train_window: dict) -> None:
  """Saves the latest state, the best model and the train-metric window as one checkpoint."""
  step = int(state.step)
  if not all_finite(state.params):
    raise UserError(f"non-finite params at step {step}; not saved. The last good checkpoint "
                    f"is step {ckpts.latest_step()}. Lower config.learning_rate.")
  best = checkpoint.best_tree(state.best_params, state.best_batch_stats,
                              state.best_val_accuracy_S, state.best_step_S, *standardizers)
  ckpts.save(step, state, best, train_window)


# ---------------------------------------------------------------------------- results

def _t_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
  """The `level` t-distribution interval of the mean of independent `values` (ddof=1)."""
  half = (scipy.stats.t.ppf(0.5 + level / 2, len(values) - 1)
          * np.std(values, ddof=1) / math.sqrt(len(values)))
  return [float(np.mean(values) - half), float(np.mean(values) + half)]


def _auc(label_P: np.ndarray, score_P: np.ndarray) -> float | None:
  """ROC-AUC, None when the pairs hold one label only (AUC is undefined)."""
  return float(roc_auc_score(label_P, score_P)) if len(np.unique(label_P)) == 2 else None


def bootstrap_interval(label_P: np.ndarray, match_prob_P: np.ndarray, num_resamples: int,
                       seed: int, level: float = 0.95) -> dict[str, list[float] | None]:
  """Percentile bootstrap over the test pairs: {'test_accuracy', 'test_auc'} intervals."""
  rng = np.random.default_rng(seed)
  index_RxP = rng.integers(0, len(label_P), (num_resamples, len(label_P)))
  correct_P = (match_prob_P > 0.5) == (label_P == 1)
  accuracy_R = correct_P[index_RxP].mean(axis=1)
  auc_R = [_auc(label_P[index_P], match_prob_P[index_P]) for index_P in index_RxP]
  quantiles = lambda x_R: [float(q) for q in np.quantile(x_R, [0.5 - level / 2, 0.5 + level / 2])]
  auc_R = [a for a in auc_R if a is not None]
  return {"test_accuracy": quantiles(accuracy_R), "test_auc": quantiles(auc_R) if auc_R else None}


def results_of(config: ml_collections.ConfigDict, state: TrainState, test: dict,
               splits: dict[str, data.Split], train_seconds: float | None,
               steps_trained: int) -> dict[str, Any]:
  """results.json: each metric's mean over seeds, with error bars and the test set's size.

  Several seeds: `<key>_std` (sample std, ddof=1), `<key>_ci95` (t interval of the mean
  over seeds) and `per_seed`. One seed: `<key>_ci95` for test accuracy and AUC is a
  percentile bootstrap over the test pairs. `interval` says which.
  """
  best_val_S, best_step_S = jax.device_get((state.best_val_accuracy_S, state.best_step_S))
  label_P = splits["test"].pairs.labels_P
  num_seeds = config.num_seeds
  per_seed = [{"test_accuracy": float(test["accuracy"][s]),
               "test_auc": _auc(label_P, test["match_prob"][s]),
               "val_accuracy": float(best_val_S[s]),
               "best_step": int(best_step_S[s])} for s in range(num_seeds)]
  pairs_per_second = (steps_trained * config.batch_size / train_seconds
                      if steps_trained else None)
  results = {"dataset": config.dataset, "model": config.model,
             "objective": config.get("objective", "correspondence"), "num_seeds": num_seeds,
             "steps": int(state.step), "test_pairs": len(label_P),
             "validation_pairs": len(splits["validation"].pairs.labels_P),
             "pair_fingerprint": {name: split.fingerprint for name, split in splits.items()},
             # Which network made the image features the model reads (None: it reads pixels).
             "inception_weights": (splits["test"].inception_weights
                                   if inputs.kinds(config)[0] == "features" else None),
             # Of one model (one seed); the seeds train at once, together all_seeds.
             "pairs_per_second": pairs_per_second,
             "pairs_per_second_all_seeds": pairs_per_second and pairs_per_second * num_seeds}
  for key in per_seed[0]:
    values = [row[key] for row in per_seed]
    if None in values:
      results[key] = None
      continue
    results[key] = values[0] if num_seeds == 1 else float(np.mean(values))
    if num_seeds > 1:
      results[f"{key}_std"] = float(np.std(values, ddof=1))
      if key != "best_step":
        results[f"{key}_ci95"] = _t_interval(np.asarray(values))
  if num_seeds > 1:
    results["interval"] = (f"95% t interval of the mean over {num_seeds} seeds; ± is the "
                           "sample std (ddof=1)")
    results["per_seed"] = per_seed
  else:
    resamples = config.report.bootstrap_resamples
    for key, interval in bootstrap_interval(label_P, test["match_prob"][0], resamples,
                                            config.seed).items():
      results[f"{key}_ci95"] = interval
    results["interval"] = (f"95% percentile bootstrap over the {len(label_P)} test pairs "
                           f"({resamples} resamples); one seed")
  oracle = pairs.oracle_accuracy(splits["test"])
  if oracle is not None:
    results["oracle_accuracy"] = oracle
  return results


def summary(results: dict[str, Any], workdir: epath.Path) -> str:
  """The lines a run ends with: test accuracy (against the oracle if known) and where to look."""
  spread = lambda key: (f"{results[key]:.3f} ± {results[key + '_std']:.3f}"
                        if key + "_std" in results else f"{results[key]:.3f}")
  line = (f"{report.row_key(results)} on {results['dataset']}: "
          f"test accuracy {spread('test_accuracy')}")
  if results.get("test_accuracy_ci95"):
    line += " (95% CI {:.3f}-{:.3f})".format(*results["test_accuracy_ci95"])
  if "test_pairs" in results:
    line += f" on {results['test_pairs']} test pairs"
  if "oracle_accuracy" in results:
    line += (f", oracle {results['oracle_accuracy']:.3f}: "
             f"{results['test_accuracy'] / results['oracle_accuracy']:.2f} x")
  if results.get("test_auc") is not None:
    line += f", AUC {spread('test_auc')}"
  warning = report.random_features_warning(results)
  return (f"{line}\n" + (f"{warning}\n" if warning else "")
          + f"results: {workdir / 'results.json'}\nreport:  {workdir / 'report.md'}")


# ---------------------------------------------------------------------------- train_and_evaluate

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       splits: dict[str, data.Split] | None = None) -> dict[str, Any]:
  """Trains (or resumes) in `workdir`, evaluates the best params, writes results and report.

  Args:
    config: see configs/acp.py.
    workdir: checkpoints, metrics and results (layout in acp_jax/checkpoint.py).
    splits: 'train', 'validation' and 'test' splits; default `data.load_splits` of
      config.dataset in config.data_dir.

  Returns:
    The results also written to `<workdir>/results.json`, with `retrieval` and
    `models` (Table 4 rows) from the report (`<workdir>/report.md`, acp_jax/analysis.py).
  """
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  checkpoint.write_config(workdir, config)

  # Mesh.
  mesh = make_mesh(config.batch_size)

  # Input: what the model reads per item (acp_jax/inputs.py), standardised with
  # training statistics: every split's items on every device, or the media streamed.
  if splits is None:
    splits = data.load_splits(config.dataset, config.data_dir)
  pairs.check_sampleable(splits["train"], "train")
  feed = (stream.StreamFeed if inputs.streams(config) else inputs.TableFeed)(config, splits, mesh)
  standardizers = feed.standardizers
  schedule = Schedule.from_config(config, len(splits["train"].images.ids))

  # Model and state.
  model = models.create_model(config)
  tx = make_optimizer(config)
  init = make_init(config, model, tx, *feed.item_shapes)
  state, abstract_state = create_state(init, mesh)

  # Update step and evaluation; the step compiled ahead so the loop's time is training.
  train_chunk = make_train_chunk(config, model, tx, mesh, feed).lower(
      state, feed.train_spec).compile()
  evaluate = make_feed_evaluate(model, feed, objectives.create_objective(config))
  record_eval = make_record_eval(config)

  # Checkpoint: resume from the latest one if there is one.
  ckpts = checkpoint.Checkpoints(workdir)
  train_window = None
  if ckpts.latest_step() is not None:
    state, train_window = ckpts.restore_latest(abstract_state)
  step = start_step = int(state.step)
  stopped = not (np.asarray(state.evals_since_best_S) < config.patience).any()

  # Loop: a dispatch's metrics are pulled after the next dispatch is queued, except at
  # evaluations and checkpoints, which wait for the state anyway.
  log = MetricsLog(workdir, resume_step=step)
  progress = tqdm.tqdm(total=schedule.num_steps, initial=step, unit="step",
                       disable=jax.process_index() != 0)
  train_metrics = TrainMetrics(config, schedule, log, progress, step, str(workdir), train_window)
  start_time = time.perf_counter()
  try:
    train_data = feed.train_data(step, schedule.num_steps)
    while step < schedule.num_steps and not stopped:
      state, metrics = train_chunk(state, next(train_data))
      if train_metrics.log_due():
        train_metrics.pull(ckpts.latest_step())
      step += schedule.steps_per_dispatch
      train_metrics.add(step, metrics)
      evaluating = schedule.due(step, schedule.eval_every)
      saving = schedule.due(step, schedule.checkpoint_every)
      if evaluating or saving:
        train_metrics.pull(ckpts.latest_step())
      if evaluating:
        state, val = record_eval(state, evaluate(state.params, state.batch_stats, "validation"))
        val = jax.device_get(val)
        log.write(step, {"val_loss": float(np.mean(val["loss"])),
                         "val_accuracy": float(np.mean(val["accuracy"]))})
        stopped = not (np.asarray(state.evals_since_best_S) < config.patience).any()
      if saving or stopped:
        save_checkpoint(ckpts, state, standardizers, train_metrics.window())
    train_metrics.pull(ckpts.latest_step())
    train_seconds = time.perf_counter() - start_time
  finally:
    feed.close()
    progress.close()
    ckpts.close()
    log.close()

  # Results: every seed's best params on the fixed test pairs.
  test = jax.device_get(evaluate(state.best_params, state.best_batch_stats, "test"))
  results = results_of(config, state, test, feed.splits, train_seconds, step - start_step)
  if jax.process_index() == 0:
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    # Report: rewrites results.json with retrieval (and the probes) added; the plain one
    # stays if it fails.
    models_S = analysis.seed_models(config, model, {"params": state.best_params,
                                                    "batch_stats": state.best_batch_stats},
                                    state.best_val_accuracy_S, standardizers)
    best = models_S[inference.best_seed(np.asarray([m.val_accuracy for m in models_S]), None)]
    figures = {}
    if config.report.probes:
      results["probe"], figures = probe.probe_model(best, feed.splits, config.report.probe,
                                                    workdir)
    results = analysis.report_run(results, workdir, run_dir=workdir, model=best,
                                  test=feed.splits["test"], options=config.report,
                                  data_dir=config.data_dir, figures=figures,
                                  seed_models=models_S)
    print(summary(results, workdir))
  return results
