"""Feeds: where the training loop's step inputs and evaluation's embeddings come from.

One interface (`Feed`), two implementations, chosen by `create_feed`:
  * `TableFeed`: every item's model input (acp_jax/inputs.py) made once and held in
    device memory, pairs sampled on device each step by the objective (acp_jax/pairs.py).
    ACP-Net's, and the baselines' on small corpora (`config.input.stream = False`).
  * `StreamFeed`: media read per batch from the items' records, model inputs made on
    device per batch. The media configs' records are read by index
    (`items.Items.source`, e.g. `tfds.data_source` over ArrayRecord) in a Grain pipeline:

  step t -> PairSampler: balanced pairs by index, the rule of pairs.sample_pairs
         -> this process's rows of the batch: their records read and stacked
            (uint8 pixels, int16 waveforms, or features) in `config.input.workers`
            worker processes
         -> `config.input.prefetch` dispatches buffered on the host, then placed
            on the devices, `config.input.device_prefetch` of them ahead of the step
  step   -> model inputs made on device per batch (inputs.model_input: resize,
            log-spectrogram) and standardised.

  The pairs of step t of seed s are a function of (config.seed + s, t) alone, so the
  stream's position is the train state's step, which the checkpoint holds: a resumed
  run reads the batches an uninterrupted one does. Host memory is set by the batch, the
  workers and the prefetch depths, not by the corpus: only the items' labels and ids
  stay in memory. Evaluation streams too: each item of a split is read and embedded
  once, in batches.

`Feed.embed` is the one way a split's items are embedded: for validation in the loop,
for the evaluators at the end of a run and on a restored checkpoint, and for probes.
"""

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import functools
import itertools
from typing import Any, Protocol

from absl import flags
import grain
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from acp_jax import UserError
from acp_jax import inputs
from acp_jax import items
from acp_jax import objectives
from acp_jax import pairs

Standardizers = tuple[inputs.Standardizer | None, inputs.Standardizer | None]


class Feed(Protocol):
  """Where the training loop's step inputs and evaluation embeddings come from."""
  standardizers: Standardizers  # (image, music); None for an input read as it is (pixels)
  fixed: dict[str, dict[str, jax.Array]]  # each split's fixed pairs, on every device
  item_shapes: tuple[tuple[int, ...], tuple[int, ...]]  # one item's (image, music) model input
  per_step: bool  # train data has a leading axis of steps per dispatch (and then seeds)
  train_spec: Any  # the train data of a dispatch, or its shapes (jax.ShapeDtypeStruct)

  def train_data(self, step: int, num_steps: int) -> Iterator[Any]:
    """What each dispatch of steps `step` .. `num_steps - 1` reads (`step_inputs` gets one
    step's of one seed)."""

  def step_inputs(self, key: jax.Array, step_data: Any
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(image_BxD, music_BxD, target_B) of one step of one seed, traced in the step: the
    objective's targets (pair labels, or item classes for a contrastive objective)."""

  def embed(self, model: Any, variables_S: dict, split: str) -> tuple[jax.Array, jax.Array]:
    """(image_SxNxE, music_SxMxE): every seed's tower embeddings of a split's items."""

  def close(self) -> None:
    """Stops what `train_data` started."""


def create_feed(config: ml_collections.ConfigDict, splits: dict[str, items.Split],
                mesh: jax.sharding.Mesh, objective: objectives.Objective,
                standardizers: Standardizers | None = None) -> Feed:
  """The feed `config` reads (`inputs.streams`); `standardizers`: a restored run's (None: fit
  on the training split)."""
  feed = StreamFeed if inputs.streams(config) else TableFeed
  return feed(config, splits, mesh, objective, standardizers)


def sample_inputs(key: jax.Array, tables: pairs.Tables, batch_size: int, mesh: jax.sharding.Mesh,
                  sample: Callable = pairs.sample_pairs) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(image_BxD, music_BxD, target_B) drawn on device from item tables by `sample`.

  `sample(key, tables, batch_size) -> (image_B, music_B, target_B)` is an objective's
  draw (acp_jax/objectives.py); the default, balanced pairs with their labels.
  """
  image_B, music_B, target_B = jax.lax.with_sharding_constraint(
      sample(key, tables, batch_size), NamedSharding(mesh, P("data")))
  return *pairs.gather(tables, image_B, music_B), target_B


class TableFeed:
  """Every split's model inputs in device memory; pairs sampled on device each step."""
  per_step = False

  def __init__(self, config: ml_collections.ConfigDict, splits: dict[str, items.Split],
               mesh: jax.sharding.Mesh, objective: objectives.Objective,
               standardizers: Standardizers | None = None):
    image_kind, music_kind = inputs.kinds(config)
    rows = {name: (inputs.model_inputs(split.images, image_kind, config),
                   inputs.model_inputs(split.music, music_kind, config))
            for name, split in splits.items()}
    if standardizers is None:
      image_rows, music_rows = rows["train"]
      standardizers = (None if image_kind == "pixels" else inputs.Standardizer.fit(image_rows),
                       inputs.Standardizer.fit(music_rows))
    self.standardizers = standardizers
    self.tables = {name: inputs.replicate(pairs.make_tables(
        inputs.standardize(standardizers[0], image_rows),
        inputs.standardize(standardizers[1], music_rows),
        splits[name].images.labels_N, splits[name].music.labels_N), mesh)
        for name, (image_rows, music_rows) in rows.items()}
    self.fixed = {name: inputs.replicate(inputs.fixed_pairs(split), mesh)
                  for name, split in splits.items()}
    self.train_spec = self.tables["train"]
    self.item_shapes = tuple(x.shape[1:] for x in rows["train"])
    self.batch_size, self.mesh, self.sample = config.batch_size, mesh, objective.sample

  def train_data(self, step: int, num_steps: int) -> Iterator[pairs.Tables]:
    return itertools.repeat(self.tables["train"])

  def step_inputs(self, key: jax.Array, tables: pairs.Tables
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    return sample_inputs(key, tables, self.batch_size, self.mesh, self.sample)

  def embed(self, model: Any, variables_S: dict, split: str) -> tuple[jax.Array, jax.Array]:
    return _embed_tables(model, self.batch_size, variables_S, self.tables[split])

  def close(self) -> None:
    pass


@functools.partial(jax.jit, static_argnums=(0, 1))
def _embed_tables(model: Any, batch_size: int, variables_S: dict, tables: pairs.Tables
                  ) -> tuple[jax.Array, jax.Array]:
  embed = lambda variables: (
      inputs.embed_rows(model, variables, tables.image_NxD, "embed_image", batch_size),
      inputs.embed_rows(model, variables, tables.music_MxD, "embed_music", batch_size))
  return jax.vmap(embed)(variables_S)


@dataclasses.dataclass(frozen=True)
class PairSampler:
  """Balanced pairs on the host, by index: pairs.sample_pairs's rule, numpy's draws."""
  tables: pairs.Tables  # numpy; only the labels and the music class blocks are read
  batch_size: int

  @classmethod
  def of(cls, split: items.Split, batch_size: int) -> "PairSampler":
    return cls(pairs.make_tables(None, None, split.images.labels_N, split.music.labels_N),
               batch_size)

  def __call__(self, seed: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image_B, music_B, label_B) of step `step` of seed `seed`: even rows true pairs."""
    rng = np.random.default_rng((seed, step))
    image_B = rng.integers(0, len(self.tables.image_labels_N), self.batch_size)
    label_B = (np.arange(self.batch_size) % 2 == 0).astype(np.int32)
    music_B = pairs.music_rows(np, self.tables, self.tables.image_labels_N[image_B], label_B,
                               lambda span_B: rng.integers(0, span_B))
    return image_B, music_B, label_B


@dataclasses.dataclass(frozen=True)
class ReadStep:
  """Step t -> this process's rows of every seed's pairs, read: {image, music, label}, S x b."""
  sampler: PairSampler
  images: Sequence[dict[str, Any]]
  music: Sequence[dict[str, Any]]
  fields: tuple[str, str]    # record field of the image and the music input
  seeds: tuple[int, ...]
  rows: slice                # this process's rows of the global batch

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    read = {"image": [], "music": [], "label": []}
    for seed in self.seeds:
      image_b, music_b, label_b = (x[self.rows] for x in self.sampler(seed, int(step)))
      read["image"].append(inputs.read_field(self.images, self.fields[0], image_b))
      read["music"].append(inputs.read_field(self.music, self.fields[1], music_b))
      read["label"].append(label_b)
    return {key: np.stack(value) for key, value in read.items()}


@dataclasses.dataclass(frozen=True)
class ReadItems:
  """Batch k -> this process's rows of items k*B .. (k+1)*B - 1 (the last repeated past the end)."""
  source: Sequence[dict[str, Any]]
  field: str
  num_items: int
  batch_size: int
  rows: slice

  def __call__(self, k: int) -> np.ndarray:
    items_B = np.minimum(k * self.batch_size + np.arange(self.batch_size), self.num_items - 1)
    return inputs.read_field(self.source, self.field, items_B[self.rows])


def local_rows(sharding: jax.sharding.Sharding, batch_size: int, axis: int = 0) -> slice:
  """The rows of a batch whose `axis` is sharded by `sharding` that this process holds."""
  shape = [1] * len(sharding.spec) if isinstance(sharding, NamedSharding) else [1]
  shape[axis] = batch_size
  bounds = sorted(index[axis].indices(batch_size)[:2]
                  for index in sharding.addressable_devices_indices_map(tuple(shape)).values())
  return slice(bounds[0][0], bounds[-1][1])


def loader(dataset: grain.MapDataset, options: ml_collections.ConfigDict,
           sharding: jax.sharding.Sharding, workers: int) -> grain.DatasetIterator:
  """Iterates `dataset` in `workers` processes (0: threads of this one), buffered, as
  arrays placed by `sharding`."""
  stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=options.read_threads,
                                                     prefetch_buffer_size=options.prefetch))
  if workers:
    # Grain's workers read absl flags, which a caller outside an absl app (a test, a
    # notebook) has not parsed: the defaults are what it wants.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    stream = stream.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=options.prefetch))
  stream = grain.experimental.ThreadPrefetchIterDataset(stream,
                                                        prefetch_buffer_size=options.prefetch)
  place = lambda x: jax.make_array_from_process_local_data(sharding, x)
  stream = stream.map(lambda batch: jax.tree.map(place, batch))
  return iter(grain.experimental.ThreadPrefetchIterDataset(
      stream, prefetch_buffer_size=options.device_prefetch))


def _fit_standardizer(its: items.Items, kind: str,
                      config: ml_collections.ConfigDict) -> inputs.Standardizer | None:
  """Training statistics of a float input from `config.input.standardizer_items` items
  (a seeded sample), read in batches."""
  if kind == "pixels":
    return None
  num = len(its.ids)
  sample = np.sort(np.random.default_rng(config.seed).permutation(num)[
      :min(num, config.input.standardizer_items)])
  count, total_D, squares_D = 0, 0.0, 0.0
  for start in range(0, len(sample), config.batch_size):
    rows = sample[start:start + config.batch_size]
    x = np.asarray(inputs.model_input(
        kind, jnp.asarray(inputs.read_field(its.source, inputs.FIELDS[kind], rows)), config),
        np.float64)
    x = x.reshape(-1, x.shape[-1])
    count, total_D, squares_D = count + len(x), total_D + x.sum(0), squares_D + (x ** 2).sum(0)
  return inputs.Standardizer.of_moments(count, total_D, squares_D)


def make_embed(model: Any, method: str, kind: str, standardizer: inputs.Standardizer | None,
               config: ml_collections.ConfigDict) -> Callable[[dict, jax.Array], jax.Array]:
  """(variables_S, records' field B x ...) -> S x B x E: `method` of model for every seed."""

  @jax.jit
  def embed(variables_S, raw_BxX):
    x_BxD = inputs.standardize(standardizer, inputs.model_input(kind, raw_BxX, config))
    return jax.vmap(lambda v: model.apply(v, x_BxD, method=method))(variables_S)

  return embed


def embed_items(embed: Callable[[dict, jax.Array], jax.Array], variables_S: dict,
                its: items.Items, kind: str, config: ml_collections.ConfigDict,
                sharding: jax.sharding.Sharding) -> jax.Array:
  """S x N x E: `embed` (make_embed) of every item, streamed in batches of
  `config.batch_size`. `sharding` places a batch (its rows over devices, or on one
  device); each process reads its rows.
  """
  batch_size, num = config.batch_size, len(its.ids)
  dataset = grain.MapDataset.range(-(-num // batch_size)).map(ReadItems(
      its.source, inputs.FIELDS[kind], num, batch_size, local_rows(sharding, batch_size)))
  # Read by threads: worker processes would start anew at each evaluation.
  batches = loader(dataset, config.input, sharding, workers=0)
  try:
    embedded = [embed(variables_S, raw_BxX) for raw_BxX in batches]
  finally:
    batches.close()
  return jnp.concatenate(embedded, axis=1)[:, :num]


class StreamFeed:
  """A `Feed` that reads the media per batch (see the module docstring)."""
  per_step = True

  def __init__(self, config: ml_collections.ConfigDict, splits: dict[str, items.Split],
               mesh: jax.sharding.Mesh, objective: objectives.Objective,
               standardizers: Standardizers | None = None):
    if objective != objectives.Correspondence():
      raise UserError(
          f"config.objective={objective.name!r} (class_loss_weight "
          f"{getattr(objective, 'class_loss_weight', 0)}) trains on item classes or batches of "
          "items, which streamed media do not provide yet; train it on features "
          "(configs/contrastive.py) or set --config.input.stream=False to hold the media in "
          "device memory.")
    self.config, self.splits, self.mesh = config, splits, mesh
    self.kinds = inputs.kinds(config)
    train = splits["train"]
    if train.images.source is None or train.music.source is None:
      inputs.no_media(config, next(kind for kind in self.kinds if kind != "features"))
    if standardizers is None:
      standardizers = (_fit_standardizer(train.images, self.kinds[0], config),
                       _fit_standardizer(train.music, self.kinds[1], config))
    self.standardizers = standardizers
    self.fixed = {name: inputs.replicate(inputs.fixed_pairs(split), mesh)
                  for name, split in splits.items()}
    self.item_shapes = inputs.item_shapes(train, config)
    self.sampler = PairSampler.of(train, config.batch_size)
    self.train_sharding = NamedSharding(mesh, P(None, None, "data"))
    record = lambda items, kind: np.asarray(items.source[0][inputs.FIELDS[kind]])
    self.train_spec = {
        name: jax.ShapeDtypeStruct(
            (config.steps_per_dispatch, config.num_seeds, config.batch_size, *x.shape), x.dtype,
            sharding=self.train_sharding)
        for name, x in (("image", record(train.images, self.kinds[0])),
                        ("music", record(train.music, self.kinds[1])),
                        ("label", np.zeros((), np.int32)))}
    self._open, self._embeds = [], {}

  def train_data(self, step: int, num_steps: int) -> Iterator[dict[str, jax.Array]]:
    """Dispatches of steps `step` .. `num_steps - 1`: {image, music, label}, K x S x B."""
    config, train = self.config, self.splits["train"]
    sharding = self.train_sharding
    read = ReadStep(self.sampler, train.images.source, train.music.source,
                    tuple(inputs.FIELDS[kind] for kind in self.kinds),
                    tuple(config.seed + s for s in range(config.num_seeds)),
                    local_rows(sharding, config.batch_size, axis=2))
    dataset = grain.MapDataset.range(step, num_steps).map(read).batch(config.steps_per_dispatch)
    self._open.append(loader(dataset, config.input, sharding, config.input.workers))
    return self._open[-1]

  def step_inputs(self, key: jax.Array, batch: dict[str, jax.Array]
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    del key  # the pairs were drawn on the host, by step
    image, music = (inputs.standardize(std, inputs.model_input(kind, batch[name], self.config))
                    for std, kind, name in zip(self.standardizers, self.kinds, ("image", "music")))
    return image, music, batch["label"]

  def embed(self, model: Any, variables_S: dict, split: str) -> tuple[jax.Array, jax.Array]:
    sharding = NamedSharding(self.mesh, P("data"))
    if model not in self._embeds:  # compiled once per run, not per evaluation
      self._embeds[model] = [make_embed(model, method, kind, std, self.config)
                             for method, kind, std in zip(("embed_image", "embed_music"),
                                                          self.kinds, self.standardizers)]
    both = (self.splits[split].images, self.splits[split].music)
    return tuple(embed_items(embed, variables_S, its, kind, self.config, sharding)
                 for embed, its, kind in zip(self._embeds[model], both, self.kinds))

  def close(self) -> None:
    for iterator in self._open:
      iterator.close()
    self._open = []
