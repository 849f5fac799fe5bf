r"""Training throughput of the real step against a straightforward loop, and against matmul peak.

  python -m bench.train [--json] [--batch_sizes=256,4096] [--profile]   (from the repository root)

In one process, for each batch size (each with its own copy of configs/acp.py):
  * real: `train.make_train_chunk` as training runs it (item tables on device, pairs
    sampled on device, configs/acp.py's steps_per_dispatch steps per dispatch, donated
    state), one model (one seed);
  * straightforward: balanced pairs sampled on the host with vectorised numpy, their
    features gathered and copied to the device, one jitted step per dispatch, the
    loss read back every step;
and once for the run:
  * matmul peak: the best FLOP/s of float32 square matmuls of a few compute-bound sizes.
All of them are timed in the same interleaved rounds (the best round counts), so every
ratio compares times taken under the same load; the 1-minute load average before and
after the timing is printed with them.
Printed: pairs/s of each loop (training pairs of one model per second), the speedup
(straightforward seconds per pair / real seconds per pair), the real step's achieved
matmul FLOP/s and their fraction of the peak. Achieved FLOP/s count the step's
matmuls only (2 per multiply-add; forward, and the backward for the weights and for
every input but the features), on the ACP-Net of configs/acp.py.
On a CPU the device is the host, so the straightforward loop's sampling and copies
cost little beside the step; on an accelerator they are what the real step removes.
On a CPU the dispatches count instead: XLA:CPU allocates a call's temporaries afresh
at every call (~300 MB at batch 4096), glibc maps blocks that large anew each time, and
the kernel zeroes every page at its first touch. The real loop pays that once per
dispatch of steps_per_dispatch steps, the straightforward loop at every step. The real
step's dropout masks come from acp_jax/threefry.py's keys (the same bits in one pass);
the straightforward step draws them with jax.random.key, as plain code would.

With --profile, where the real step's time goes at each batch size, in seconds per step
and as shares of the step that add up to 1 (PARTS): its matmuls alone (the same dots,
shapes and layouts, steps_per_dispatch times in one jitted call; their FLOP/s over the
peak is what the step could reach if nothing else cost time), dropout (the step less
the same step without it), Adam's update and the pair sampling and gather (each jitted
alone), and the rest by difference; and the minor page faults per step of both loops.
Random features stand in for IMAC: the step's cost does not depend on their values.
"""

from collections.abc import Callable
import functools
import json
import math
import os
import resource
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
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
  flags.DEFINE_bool("profile", False, "Also time the real step's parts: where its time goes.")


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


def _best_seconds(paths: dict[tuple, Callable[[], None]], rounds: int,
                  round_seconds: float) -> dict[tuple, float]:
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


def page_faults_per_call(run_once: Callable[[], None], calls: int = 2) -> float:
  """Minor page faults (pages the kernel mapped and zeroed) per call of a warm path."""
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(calls):
    run_once()
  return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def dense_layers(params: dict) -> list[tuple[tuple[int, int], bool]]:
  """(kernel shape O x I, whether the step needs its input's gradient) of every Dense layer.

  The first layer of each tower needs no gradient for its input (the features).
  """
  first = {("image_tower", "Dense_0"), ("music_tower", "Dense_0")}
  return [(x.shape, tuple(key.key for key in path[:2]) not in first)
          for path, x in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "kernel"]


def matmul_flops_per_pair(params: dict) -> float:
  """Matmul FLOPs per training pair: 2 per multiply-add, forward and backward."""
  return 2 * sum(math.prod(shape) * (3 if input_grad else 2)
                 for shape, input_grad in dense_layers(params))


def peak_paths(sizes: list[int]) -> dict[int, Callable[[], None]]:
  """A blocking float32 n x n @ n x n matmul for each n of `sizes`."""
  matmul = jax.jit(jnp.matmul)
  operands = {n: (jnp.ones((n, n)), jnp.ones((n, n))) for n in sizes}
  return {n: lambda n=n: matmul(*operands[n]).block_until_ready() for n in sizes}


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


def bench_config(batch_size: int, steps_per_dispatch: int | None = None,
                 **fields) -> ml_collections.ConfigDict:
  """configs/acp.py at `batch_size`, `fields` overridden; a fresh copy for every loop.

  `steps_per_dispatch` defaults to the config's, as training runs.
  """
  config = acp.get_config()
  config.batch_size = batch_size
  config.steps_per_dispatch = steps_per_dispatch or config.steps_per_dispatch
  config.update(fields)
  return config


class RealLoop:
  """`train.make_train_chunk` as training runs it, one model (one seed): item tables on
  device, pairs sampled on device, config.steps_per_dispatch steps per dispatch, donated
  state."""

  def __init__(self, config: ml_collections.ConfigDict, split: items.Split):
    self.batch_size, self.steps_per_dispatch = config.batch_size, config.steps_per_dispatch
    mesh = inputs.make_mesh(config.batch_size)
    self.model = models.create_model(config)
    self.tx = train.make_optimizer(config)
    init = train.make_init(config, self.model, self.tx, IMAGE_DIM, MUSIC_DIM)
    objective = objectives.create_objective(config)
    self.feed = feeds.TableFeed(config, {"train": split}, mesh, objective)
    self.tables = self.feed.tables["train"]
    self.state, _ = train.create_state(init, mesh)
    # The seed's initial params and optimizer state (copies: the chunk donates the state),
    # for what is timed without the chunk.
    self.params, self.opt_state = jax.tree.map(lambda x: x[0],
                                               (self.state.params, self.state.opt_state))
    self.chunk = train.make_train_chunk(config, self.model, self.tx, self.feed, objective).lower(
        self.state, self.tables).compile()

  def dispatch(self) -> None:
    """One blocking dispatch: `steps_per_dispatch` steps."""
    self.state, metrics = self.chunk(self.state, self.tables)
    jax.block_until_ready(metrics)


def straightforward_loop(real: RealLoop, split: items.Split) -> Callable[[], None]:
  """One blocking step of the straightforward loop from the real loop's initial state:
  host sampling and gather, a transfer and a dispatch per step, the loss read back."""
  params, opt_state = real.params, real.opt_state
  sample = host_sampler(split.images.labels_N, split.music.labels_N, real.batch_size,
                        np.random.default_rng(0))

  @jax.jit
  def step(params, opt_state, image_BxD, music_BxD, label_B, key):
    def loss_fn(params):
      logits_Bx2 = real.model.apply({"params": params}, image_BxD, music_BxD, train=True,
                                    rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits_Bx2, label_B).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = real.tx.update(grads, opt_state, params)
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

  return straightforward_once


def matmul_chain(params: dict, batch_size: int, steps: int) -> Callable[[], None]:
  """The step's matmuls alone, `steps` times in one blocking jitted call (as one dispatch
  of the real loop), operands laid out as in the step: per Dense layer the forward
  x_BxI . kernel_OxI^T, the kernel gradient dy_BxO^T . x_BxI and, but for the towers'
  first layers, the input gradient dy_BxO . kernel_OxI. Each repeat adds 0 x a result of
  the last one to the smaller operand of each dot, so that no repeat can be hoisted out
  of the loop (that add is the one pass the matmuls' time has on top of the dots).
  """
  rng = np.random.default_rng(0)
  operands, contracting = [], []
  for (o, i), input_grad in dense_layers(params):
    x_BxI, kernel_OxI, dy_BxO = (jnp.asarray(rng.normal(size=shape), jnp.float32)
                                 for shape in ((batch_size, i), (o, i), (batch_size, o)))
    operands += [(x_BxI, kernel_OxI), (dy_BxO, x_BxI)] + [(dy_BxO, kernel_OxI)] * input_grad
    contracting += [((1,), (1,)), ((0,), (0,))] + [((1,), (0,))] * input_grad

  def repeat(operands, zero):
    results = [jax.lax.dot_general(a + zero if a.size < b.size else a,
                                   b + zero if b.size <= a.size else b, (dims, ((), ())))
               for (a, b), dims in zip(operands, contracting)]
    return 0.0 * sum(result[0, 0] for result in results)

  chain = jax.jit(lambda operands: jax.lax.fori_loop(
      0, steps, lambda _, zero: repeat(operands, zero), jnp.float32(0)))
  return lambda: jax.block_until_ready(chain(operands))


PARTS = {  # part of the real step -> how it is timed
    "matmuls": "the step's matmuls alone (with a pass over one operand of each)",
    "dropout": "the step less the step without dropout",
    "adam": "Adam's update of every param, alone",
    "sampling": "pair sampling and feature gather, alone",
    "rest": "by difference: bias, ReLU, concat, loss, bias gradients, copies, page faults,"
            " idle cores",
}


def part_paths(real: RealLoop, split: items.Split) -> dict[str, Callable[[], None]]:
  """Blocking calls that time PARTS of the real loop's step (bar 'rest'), per step."""
  without_dropout = RealLoop(bench_config(real.batch_size, real.steps_per_dispatch,
                                          dropout_rate=0.0), split)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def adam(params, opt_state, grads):
    updates, opt_state = real.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  adam_state = jax.tree.map(jnp.copy, (real.params, real.opt_state))
  grads = jax.tree.map(lambda x: 1e-3 * x, real.params)

  def adam_once():
    nonlocal adam_state
    adam_state = adam(*adam_state, grads)
    jax.block_until_ready(adam_state)

  sample = jax.jit(real.feed.step_inputs)
  key = jax.random.key(0)
  return {"without dropout": without_dropout.dispatch,
          "matmuls": matmul_chain(real.params, real.batch_size, real.steps_per_dispatch),
          "adam": adam_once,
          "sampling": lambda: jax.block_until_ready(sample(key, real.tables))}


def run(*, batch_sizes: list[int], rounds: int, round_seconds: float, peak_sizes: list[int],
        steps_per_dispatch: int | None = None, profile: bool = False) -> dict:
  """The benchmark's JSON object: the matmul peak, then each batch size against it; with
  `profile`, where the real step's time goes at each batch size ('profile').

  Every path is timed in the same interleaved rounds, so that the ratios (fraction of
  peak, speedup, shares) compare times measured under the same load.
  """
  split = _train_split(np.random.default_rng(0))
  paths = {("peak", n): run_once for n, run_once in peak_paths(peak_sizes).items()}
  reals = {b: RealLoop(bench_config(b, steps_per_dispatch), split) for b in batch_sizes}
  for b, real in reals.items():
    paths[b, "real"], paths[b, "straightforward"] = real.dispatch, straightforward_loop(real, split)
    if profile:
      paths.update({(b, part): run_once for part, run_once in part_paths(real, split).items()})
  load_before = os.getloadavg()[0]
  seconds = _best_seconds(paths, rounds, round_seconds)
  peak_size = max(peak_sizes, key=lambda n: n ** 3 / seconds["peak", n])
  peak = 2 * peak_size ** 3 / seconds["peak", peak_size]
  report = {"device": str(jax.devices()[0].device_kind), "num_devices": jax.device_count(),
            "matmul_peak_flops_per_second": peak, "matmul_peak_size": peak_size,
            "load_average": {"before": load_before, "after": os.getloadavg()[0]}}
  rows, profiles = {}, {}
  for b, real in reals.items():
    real_seconds = seconds[b, "real"] / real.steps_per_dispatch
    flops_per_step = matmul_flops_per_pair(real.params) * b
    rows[b] = {"pairs_per_second": b / real_seconds,
               "straightforward_pairs_per_second": b / seconds[b, "straightforward"],
               "speedup": seconds[b, "straightforward"] / real_seconds,
               "flops_per_second": flops_per_step / real_seconds,
               "fraction_of_peak": flops_per_step / real_seconds / peak,
               "steps_per_dispatch": real.steps_per_dispatch}
    if profile:
      parts = {"matmuls": seconds[b, "matmuls"] / real.steps_per_dispatch,
               "dropout": real_seconds - seconds[b, "without dropout"] / real.steps_per_dispatch,
               "adam": seconds[b, "adam"], "sampling": seconds[b, "sampling"]}
      profiles[str(b)] = {
          "seconds": {"step": real_seconds, **parts, "rest": real_seconds - sum(parts.values())},
          "matmuls_fraction_of_peak": flops_per_step / parts["matmuls"] / peak,
          "page_faults_per_step": {
              "real": page_faults_per_call(real.dispatch) / real.steps_per_dispatch,
              "straightforward": page_faults_per_call(paths[b, "straightforward"])}}
  report.update({key: {str(b): row[key] for b, row in rows.items()} for key in rows[min(rows)]})
  if profile:
    report["profile"] = profiles
  return report


def main(argv: list[str]) -> None:
  del argv
  report = run(batch_sizes=[int(b) for b in FLAGS.batch_sizes], rounds=FLAGS.rounds,
               round_seconds=FLAGS.round_seconds, peak_sizes=[int(n) for n in FLAGS.peak_sizes],
               profile=FLAGS.profile)
  if FLAGS.json:
    print(json.dumps(report))
    return
  print(f"{report['num_devices']} x {report['device']}; matmul peak "
        f"{report['matmul_peak_flops_per_second'] / 1e9:.1f} GFLOP/s (best square float32 "
        f"matmul, n = {report['matmul_peak_size']}, measured in this run); 1-min load "
        f"average {report['load_average']['before']:.2f} before the timing, "
        f"{report['load_average']['after']:.2f} after")
  print("pairs/s: training pairs of one model per second; speedup: real over the "
        "straightforward loop; GFLOP/s: the real step's matmuls; of peak: GFLOP/s / peak")
  print(f"{'batch':>6} {'pairs/s':>10} {'straightforward':>16} {'speedup':>8} "
        f"{'GFLOP/s':>8} {'of peak':>8}")
  for b in report["speedup"]:
    print(f"{b:>6} {report['pairs_per_second'][b]:>10.0f} "
          f"{report['straightforward_pairs_per_second'][b]:>16.0f} "
          f"{report['speedup'][b]:>7.2f}x {report['flops_per_second'][b] / 1e9:>8.1f} "
          f"{report['fraction_of_peak'][b]:>7.0%}")
  for b, profile in report.get("profile", {}).items():
    seconds = profile["seconds"]
    faults = profile["page_faults_per_step"]
    print(f"\nbatch {b}: where the real step's {seconds['step'] * 1e3:.0f} ms go (its "
          f"matmuls alone run at {profile['matmuls_fraction_of_peak']:.0%} of peak; page "
          f"faults per step {faults['real']:,.0f}, straightforward "
          f"{faults['straightforward']:,.0f})")
    for part, how in PARTS.items():
      print(f"  {part:>8} {seconds[part] * 1e3:>8.1f} ms {seconds[part] / seconds['step']:>5.0%}"
            f"  {how}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
