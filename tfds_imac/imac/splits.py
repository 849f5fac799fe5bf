"""Deterministic train/validation/test assignment and the fixed correspondence pairs.

Split: an item goes to a split by a hash of its id, never by listing order, so adding
or removing files moves no other item. Songs are assigned by song id, so every
segment of a song lands in the same split.

Pairs (documented in README.md): every image and every music segment of a split
chooses one pair. Its target label is one bit of a hash of its own id. Its partner is,
among the other modality's items of its class (target `true`) or of the other classes
(`false`), the one with the highest hash of (its id, the partner's id): rendezvous
hashing. A choice therefore depends only on the chooser's id and on which eligible
items exist, and removing items changes only the pairs that held them. When no item is
eligible the label flips (counted). A pair chosen from both sides is kept once.
"""

import concurrent.futures
import hashlib
import os
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "validation", "test")

# Salts that make the label bit and the two sides' partner scores independent hashes.
_LABEL_SALT = np.uint64(0x6A09E667F3BCC908)
_IMAGE_SIDE_SALT = np.uint64(0xBB67AE8584CAA73B)
_MUSIC_SIDE_SALT = np.uint64(0x3C6EF372FE94F82B)
_SCORES_PER_CHUNK = 1 << 16  # chooser x partner scores mixed at once: 512 KB stays in cache


def item_hash(key: str) -> float:
  """Uniform number in [0, 1) from a string, stable across runs and machines."""
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def assign_split(key: str, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> str:
  h = item_hash(key)
  edges = np.cumsum(fractions)
  return SPLITS[min(int(np.searchsorted(edges, h, side="right")), len(SPLITS) - 1)]


def id_hashes(ids: Sequence[str]) -> np.ndarray:
  """uint64 hash of each id, stable across runs and machines."""
  return np.fromiter((int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
                      for i in ids), np.uint64, len(ids))


def _mix64(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser, in place on a uint64 array: a bijection that avalanches."""
  x ^= x >> np.uint64(30)
  x *= np.uint64(0xBF58476D1CE4E5B9)
  x ^= x >> np.uint64(27)
  x *= np.uint64(0x94D049BB133111EB)
  x ^= x >> np.uint64(31)
  return x


def _choose(chooser_hash_N: np.ndarray, chooser_label_N: np.ndarray, salt: np.uint64,
            partner_hash_M: np.ndarray, partner_label_M: np.ndarray,
            pool: concurrent.futures.Executor) -> tuple[np.ndarray, np.ndarray, int]:
  """Each chooser's partner index and pair label; and how many labels flipped."""
  want_true_N = (_mix64(chooser_hash_N ^ _LABEL_SALT) >> np.uint64(63)).astype(bool)
  key_N = _mix64(chooser_hash_N ^ salt)
  partner_N = np.empty(len(key_N), np.int64)
  match_N = np.empty(len(key_N), bool)
  flips = 0

  def best(rows: np.ndarray, eligible_K: np.ndarray) -> None:
    score_BxK = _mix64(key_N[rows, None] ^ partner_hash_M[eligible_K])
    partner_N[rows] = eligible_K[score_BxK.argmax(axis=1)]

  jobs = []
  for cls in np.unique(chooser_label_N):
    same_M = partner_label_M == cls
    for want in (True, False):
      rows = np.flatnonzero((chooser_label_N == cls) & (want_true_N == want))
      eligible_K, got = np.flatnonzero(same_M == want), want
      if not len(eligible_K):
        flips += len(rows)
        eligible_K, got = np.flatnonzero(same_M != want), not want
      match_N[rows] = got
      step = max(1, _SCORES_PER_CHUNK // len(eligible_K))
      jobs += [pool.submit(best, rows[start:start + step], eligible_K)
               for start in range(0, len(rows), step)]
  for job in jobs:
    job.result()
  return partner_N, match_N, flips


def make_pairs(image_ids: Sequence[str], image_labels_N: np.ndarray,
               music_ids: Sequence[str], music_labels_M: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """The fixed pairs of one split, a pure function of its items' ids and labels.

  Returns (image_P, music_P, label_P, flips): indices into the given sequences and the
  pair label (1 = same class), ordered by (image id, music id); `flips` counts items
  whose target label had no eligible partner.
  """
  image_labels_N, music_labels_M = np.asarray(image_labels_N), np.asarray(music_labels_M)
  if not len(image_ids) or not len(music_ids):
    raise ValueError(f"Pairs need items of both modalities, got {len(image_ids)} images "
                     f"and {len(music_ids)} music segments.")
  if len(set(image_ids)) < len(image_ids) or len(set(music_ids)) < len(music_ids):
    raise ValueError("Item ids must be unique within a modality; pairs are keyed by id.")
  image_hash_N, music_hash_M = id_hashes(image_ids), id_hashes(music_ids)
  # numpy releases the GIL inside ufuncs, so threads put every core on the scores.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    music_of_N, image_match_N, image_flips = _choose(
        image_hash_N, image_labels_N, _IMAGE_SIDE_SALT, music_hash_M, music_labels_M, pool)
    image_of_M, music_match_M, music_flips = _choose(
        music_hash_M, music_labels_M, _MUSIC_SIDE_SALT, image_hash_N, image_labels_N, pool)
  image_P = np.concatenate([np.arange(len(image_ids)), image_of_M])
  music_P = np.concatenate([music_of_N, np.arange(len(music_ids))])
  # Rank by id so the order (and the kept copy of a pair chosen twice) is set by ids.
  image_rank_N = np.argsort(np.argsort(np.asarray(image_ids, dtype=object), kind="stable"))
  music_rank_M = np.argsort(np.argsort(np.asarray(music_ids, dtype=object), kind="stable"))
  _, first = np.unique(image_rank_N[image_P] * len(music_ids) + music_rank_M[music_P],
                       return_index=True)
  label_P = np.concatenate([image_match_N, music_match_M])[first]
  return (image_P[first].astype(np.int32), music_P[first].astype(np.int32),
          label_P.astype(np.int32), image_flips + music_flips)


def pair_fingerprint(image_ids_P: Sequence[str], music_ids_P: Sequence[str],
                     label_P: Sequence[int]) -> str:
  """12 hex chars naming a pair list: SHA-256 of its sorted `image\\tmusic\\tlabel` lines."""
  lines = sorted(f"{i}\t{m}\t{int(l)}" for i, m, l in zip(image_ids_P, music_ids_P, label_P))
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
