r"""Training throughput of the real step against a straightforward loop, and against matmul peak.

  python -m bench.train [--json] [--batch_sizes=256,4096]   (from the repository root)

In one process, for each batch size (each with its own copy of configs/acp.py):
  * real: `train.make_train_chunk` as training runs it (item tables on device, pairs
    sampled on device, config.steps_per_dispatch steps per dispatch, donated state),
    one model (one seed);
  * straightforward: balanced pairs sampled on the host with vectorised numpy, their
    features gathered and copied to the device, one jitted step per dispatch, the
    loss read back every step;
and once for the run:
  * matmul peak: the best FLOP/s of float32 square matmuls of a few compute-bound sizes.
Printed: pairs/s of each loop (training pairs of one model per second), the speedup
(straightforward seconds per pair / real seconds per pair), the real step's achieved
matmul FLOP/s and their fraction of the peak. Achieved FLOP/s count the step's
matmuls only (2 per multiply-add; forward, and the backward for the weights and for
every input but the features), on the ACP-Net of configs/acp.py.
On a CPU the device is the host, so the straightforward loop's sampling and copies
cost little beside the step and the speedup stays near 1; on an accelerator they are
what the real step removes.
Random features stand in for IMAC: the step's cost does not depend on their values.
"""

from collections.abc import Callable
import json
import math
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from acp_jax import feeds
from acp_jax import inputs
from acp_jax import items
from acp_jax import models
from acp_jax import objectives
from acp_jax import train
from configs import acp

FLAGS = flags.FLAGS

NUM_IMAGES, NUM_MUSIC, IMAGE_DIM, MUSIC_DIM, NUM_CLASSES = 8192, 1024, 2048, 193, 3


def define_flags() -> None:
  """The command line's flags (not defined on import: bench.device imports this module)."""
  flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
  flags.DEFINE_list("batch_sizes", ["256", "4096"], "Batch sizes to measure.")
  flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds; the best round counts.")
  flags.DEFINE_float("round_seconds", 1.0, "Least time per path and round.")
  flags.DEFINE_list("peak_sizes", ["1024", "2048", "4096"],
                    "Square matmul sizes whose best FLOP/s is the peak.")


def _train_split(rng: np.random.Generator) -> items.Split:
  """Random features and classes of IMAC's dimensions (the benchmark evaluates nothing)."""
  make = lambda num, dim, labels_N: items.Items(
      ids=tuple(map(str, range(num))), labels_N=labels_N, cues_N=-np.ones(num, np.int32),
      features_NxD=rng.normal(size=(num, dim)).astype(np.float32))
  images = make(NUM_IMAGES, IMAGE_DIM, rng.integers(0, NUM_CLASSES, NUM_IMAGES).astype(np.int32))
  music = make(NUM_MUSIC, MUSIC_DIM,
               np.sort(rng.integers(0, NUM_CLASSES, NUM_MUSIC)).astype(np.int32))
  none = np.zeros(0, np.int32)
  return items.Split(images, music, items.Pairs(none, none, none))


def _best_seconds(paths: dict[str, Callable[[], None]], rounds: int,
                  round_seconds: float) -> dict[str, float]:
  """Seconds per call of each (blocking) path: the best of interleaved rounds.

  Interleaving and the best round keep the ratios fair on a machine shared with
  other work.
  """
  for run_once in paths.values():
    run_once()  # compile and warm up
  best = dict.fromkeys(paths, math.inf)
  for _ in range(rounds):
    for name, run_once in paths.items():
      calls, start = 0, time.perf_counter()
      while calls == 0 or time.perf_counter() - start < round_seconds:
        run_once()
        calls += 1
      best[name] = min(best[name], (time.perf_counter() - start) / calls)
  return best


def matmul_flops_per_pair(params: dict) -> float:
  """Matmul FLOPs per training pair: 2 per multiply-add, forward and backward."""
  kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(params)
             if path[-1].key == "kernel"]
  macs = sum(math.prod(k.shape) for k in kernels)
  # The first layer of each tower needs no gradient for its input (the features).
  first_layer_macs = IMAGE_DIM * params["image_tower"]["Dense_0"]["kernel"].shape[0] + (
      MUSIC_DIM * params["music_tower"]["Dense_0"]["kernel"].shape[0])
  return 2 * (3 * macs - first_layer_macs)


def matmul_peak(sizes: list[int], rounds: int, round_seconds: float) -> dict[str, float]:
  """{'flops_per_second', 'size'}: the best of float32 n x n @ n x n matmuls over `sizes`."""
  matmul = jax.jit(jnp.matmul)
  operands = {n: (jnp.ones((n, n)), jnp.ones((n, n))) for n in sizes}
  seconds = _best_seconds({n: lambda n=n: matmul(*operands[n]).block_until_ready()
                           for n in sizes}, rounds, round_seconds)
  flops = {n: 2 * n ** 3 / seconds[n] for n in sizes}
  best = max(flops, key=flops.get)
  return {"flops_per_second": flops[best], "size": best}


def host_sampler(image_labels_N: np.ndarray, music_labels_M: np.ndarray, batch_size: int,
                 rng: np.random.Generator) -> Callable[[], tuple[np.ndarray, ...]]:
  """Balanced pairs as `pairs.sample_pairs` draws them, with vectorised numpy on the host."""
  order_M = np.argsort(music_labels_M, kind="stable")
  count_C = np.bincount(music_labels_M, minlength=NUM_CLASSES)
  start_C = np.cumsum(count_C) - count_C
  label_B = (np.arange(batch_size) % 2 == 0).astype(np.int32)

  def sample() -> tuple[np.ndarray, ...]:
    image_B = rng.integers(0, len(image_labels_N), batch_size)
    class_B = image_labels_N[image_B]
    start_B, count_B = start_C[class_B], count_C[class_B]
    span_B = np.where(label_B == 1, count_B, len(music_labels_M) - count_B)
    offset_B = rng.integers(0, span_B)
    sorted_B = np.where(label_B == 1, start_B + offset_B,
                        np.where(offset_B < start_B, offset_B, offset_B + count_B))
    return image_B, order_M[sorted_B], label_B

  return sample


def bench_batch(batch_size: int, split: items.Split, rounds: int, round_seconds: float,
                steps_per_dispatch: int | None = None) -> dict[str, float]:
  """Both loops at one batch size; `steps_per_dispatch` given, the real loop's."""
  config = acp.get_config()  # a fresh copy: nothing set for one batch size leaks to the next
  config.batch_size = batch_size
  # About as many pairs per dispatch at every batch size; dispatch cost is negligible
  # beside a step of 4096 pairs.
  config.steps_per_dispatch = steps_per_dispatch or max(
      1, config.steps_per_dispatch * 256 // batch_size)
  mesh = inputs.make_mesh(batch_size)
  model = models.create_model(config)
  tx = train.make_optimizer(config)
  init = train.make_init(config, model, tx, IMAGE_DIM, MUSIC_DIM)

  # Real: on-device sampling, several steps per dispatch, donated state.
  objective = objectives.create_objective(config)
  feed = feeds.TableFeed(config, {"train": split}, mesh, objective)
  tables = feed.tables["train"]
  state, _ = train.create_state(init, mesh)
  chunk = train.make_train_chunk(config, model, tx, feed, objective).lower(
      state, tables).compile()

  def real_once():
    nonlocal state
    state, metrics = chunk(state, tables)
    jax.block_until_ready(metrics)

  # Straightforward: host sampling and gather, a transfer and a dispatch per step.
  params, opt_state = jax.tree.map(lambda x: x[0], (state.params, state.opt_state))
  sample = host_sampler(split.images.labels_N, split.music.labels_N, batch_size,
                        np.random.default_rng(0))

  @jax.jit
  def step(params, opt_state, image_BxD, music_BxD, label_B, key):
    def loss_fn(params):
      logits_Bx2 = model.apply({"params": params}, image_BxD, music_BxD, train=True,
                               rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits_Bx2, label_B).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step_count = 0

  def straightforward_once():
    nonlocal params, opt_state, step_count
    image_B, music_B, label_B = sample()
    params, opt_state, loss = step(params, opt_state, split.images.features_NxD[image_B],
                                   split.music.features_NxD[music_B], label_B,
                                   jax.random.key(step_count))
    step_count += 1
    float(loss)

  seconds = _best_seconds({"real": real_once, "straightforward": straightforward_once},
                          rounds, round_seconds)
  real_seconds = seconds["real"] / config.steps_per_dispatch
  straightforward_seconds = seconds["straightforward"]
  return {"pairs_per_second": batch_size / real_seconds,
          "straightforward_pairs_per_second": batch_size / straightforward_seconds,
          "speedup": straightforward_seconds / real_seconds,
          "flops_per_second": matmul_flops_per_pair(params) * batch_size / real_seconds,
          "steps_per_dispatch": config.steps_per_dispatch}


def run(*, batch_sizes: list[int], rounds: int, round_seconds: float, peak_sizes: list[int],
        steps_per_dispatch: int | None = None) -> dict:
  """The benchmark's JSON object: the matmul peak, then each batch size against it."""
  split = _train_split(np.random.default_rng(0))
  peak = matmul_peak(peak_sizes, rounds, round_seconds)
  rows = {b: bench_batch(b, split, rounds, round_seconds, steps_per_dispatch)
          for b in batch_sizes}
  for row in rows.values():
    row["fraction_of_peak"] = row["flops_per_second"] / peak["flops_per_second"]
  return {"device": str(jax.devices()[0].device_kind), "num_devices": jax.device_count(),
          "matmul_peak_flops_per_second": peak["flops_per_second"],
          "matmul_peak_size": peak["size"],
          **{key: {str(b): row[key] for b, row in rows.items()} for key in rows[min(rows)]}}


def main(argv: list[str]) -> None:
  del argv
  report = run(batch_sizes=[int(b) for b in FLAGS.batch_sizes], rounds=FLAGS.rounds,
               round_seconds=FLAGS.round_seconds, peak_sizes=[int(n) for n in FLAGS.peak_sizes])
  if FLAGS.json:
    print(json.dumps(report))
    return
  print(f"{report['num_devices']} x {report['device']}; matmul peak "
        f"{report['matmul_peak_flops_per_second'] / 1e9:.1f} GFLOP/s (best square float32 "
        f"matmul, n = {report['matmul_peak_size']}, measured in this run)")
  print("pairs/s: training pairs of one model per second; speedup: real over the "
        "straightforward loop; GFLOP/s: the real step's matmuls; of peak: GFLOP/s / peak")
  print(f"{'batch':>6} {'pairs/s':>10} {'straightforward':>16} {'speedup':>8} "
        f"{'GFLOP/s':>8} {'of peak':>8}")
  for b in report["speedup"]:
    print(f"{b:>6} {report['pairs_per_second'][b]:>10.0f} "
          f"{report['straightforward_pairs_per_second'][b]:>16.0f} "
          f"{report['speedup'][b]:>7.2f}x {report['flops_per_second'][b] / 1e9:>8.1f} "
          f"{report['fraction_of_peak'][b]:>7.0%}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
