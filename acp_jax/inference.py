"""A trained correspondence model at inference: restored from a run, embedding, scoring pairs.

Probing, retrieval and the report use one seed of a run: by default the one with the
best validation accuracy. A pair's score is the match log-odds, logit(true) -
logit(false): it ranks like the match probability without saturating at 1.0, where
float32 probabilities would tie.
"""

from collections.abc import Callable
import dataclasses
import functools

from etils import epath
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from acp_jax import UserError
from acp_jax import checkpoint
from acp_jax import data
from acp_jax import inputs
from acp_jax import models
from acp_jax import pairs
from acp_jax import retrieval
from acp_jax import stream


@functools.partial(jax.jit, static_argnames=("module", "method"))
def apply(module: nn.Module, variables: dict, x_NxD: jax.Array, method: str) -> jax.Array:
  """`module.apply` in inference mode, one compiled program per module, method and shape."""
  return module.apply(variables, x_NxD, method=method)


@functools.cache
def _pair_log_odds(module: nn.Module) -> Callable[..., jax.Array]:
  """`(variables, music_BxH, image_BxH) -> B` log-odds of projected embeddings (H), one
  function (and compiled program) per module."""

  def log_odds(variables: dict, music_BxH: jax.Array, image_BxH: jax.Array) -> jax.Array:
    logits_Bx2 = module.apply(variables, image_BxH, music_BxH, method="fuse_projected")
    return logits_Bx2[:, 1] - logits_Bx2[:, 0]

  return log_odds


def match_scores(module: nn.Module, variables: dict, music_MxE: np.ndarray,
                 image_NxE: np.ndarray, block: int) -> np.ndarray:
  """score_MxN, the match log-odds of every (music, image) pair of tower embeddings.

  Each embedding is projected through its half of the fusion head's first layer once;
  only the rest of the head runs per pair (`block` pairs per call).
  """
  music_MxH = apply(module, variables, music_MxE, "project_music")
  image_NxH = apply(module, variables, image_NxE, "project_image")
  score_fn = jax.tree_util.Partial(_pair_log_odds(module), variables)
  return np.asarray(retrieval.score_matrix(score_fn, music_MxH, image_NxH, block))


@dataclasses.dataclass(frozen=True)
class Model:
  """One seed of a trained run, with the input standardisation it was trained with."""
  config: ml_collections.ConfigDict  # the run's
  module: nn.Module
  variables: dict              # this seed's {'params', 'batch_stats'}, no seed axis
  image_standardizer: pairs.Standardizer | None  # None: rows read as they are (pixels)
  music_standardizer: pairs.Standardizer | None
  seed: int                    # index among the run's seeds
  num_seeds: int
  val_accuracy: float          # this seed's best validation accuracy

  @property
  def description(self) -> str:
    return (f"seed index {self.seed} of {self.num_seeds} (validation accuracy "
            f"{100 * self.val_accuracy:.2f}%)")

  def embed_rows(self, rows_NxD: np.ndarray, method: str) -> np.ndarray:
    """Tower embeddings of standardised input rows, `config.batch_size` rows per call."""
    batch = self.config.batch_size
    pad = -len(rows_NxD) % batch  # every call the same shape: one compiled program
    padded = np.concatenate([rows_NxD, np.zeros((pad, *rows_NxD.shape[1:]), rows_NxD.dtype)])
    chunks = [apply(self.module, self.variables, padded[i:i + batch], method)
              for i in range(0, len(padded), batch)]
    return np.concatenate(jax.device_get(chunks))[:len(rows_NxD)]

  def embed(self, split: data.Split) -> tuple[np.ndarray, np.ndarray]:
    """(image_NxE, music_MxE) of a prepared split's items (`prepare`), as training reads them;
    a split whose media stream (acp_jax/stream.py) is read in batches on one device."""
    if inputs.streams(self.config):
      variables_S = jax.tree.map(lambda x: x[None], self.variables)
      one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      return tuple(np.asarray(stream.embed_items(
          stream.make_embed(self.module, method, kind, std, self.config), variables_S, items,
          kind, self.config, one_device)[0])
          for items, method, kind, std in zip(
              (split.images, split.music), ("embed_image", "embed_music"),
              inputs.kinds(self.config), (self.image_standardizer, self.music_standardizer)))
    tables = pairs.make_tables(split, self.image_standardizer, self.music_standardizer)
    return (self.embed_rows(np.asarray(tables.image_NxD), "embed_image"),
            self.embed_rows(np.asarray(tables.music_MxD), "embed_music"))

  def scores(self, music_MxE: np.ndarray, image_NxE: np.ndarray, block: int) -> np.ndarray:
    return match_scores(self.module, self.variables, music_MxE, image_NxE, block)


def best_seed(val_accuracy_S: np.ndarray, seed: int | None) -> int:
  """`seed` if given (checked), else the seed with the best validation accuracy."""
  num_seeds = len(val_accuracy_S)
  if seed is None:
    return int(np.argmax(val_accuracy_S))
  if not 0 <= seed < num_seeds:
    raise UserError(f"seed index {seed} is out of range: the run trained {num_seeds} seed(s), "
                     f"0 to {num_seeds - 1}")
  return seed


def from_run(workdir: epath.PathLike, *, dataset: str | None = None, data_dir: str | None = None,
             seed: int | None = None) -> tuple[Model, dict[str, data.Split]]:
  """One seed of the run in `workdir` (default: best validation) and its dataset's splits.

  The splits are prepared as the run's model reads them (acp_jax/inputs.py).

  Args:
    workdir: a training run's workdir.
    dataset: None, or the dataset the caller expects the run to be of.
    data_dir: TFDS data dir; None: the run's.
    seed: index of the seed to use; None: the best by validation accuracy.

  Raises:
    FileNotFoundError: no best checkpoint in `workdir`.
    ValueError: the run is of another dataset than `dataset`, or its params do not fit
      the model its config.json describes (an edited config.json, another version).
  """
  best = checkpoint.load_best(workdir)
  config = best.config
  if dataset is not None and dataset != config.dataset:
    raise UserError(f"{workdir} holds a run on {config.dataset}, not {dataset}; use a run of "
                     f"{dataset} or leave --config.dataset unset")
  splits = data.load_splits(config.dataset, data_dir or config.data_dir)
  if not inputs.streams(config):
    splits = {name: inputs.prepare(split, config) for name, split in splits.items()}
  module = models.create_model(config)
  image_kind, music_kind = inputs.kinds(config)
  expected = jax.eval_shape(module.init, jax.random.key(0),
                            inputs.first_input(splits["train"].images, image_kind, config),
                            inputs.first_input(splits["train"].music, music_kind, config))
  saved = {"params": best.params, "batch_stats": best.batch_stats}
  shapes = lambda tree, skip: jax.tree.map(lambda x: tuple(x.shape[skip:]), tree)
  if shapes(saved, 1) != shapes({"batch_stats": {}, **expected}, 0):  # without the seed axis
    fields = ", ".join(f"{k}={config[k]}" for k in checkpoint.STATE_FIELDS if k in config)
    raise UserError(
        f"the checkpoint in {workdir} does not match its config.json ({fields}): the saved "
        "params have other layers or shapes. Restore the run's config.json, or train again.")
  s = best_seed(best.val_accuracy_S, seed)
  return Model(config=config, module=module, variables=best.seed_variables(s),
               image_standardizer=best.image_standardizer,
               music_standardizer=best.music_standardizer, seed=s,
               num_seeds=len(best.val_accuracy_S),
               val_accuracy=float(best.val_accuracy_S[s])), splits
