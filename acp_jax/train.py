"""Training of a correspondence model on IMAC splits: mesh, state, update step and loop.

`train(config, workdir)` reads top to bottom: mesh, input, model and state, update
step and validation, checkpoint, loop; the pieces it calls come above it in the same
order. `train_and_evaluate` then runs the evaluators of `config.evals` on the best
params (acp_jax/evaluate.py), which write results.json and the report.

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
import math
import time
from typing import Any

from etils import epath
import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax
import tqdm

from acp_jax import UserError
from acp_jax import checkpoint
from acp_jax import data
from acp_jax import evaluate
from acp_jax import feeds
from acp_jax import inputs
from acp_jax import items
from acp_jax import metric_log
from acp_jax import models
from acp_jax import objectives
from acp_jax import pairs
from acp_jax import report
from acp_jax import threefry
from acp_jax.evaluators import common


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
                     tx: optax.GradientTransformation, feed: feeds.Feed,
                     objective: objectives.Objective,
                     ) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
  """`config.steps_per_dispatch` steps of every seed: (state, data) -> (state, metrics).

  `feed` (acp_jax/feeds.py) turns the data into each step's model inputs and targets, as
  the objective (acp_jax/objectives.py) samples them; the objective gives the loss.
  Metrics are per step and seed: {'loss': KxS, 'accuracy': KxS}.
  """
  # Data per step (a stream: K x S x ...) or the same tables for every step and seed.
  per_step = feed.per_step

  def seed_step(params, batch_stats, opt_state, key, step_data):
    sample_key, dropout_key = jax.random.split(key)
    image_BxD, music_BxD, target_B = feed.step_inputs(sample_key, step_data)
    dropout_key = threefry.unrolled(dropout_key)  # the same masks, drawn in one pass on CPU

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


# ---------------------------------------------------------------------------- validation

def make_record_eval(config: ml_collections.ConfigDict, objective: objectives.Objective
                     ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Validation metrics of the current params, folded into each seed's best and patience.

  An embedding model's match threshold is set on these pairs first, so a seed's best
  params are kept with the threshold they were judged with.
  """

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


# ---------------------------------------------------------------------------- schedule

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


# ---------------------------------------------------------------------------- checkpoint

def save_checkpoint(ckpts: checkpoint.Checkpoints, state: TrainState,
                    standardizers: feeds.Standardizers,
                    train_window: dict) -> None:
  """Saves the latest state, the best model and the train-metric window as one checkpoint."""
  step = int(state.step)
  if not all_finite(state.params):
    raise UserError(f"non-finite params at step {step}; not saved. The last good checkpoint "
                    f"is step {ckpts.latest_step()}. Lower config.learning_rate.")
  best = checkpoint.best_tree(state.best_params, state.best_batch_stats,
                              state.best_val_accuracy_S, state.best_step_S, *standardizers)
  ckpts.save(step, state, best, train_window)


# ---------------------------------------------------------------------------- train


@dataclasses.dataclass(frozen=True)
class Trained:
  """What a finished (or resumed, finished) training leaves for evaluation."""
  state: TrainState
  model: Any
  objective: objectives.Objective
  feed: feeds.Feed
  splits: dict[str, items.Split]
  results: dict[str, Any]         # what the run knows before evaluation (results.json's head)
  phases_s: dict[str, float]      # seconds of data, compile, train


def train(config: ml_collections.ConfigDict, workdir: epath.Path,
          splits: dict[str, items.Split] | None = None) -> Trained:
  """Trains (or resumes) in `workdir` until every seed has stopped or the steps run out."""
  start = time.perf_counter()
  checkpoint.write_config(workdir, config)

  # Mesh.
  mesh = inputs.make_mesh(config.batch_size)

  # Input: what the model reads per item (acp_jax/inputs.py), standardised with
  # training statistics: every split's items on every device, or the media streamed.
  if splits is None:
    splits = data.load_splits(config.dataset, config.data_dir)
  checkpoint.check_dataset(workdir, splits, write=True)
  pairs.check_sampleable(splits["train"], "train")
  objective = objectives.create_objective(config)
  feed = feeds.create_feed(config, splits, mesh, objective)
  schedule = Schedule.from_config(config, len(splits["train"].images.ids))
  phases_s = {"data": time.perf_counter() - start}

  # Model and state.
  start = time.perf_counter()
  model = models.create_model(config)
  tx = make_optimizer(config)
  init = make_init(config, model, tx, *feed.item_shapes)
  state, abstract_state = create_state(init, mesh)

  # Update step and validation; the step compiled ahead so the loop's time is training.
  train_chunk = make_train_chunk(config, model, tx, feed, objective).lower(
      state, feed.train_spec).compile()
  score = common.make_pair_scorer(model, objective)
  record_eval = make_record_eval(config, objective)

  def validate(state: TrainState) -> tuple[TrainState, dict]:
    variables_S = {"params": state.params, "batch_stats": state.batch_stats}
    return record_eval(state, score(variables_S, *feed.embed(model, variables_S, "validation"),
                                    feed.fixed["validation"]))

  # Checkpoint: resume from the latest one if there is one.
  ckpts = checkpoint.Checkpoints(workdir)
  train_window = None
  if ckpts.latest_step() is not None:
    state, train_window = ckpts.restore_latest(abstract_state)
  step = start_step = int(state.step)
  stopped = not (np.asarray(state.evals_since_best_S) < config.patience).any()
  phases_s["compile"] = time.perf_counter() - start

  # Loop: a dispatch's metrics are pulled after the next dispatch is queued, except at
  # evaluations and checkpoints, which wait for the state anyway.
  log = metric_log.MetricsLog(workdir, resume_step=step)
  progress = tqdm.tqdm(total=schedule.num_steps, initial=step, unit="step",
                       disable=jax.process_index() != 0)
  train_metrics = metric_log.TrainMetrics(
      config, log, progress, step, str(workdir), steps_per_dispatch=schedule.steps_per_dispatch,
      log_every=schedule.log_every, num_steps=schedule.num_steps, window=train_window)
  start = time.perf_counter()
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
        state, val = validate(state)
        val = jax.device_get(val)
        log.write(step, {"val_loss": float(np.mean(val["loss"])),
                         "val_accuracy": float(np.mean(val["accuracy"]))})
        stopped = not (np.asarray(state.evals_since_best_S) < config.patience).any()
      if saving or stopped:
        save_checkpoint(ckpts, state, feed.standardizers, train_metrics.window())
    train_metrics.pull(ckpts.latest_step())
    train_seconds = time.perf_counter() - start
  finally:
    feed.close()
    progress.close()
    ckpts.close()
    log.close()
  phases_s["train"] = train_seconds

  steps_trained = step - start_step
  pairs_per_second = steps_trained * config.batch_size / train_seconds if steps_trained else None
  results = {"dataset": config.dataset, "model": config.model, "objective": config.objective,
             "num_seeds": config.num_seeds, "steps": int(state.step),
             "pair_fingerprint": {name: split.fingerprint for name, split in splits.items()},
             # Which network made the image features the model reads (None: it reads pixels).
             "inception_weights": (splits["test"].inception_weights
                                   if inputs.kinds(config)[0] == "features" else None),
             "encoders": splits["test"].encoders,
             # Of one model (one seed); the seeds train at once, together all_seeds.
             "pairs_per_second": pairs_per_second,
             "pairs_per_second_all_seeds": pairs_per_second and pairs_per_second * config.num_seeds}
  return Trained(state=state, model=model, objective=objective, feed=feed, splits=splits,
                 results=results, phases_s=phases_s)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       splits: dict[str, items.Split] | None = None) -> dict[str, Any]:
  """Trains (or resumes) in `workdir`, then evaluates every seed's best params.

  Args:
    config: see configs/acp.py.
    workdir: checkpoints, metrics and results (layout in acp_jax/checkpoint.py).
    splits: 'train', 'validation' and 'test' splits; default `data.load_splits` of
      config.dataset in config.data_dir.

  Returns:
    The results also written to `<workdir>/results.json` by the evaluators of
    `config.evals` (acp_jax/evaluate.py), with `phases_s`, the seconds of each phase.
  """
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  trained = train(config, workdir, splits)
  state = trained.state
  subject = common.Subject(
      config=config, module=trained.model, objective=trained.objective, feed=trained.feed,
      variables_S={"params": state.best_params, "batch_stats": state.best_batch_stats},
      val_accuracy_S=np.asarray(jax.device_get(state.best_val_accuracy_S)),
      best_step_S=np.asarray(jax.device_get(state.best_step_S)), splits=trained.splits,
      run_dir=workdir,
      figures_dir=workdir / report.FIGURES_DIR if jax.process_index() == 0 else None)
  results = evaluate.evaluate_run(subject, trained.results, config.evals, workdir,
                                  config.report.compare, trained.phases_s)
  if jax.process_index() == 0:
    print(report.summary(results, workdir))
  return results
