r"""Training throughput of the real step against a straightforward loop, and against matmul peak.

  python -m bench.train [--json] [--batch_sizes=256,4096]   (from the repository root)

For each batch size, in the same run and process:
  * real: `train.make_train_chunk` as training runs it (item tables on device, pairs
    sampled on device, config.steps_per_dispatch steps per dispatch, donated state);
  * straightforward: pairs sampled on the host with numpy, their features gathered
    and copied to the device, one jitted step per dispatch, the loss read back
    every step;
  * matmul peak: a jnp matmul (batch x 2048) @ (2048 x 1024), the shape of the image
    tower's first layer.
On a CPU the device is the host, so the straightforward loop's sampling and copies
cost little beside the step and the speedup stays near 1; on an accelerator they are
what the real step removes. Achieved FLOP/s count the step's matmuls only (forward,
and the backward for the weights and for every input but the features), on the
ACP-Net of configs/acp.py.
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

from acp_jax import models
from acp_jax import pairs
from acp_jax import train
from configs import acp

flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
flags.DEFINE_list("batch_sizes", ["256", "4096"], "Batch sizes to measure.")
flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds; the best round counts.")
flags.DEFINE_float("round_seconds", 1.0, "Least time per path and round.")
FLAGS = flags.FLAGS

NUM_IMAGES, NUM_MUSIC, IMAGE_DIM, MUSIC_DIM, NUM_CLASSES = 8192, 1024, 2048, 193, 3


def _host_tables(rng: np.random.Generator) -> tuple[pairs.Tables, np.ndarray, np.ndarray]:
  image_labels_N = rng.integers(0, NUM_CLASSES, NUM_IMAGES).astype(np.int32)
  music_labels_M = np.sort(rng.integers(0, NUM_CLASSES, NUM_MUSIC)).astype(np.int32)
  count_C = np.bincount(music_labels_M, minlength=NUM_CLASSES).astype(np.int32)
  tables = pairs.Tables(
      image_NxD=rng.normal(size=(NUM_IMAGES, IMAGE_DIM)).astype(np.float32),
      music_MxD=rng.normal(size=(NUM_MUSIC, MUSIC_DIM)).astype(np.float32),
      image_labels_N=image_labels_N, music_by_class_M=np.arange(NUM_MUSIC, dtype=np.int32),
      music_start_C=(np.cumsum(count_C) - count_C).astype(np.int32), music_count_C=count_C)
  return tables, image_labels_N, music_labels_M


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


def bench_batch(config, batch_size: int, tables_host, image_labels_N, music_labels_M,
                rounds: int, round_seconds: float) -> dict[str, float]:
  config.batch_size = batch_size
  # About as many pairs per dispatch at every batch size; dispatch cost is negligible
  # beside a step of 4096 pairs.
  config.steps_per_dispatch = max(1, config.steps_per_dispatch * 256 // batch_size)
  mesh = train.make_mesh(batch_size)
  model = models.create_model(config)
  tx = train.make_optimizer(config)
  init = train.make_init(config, model, tx, IMAGE_DIM, MUSIC_DIM)

  # Real: on-device sampling, several steps per dispatch, donated state.
  tables = train.replicate(tables_host, mesh)
  state, _ = train.create_state(init, mesh)
  chunk = train.make_train_chunk(config, model, tx, mesh).lower(state, tables).compile()

  def real_once():
    nonlocal state
    state, metrics = chunk(state, tables)
    jax.block_until_ready(metrics)

  # Straightforward: host sampling and gather, a transfer and a dispatch per step.
  params, opt_state = jax.tree.map(lambda x: x[0], (state.params, state.opt_state))
  rng = np.random.default_rng(0)
  by_class = [np.flatnonzero(music_labels_M == c) for c in range(NUM_CLASSES)]
  others = [np.flatnonzero(music_labels_M != c) for c in range(NUM_CLASSES)]

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
    image_B = rng.integers(0, NUM_IMAGES, batch_size)
    label_B = (np.arange(batch_size) % 2 == 0).astype(np.int32)
    music_B = np.array([rng.choice(by_class[c] if match else others[c])
                        for c, match in zip(image_labels_N[image_B], label_B)])
    params, opt_state, loss = step(params, opt_state, tables_host.image_NxD[image_B],
                                   tables_host.music_MxD[music_B], label_B,
                                   jax.random.key(step_count))
    step_count += 1
    float(loss)

  # Matmul peak at this batch size.
  a_BxK = jnp.ones((batch_size, IMAGE_DIM))
  b_KxN = jnp.ones((IMAGE_DIM, 1024))
  matmul = jax.jit(jnp.matmul)

  seconds = _best_seconds({"real": real_once, "straightforward": straightforward_once,
                           "matmul": lambda: matmul(a_BxK, b_KxN).block_until_ready()},
                          rounds, round_seconds)
  real_seconds = seconds["real"] / config.steps_per_dispatch
  straightforward_seconds = seconds["straightforward"]
  peak = 2 * batch_size * IMAGE_DIM * 1024 / seconds["matmul"]
  flops = matmul_flops_per_pair(params) * batch_size / real_seconds
  return {"pairs_per_second": batch_size / real_seconds,
          "straightforward_pairs_per_second": batch_size / straightforward_seconds,
          "speedup": straightforward_seconds / real_seconds,
          "flops_per_second": flops, "matmul_peak_flops_per_second": peak,
          "fraction_of_peak": flops / peak}


def main(argv: list[str]) -> None:
  del argv
  config = acp.get_config()
  tables_host, image_labels_N, music_labels_M = _host_tables(np.random.default_rng(0))
  rows = {int(b): bench_batch(config, int(b), tables_host, image_labels_N, music_labels_M,
                              FLAGS.rounds, FLAGS.round_seconds) for b in FLAGS.batch_sizes}
  report = {"device": str(jax.devices()[0].device_kind), "num_devices": jax.device_count(),
            **{key: {str(b): row[key] for b, row in rows.items()} for key in rows[min(rows)]}}
  if FLAGS.json:
    print(json.dumps(report))
    return
  print(f"{report['num_devices']} x {report['device']}")
  print(f"{'batch':>6} {'pairs/s':>10} {'straightforward':>16} {'speedup':>8} "
        f"{'GFLOP/s':>8} {'matmul peak':>12} {'of peak':>8}")
  for b, row in rows.items():
    print(f"{b:>6} {row['pairs_per_second']:>10.0f} "
          f"{row['straightforward_pairs_per_second']:>16.0f} "
          f"{row['speedup']:>7.2f}x {row['flops_per_second'] / 1e9:>8.1f} "
          f"{row['matmul_peak_flops_per_second'] / 1e9:>12.1f} {row['fraction_of_peak']:>7.0%}")


if __name__ == "__main__":
  app.run(main)
