"""The media stream: pairs by (seed, step), each process's share, restart at a step, workers."""

import jax
import numpy as np
import pytest

import fakes
from acp_jax import feeds
from acp_jax import generated
from acp_jax import inputs
from acp_jax import objectives


@pytest.fixture(scope="module")
def splits():
  return fakes.with_media(generated.make_splits())


class Recording(list):
  """A random-access source that remembers which records were read."""

  def __init__(self, records):
    super().__init__(records)
    self.read = []

  def __getitem__(self, i):
    self.read.append(i)
    return super().__getitem__(i)


def test_pairs_depend_on_the_seed_and_step_only(splits):
  sample = feeds.PairSampler.of(splits["train"], 16)
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(a, b))
  assert same(sample(0, 5), feeds.PairSampler.of(splits["train"], 16)(0, 5))
  assert not same(sample(0, 5), sample(0, 6))
  assert not same(sample(0, 5), sample(1, 5))


def test_each_process_reads_only_its_share(splits):
  split = splits["train"]
  sampler = feeds.PairSampler.of(split, 16)
  reads, batches = [], []
  for rows in (slice(0, 8), slice(8, 16)):  # process 0 and 1 of 2
    images, music = Recording(split.images.source), Recording(split.music.source)
    batches.append(feeds.ReadStep(sampler, images, music, ("pixels", "waveform"), (0, 1),
                                  rows)(7))
    reads.append((images.read, music.read))
  for s, seed in enumerate((0, 1)):
    image_B, music_B, label_B = sampler(seed, 7)
    for p, rows in enumerate((slice(0, 8), slice(8, 16))):
      # Process p read its rows' records of every seed, in order, and nothing else.
      assert reads[p][0][8 * s:8 * (s + 1)] == image_B[rows].tolist()
      assert reads[p][1][8 * s:8 * (s + 1)] == music_B[rows].tolist()
      np.testing.assert_array_equal(batches[p]["label"][s], label_B[rows])
      np.testing.assert_array_equal(
          batches[p]["image"][s], np.stack([split.images.source[i]["pixels"]
                                            for i in image_B[rows]]))
  assert [len(r) for read in reads for r in read] == [16] * 4


def _feed(splits, **overrides):
  config = fakes.small_media_config("l3net", **overrides)
  return feeds.StreamFeed(config, splits, inputs.make_mesh(config.batch_size),
                          objectives.create_objective(config)), config


def test_stream_restarts_at_the_checkpointed_step(splits):
  feed, config = _feed(splits)
  whole = feed.train_data(0, 8)
  batches = [jax.device_get(next(whole)) for _ in range(4)]
  assert batches[0]["image"].shape == (2, 1, 16, 16, 16, 3)  # K x S x B x H x W x 3
  resumed = jax.device_get(next(feed.train_data(4, 8)))
  jax.tree.map(np.testing.assert_array_equal, resumed, batches[2])
  with pytest.raises(StopIteration):
    next(whole)
  feed.close()


def test_worker_processes_read_the_batches_the_process_would(splits):
  in_process, config = _feed(splits)
  workers, _ = _feed(splits, input={**config.input.to_dict(), "workers": 1})
  expected = [jax.device_get(batch) for batch in in_process.train_data(2, 8)]
  got = [jax.device_get(batch) for batch in workers.train_data(2, 8)]
  assert len(got) == len(expected) == 3
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  workers.close()
