"""The unrolled threefry keys draw exactly jax.random's threefry numbers, in one pass."""

import jax
import numpy as np
import pytest

from acp_jax import threefry


@pytest.mark.parametrize("seed", [0, 7, 2 ** 31 + 5])
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 7), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
def test_bits_are_jax_threefry_bits(seed, shape, dtype):
  key = jax.random.fold_in(jax.random.key(seed), 11)
  np.testing.assert_array_equal(jax.random.bits(threefry.unrolled(key), shape, dtype),
                                jax.random.bits(key, shape, dtype))


def test_64_bit_draws_are_jax_threefry_bits():
  with jax.enable_x64(True):
    key = jax.random.key(5)
    np.testing.assert_array_equal(jax.random.bits(threefry.unrolled(key), (3, 4), np.uint64),
                                  jax.random.bits(key, (3, 4), np.uint64))


def test_keys_split_fold_and_draw_dropout_masks_as_threefry_keys():
  key = jax.random.key(3)
  unrolled = threefry.unrolled(key)
  np.testing.assert_array_equal(jax.random.key_data(jax.random.split(unrolled, 4)),
                                jax.random.key_data(jax.random.split(key, 4)))
  np.testing.assert_array_equal(jax.random.key_data(jax.random.fold_in(unrolled, 9)),
                                jax.random.key_data(jax.random.fold_in(key, 9)))
  # Under vmap over seeds, as the training step draws them.
  masks = lambda keys: jax.vmap(lambda k: jax.random.bernoulli(k, 0.6, (64, 33)))(keys)
  keys = jax.random.split(key, 3)
  np.testing.assert_array_equal(masks(jax.vmap(threefry.unrolled)(keys)), masks(keys))


def test_draws_compile_to_one_pass_without_a_loop():
  draw = lambda key: jax.random.bernoulli(key, 0.6, (256, 128))
  compiled = lambda key: jax.jit(draw).lower(key).compile().as_text()
  if jax.default_backend() == "cpu":  # what UNROLLED is for: JAX's CPU lowering loops
    assert " while(" in compiled(jax.random.key(0))
  assert " while(" not in compiled(threefry.unrolled(jax.random.key(0)))
