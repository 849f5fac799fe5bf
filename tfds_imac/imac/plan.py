"""A build's plan: kept items to splits and fixed pairs, the metadata and the skip report.

Needs only the kept items' ids, labels and cues (no features), so every build mode
plans with the same code; the rules themselves are in `splits`.
"""

from collections.abc import Sequence
import dataclasses

from etils import epath
import numpy as np

from acp_jax.features import music
from tfds_imac.imac import corpus
from tfds_imac.imac import splits

SKIP_REPORT_FILE = "skipped_items.txt"


@dataclasses.dataclass(frozen=True)
class SplitPlan:
  """One split's items (indices into the kept items, in id order) and fixed pairs."""
  images_N: np.ndarray      # indices into the kept images
  music_M: np.ndarray       # indices into the kept segments
  image_P: np.ndarray       # pair -> position in images_N
  music_P: np.ndarray       # pair -> position in music_M
  label_P: np.ndarray       # 1 = same class
  flips: int
  fingerprint: str


def plan_splits(images: Sequence[corpus.Image], segments: Sequence[corpus.Segment]
                ) -> dict[str, SplitPlan]:
  """Assigns kept items to splits and pairs each split; needs only ids and labels."""
  image_split = [splits.assign_split(f"image:{im.id}") for im in images]
  song_split = {song: splits.assign_split(f"music:{song}")
                for song in {seg.song.id for seg in segments}}
  plans = {}
  for name in splits.SPLITS:
    images_N = np.array(sorted((i for i, s in enumerate(image_split) if s == name),
                               key=lambda i: images[i].id), np.int64)
    music_M = np.array(sorted((j for j, seg in enumerate(segments)
                               if song_split[seg.song.id] == name),
                              key=lambda j: segments[j].id), np.int64)
    if not len(images_N) or not len(music_M):
      raise ValueError(f"The {name} split has {len(images_N)} images and {len(music_M)} music "
                       "segments; IMAC needs both in every split. Add more items.")
    image_ids = [images[i].id for i in images_N]
    music_ids = [segments[j].id for j in music_M]
    image_P, music_P, label_P, flips = splits.make_pairs(
        image_ids, np.array([images[i].label for i in images_N]),
        music_ids, np.array([segments[j].song.label for j in music_M]))
    fingerprint = splits.pair_fingerprint([image_ids[i] for i in image_P],
                                          [music_ids[j] for j in music_P], label_P)
    plans[name] = SplitPlan(images_N, music_M, image_P, music_P, label_P, flips, fingerprint)
  return plans


def build_metadata(plans: dict[str, SplitPlan], images: Sequence[corpus.Image],
                   segments: Sequence[corpus.Segment], log: corpus.SkipLog,
                   encoders: dict, desc_cfg: music.DescriptorConfig) -> dict:
  """The dataset metadata every build mode stores (keys shared with the trainer);
  `encoders` is `weights.Encoders.metadata()`."""
  oracle, counts = {}, {}
  for name, plan in plans.items():
    img_cue_P = np.array([images[i].cue for i in plan.images_N])[plan.image_P]
    mus_cue_P = np.array([segments[j].song.cue for j in plan.music_M])[plan.music_P]
    if (img_cue_P >= 0).all() and (mus_cue_P >= 0).all():
      oracle[name] = float(np.mean((img_cue_P == mus_cue_P) == plan.label_P.astype(bool)))
    counts[name] = {"images": len(plan.images_N), "music_segments": len(plan.music_M),
                    "songs": len({segments[j].song.id for j in plan.music_M}),
                    "pairs": len(plan.label_P)}
  return {
      "skipped": log.counts(),
      # Sorted: workers (processes or Beam) finish in any order.
      "skipped_items": [list(item) for item in sorted(log.items)],
      "oracle_accuracy": oracle,
      "counts": counts,
      "pair_label_flips": sum(plan.flips for plan in plans.values()),
      "pair_fingerprint": {name: plan.fingerprint for name, plan in plans.items()},
      **encoders,
      "descriptor": dataclasses.asdict(desc_cfg),
  }


def skip_report(skipped_items: Sequence[Sequence[str]]) -> str:
  """Human-readable skip report: one `path<TAB>reason` line per skipped item."""
  lines = [f"# IMAC build: {len(skipped_items)} item(s) skipped. Paths are relative to "
           "the manual dir.", "# item\treason"]
  for modality, item, reason in skipped_items:
    lines.append(f"{_item_path(modality, item)}\t{reason}")
  return "\n".join(lines) + "\n"


def _item_path(modality: str, item: str) -> str:
  """An item as the skip log names it -> its path in the manual dir, where it has one."""
  if modality == "image":
    return f"images/{item}"
  if epath.Path(item).suffix.lower() in corpus.AUDIO_EXTENSIONS:
    return f"music/{item}"
  return item  # a music.csv line or a song id without audio
