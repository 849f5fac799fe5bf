"""The in-process build engine: every item's features on this machine, streaming.

Images are decoded in threads and embedded in batches as they come, songs are
described in a process pool, and only the feature matrices and small item records
stay in memory.
"""

import collections
from collections.abc import Iterator, Sequence
import concurrent.futures
import dataclasses
import multiprocessing
import os

from etils import epath
import numpy as np
from tqdm import tqdm

from acp_jax.features import media
from acp_jax.features import music
from tfds_imac.imac import config
from tfds_imac.imac import corpus
from tfds_imac.imac import extract


@dataclasses.dataclass(frozen=True)
class Extracted:
  """The kept items and their features: all a build holds in memory."""
  images: list[corpus.Image]
  image_feat_NxD: np.ndarray
  segments: list[corpus.Segment]
  music_feat_MxD: np.ndarray


def extract_items(images: list[corpus.Image], songs: list[corpus.Song],
                  cfg: config.ImacConfig, encoders: config.Encoders, log: corpus.SkipLog
                  ) -> Extracted:
  """The kept items of a scanned corpus and their features; skips go to `log`."""
  kept_images, image_feat_NxD = _extract_images(images, cfg, encoders, log)
  segments, music_feat_MxD = _extract_music(songs, cfg.descriptor, encoders.music_weights, log)
  return Extracted(kept_images, image_feat_NxD, segments, music_feat_MxD)


def _extract_images(images: list[corpus.Image], cfg: config.ImacConfig,
                    encoders: config.Encoders, log: corpus.SkipLog
                    ) -> tuple[list[corpus.Image], np.ndarray]:
  """Kept images and their N x D features; decoded in threads, embedded in batches.

  At most `decode_ahead` decoded images wait for the embedder; the features fill one
  preallocated matrix (rows past the kept count are never written, so never paged in).
  """
  embedder = extract.make_embedder(encoders.image, encoders.image_weights, cfg.inception_seed,
                                   cfg.image_batch)
  feat_NxD = np.empty((len(images), embedder.dim), np.float32)
  kept: list[corpus.Image] = []
  batch: list[tuple[corpus.Image, np.ndarray]] = []

  def embed_batch():
    feat_BxD, reasons = extract.embed_image_batch(embedder, np.stack([p for _, p in batch]))
    for (image, _), feat, reason in zip(batch, feat_BxD, reasons):
      if reason:
        log.skip("image", corpus.image_file(image), reason)
      else:
        feat_NxD[len(kept)] = feat
        kept.append(image)
    bar.update(len(batch))
    batch.clear()

  paths = [image.path for image in images]
  with (concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool,
        tqdm(total=len(images), desc="IMAC images", unit="image", disable=not images) as bar):
    for image, (pixels, reason) in zip(images, _bounded_map(
        pool, media.load_image, paths, cfg.image_size, cfg.min_image_side,
        ahead=cfg.decode_ahead)):
      if reason:
        log.skip("image", corpus.image_file(image), reason)
        bar.update()
        continue
      batch.append((image, pixels))
      if len(batch) == cfg.image_batch:
        embed_batch()
    if batch:
      embed_batch()
  return kept, feat_NxD[:len(kept)]


def _bounded_map(pool: concurrent.futures.Executor, fn, items: Sequence, *args, ahead: int
                 ) -> Iterator:
  """`fn(item, *args)` for each item, in order, with at most `ahead` results pending."""
  pending = collections.deque()
  for item in items:
    pending.append(pool.submit(fn, item, *args))
    if len(pending) > ahead:
      yield pending.popleft().result()
  for future in pending:
    yield future.result()


def _extract_music(songs: list[corpus.Song], desc_cfg: music.DescriptorConfig,
                   clap_weights: epath.Path | None, log: corpus.SkipLog
                   ) -> tuple[list[corpus.Segment], np.ndarray]:
  """Kept segments (in song id order) and their M x D features (193-d descriptors, or
  CLAP's with `clap_weights`), songs over all cores.

  Largest files start first, so a long song never starts last and leaves the other
  workers idle at the end.
  """
  feat_by_song: dict[str, np.ndarray] = {}
  # spawn, not fork: TensorFlow and JAX threads are live in this process. Workers run
  # `media.song_features`, whose module does not import TensorFlow.
  ctx = multiprocessing.get_context("spawn")
  with (concurrent.futures.ProcessPoolExecutor(max(1, min(os.cpu_count(), len(songs))),
                                               mp_context=ctx) as pool,
        tqdm(total=len(songs), desc="IMAC music", unit="song", disable=not songs) as bar):
    futures = {pool.submit(media.song_features, song.path, desc_cfg, clap_weights): song
               for song in sorted(songs, key=lambda s: -s.path.stat().length)}
    for future in concurrent.futures.as_completed(futures):
      song = futures.pop(future)
      feat_SxD, reason = future.result()
      if reason:
        log.skip("music", song.path.name, reason)
      else:
        feat_by_song[song.id] = feat_SxD
      bar.update()
  segments = [seg for song in songs if song.id in feat_by_song
              for seg in corpus.song_segments(song, len(feat_by_song[song.id]))]
  feat_MxD = np.concatenate([feat_by_song[song.id] for song in songs if song.id in feat_by_song]
                            or [np.zeros((0, 0))]).astype(np.float32)
  return segments, feat_MxD
