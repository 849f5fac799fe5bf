"""Threefry keys whose random bits XLA:CPU draws in one fused pass.

JAX's threefry hash runs 20 rounds. On CPU, JAX lowers them as a 5-iteration loop,
which keeps compiles short. XLA:CPU then runs 5 passes over the output, with copies
in between.

Dropout draws one number per activation: about 5.5M per step at batch 4096 with
configs/acp.py. `UNROLLED` is the same generator with its rounds written out, so XLA
fuses them into one pass. It has the same key data, seed, split and fold-in, and the
same bits as `jax.random.key`'s default threefry with `jax_threefry_partitionable`
(JAX's default). `unrolled(key)` re-types a threefry key for it.
"""

import math

import jax
from jax.extend import random as jex_random
import numpy as np

_THREEFRY = jex_random.threefry_prng_impl
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _hash(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array
          ) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 with 20 rounds (Salmon et al. 2011), unrolled."""
  ks = (k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA))
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for rotation in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = ((x2 << np.uint32(rotation)) | (x2 >> np.uint32(32 - rotation))) ^ x1
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
  """jax.random's partitionable threefry bits: element i hashes the count (0, i)."""
  size = math.prod(shape)
  if size >= 2 ** 32:
    raise NotImplementedError(f"{size:,} random numbers in one draw: at most 2**32 - 1")
  counts = jax.lax.iota(np.uint32, size).reshape(shape)
  bits1, bits2 = _hash(key[0], key[1], np.zeros((), np.uint32), counts)
  dtype = np.dtype(f"uint{bit_width}")
  if bit_width == 64:
    return (bits1.astype(dtype) << dtype.type(32)) | bits2.astype(dtype)
  return (bits1 ^ bits2).astype(dtype)


UNROLLED = jex_random.define_prng_impl(
    key_shape=_THREEFRY.key_shape, seed=_THREEFRY.seed, split=_THREEFRY.split,
    fold_in=_THREEFRY.fold_in, random_bits=_random_bits, name="threefry2x32_unrolled",
    tag="fru")


def unrolled(key: jax.Array) -> jax.Array:
  """The threefry `key` as an UNROLLED key: the same draws, in one fused pass each."""
  return jax.random.wrap_key_data(jax.random.key_data(key), impl=UNROLLED)
