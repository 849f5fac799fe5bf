"""Item tables in device memory and balanced correspondence pairs drawn from them.

Training never materialises pairs on the host: each split's items become a `Tables`
(the model inputs of acp_jax/inputs.py), and every step draws fresh
pairs on device as item indices, half true and half false correspondences, then
gathers their features (`gather`, the seam a model with other inputs replaces).
"""

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from acp_jax import UserError
from acp_jax import items
from acp_jax import labels


@flax.struct.dataclass
class Tables:
  """One split's model inputs plus what balanced sampling needs.

  The item rows are what the model reads (see acp_jax/inputs.py): N x D standardised
  features, or media inputs such as N x H x W x 3 uint8 pixels and M x T x F
  log-spectrograms; None where only the sampling is wanted (acp_jax/feeds.py).

  `music_by_class_M` lists the music rows sorted by class, so the rows of class c
  are `music_by_class_M[music_start_C[c] : music_start_C[c] + music_count_C[c]]`
  and a draw from 'any class but c' is one uniform draw with that block skipped.
  """
  image_NxD: jax.Array
  music_MxD: jax.Array
  image_labels_N: jax.Array
  music_labels_M: jax.Array
  music_by_class_M: jax.Array
  music_start_C: jax.Array
  music_count_C: jax.Array


def make_tables(image_NxD: np.ndarray | None, music_MxD: np.ndarray | None,
                image_labels_N: np.ndarray, music_labels_M: np.ndarray) -> Tables:
  """Host (numpy) tables of one split; place them on device with `jax.device_put`."""
  music_count_C = np.bincount(music_labels_M, minlength=len(labels.CLASSES))
  return Tables(
      image_NxD=image_NxD, music_MxD=music_MxD,
      image_labels_N=np.asarray(image_labels_N, np.int32),
      music_labels_M=np.asarray(music_labels_M, np.int32),
      music_by_class_M=np.argsort(music_labels_M, kind="stable").astype(np.int32),
      music_start_C=(np.cumsum(music_count_C) - music_count_C).astype(np.int32),
      music_count_C=music_count_C.astype(np.int32))


def check_sampleable(split: items.Split, name: str) -> None:
  """Raises UserError unless every image class has music of its own and of another class."""
  music_count_C = np.bincount(split.music.labels_N, minlength=len(labels.CLASSES))
  for c in np.unique(split.images.labels_N):
    problem = ("no music of that class" if music_count_C[c] == 0 else
               "only music of that class" if music_count_C[c] == music_count_C.sum() else None)
    if problem:
      raise UserError(
          f"the {name} split has images of class {labels.CLASSES[c]!r} but {problem} "
          f"(music per class: {dict(zip(labels.CLASSES, music_count_C.tolist()))}), so "
          "balanced true/false pairs cannot be drawn; use a split with music of every class.")


def music_rows(xp, tables: Tables, class_B, label_B, randint: Callable):
  """Music rows of pairs: uniform within the image's class `class_B` for true pairs
  (label 1), uniform among the other classes for false ones.

  `xp` is numpy (the host sampler of acp_jax/feeds.py) or jax.numpy, `randint(span_B)`
  a uniform draw in [0, span_B) of either, so that both sample by the same rule.
  """
  start_B, count_B = tables.music_start_C[class_B], tables.music_count_C[class_B]
  num_music = tables.music_by_class_M.shape[0]
  offset_B = randint(xp.where(label_B == 1, count_B, num_music - count_B))
  sorted_B = xp.where(label_B == 1, start_B + offset_B,
                      xp.where(offset_B < start_B, offset_B, offset_B + count_B))
  return tables.music_by_class_M[sorted_B]


def sample_pairs(key: jax.Array, tables: Tables,
                 batch_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Balanced pairs as item indices: even rows true, odd rows false correspondences.

  Images are uniform; a true pair's music is uniform within the image's class, a
  false pair's uniform among the music of the other classes. Alternating rows keep
  every contiguous shard of the batch balanced too.

  Returns:
    image_B, music_B (rows of the tables) and label_B (1 = true correspondence).
  """
  image_key, music_key = jax.random.split(key)
  image_B = jax.random.randint(image_key, (batch_size,), 0, tables.image_labels_N.shape[0])
  label_B = (jnp.arange(batch_size) % 2 == 0).astype(jnp.int32)
  music_B = music_rows(jnp, tables, tables.image_labels_N[image_B], label_B,
                       lambda span_B: jax.random.randint(music_key, (batch_size,), 0, span_B))
  return image_B, music_B, label_B


def sample_items(key: jax.Array, tables: Tables,
                 batch_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Images uniform, each with a uniform music item of its own class (as Emo-CLIM's batches).

  Returns:
    image_B, music_B (rows of the tables) and class_B, the class of both items of row b.
  """
  image_key, music_key = jax.random.split(key)
  image_B = jax.random.randint(image_key, (batch_size,), 0, tables.image_labels_N.shape[0])
  class_B = tables.image_labels_N[image_B]
  music_B = music_rows(jnp, tables, class_B, jnp.ones_like(class_B),
                       lambda span_B: jax.random.randint(music_key, (batch_size,), 0, span_B))
  return image_B, music_B, class_B


def gather(tables: Tables, image_B: jax.Array, music_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The model inputs of the pairs (image_B, music_B): (image_BxD, music_BxD)."""
  return tables.image_NxD[image_B], tables.music_MxD[music_B]
