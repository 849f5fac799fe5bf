"""IMAC (Image-Music Affective Correspondence) as a TensorFlow Datasets builder.

Configs: `features` (default; the real corpus from a manual download) and
`synthetic` (a generated corpus in the same layout, built by the same code path):
each example is one fixed correspondence pair carrying both items' features.
`media` and `synthetic_media`: item-level ArrayRecord datasets (record i of a split is
its i-th item in id order) with features, pixels and waveforms, for the baselines.

The build streams: images are decoded in threads and embedded in batches as they
come, songs are described in a process pool, and only the feature matrices and small
item records stay in memory. The per-item functions (`load_image_item`,
`embed_image_batch`, and `media.describe_song` for a song) and the pairing
(`plan_splits`, `build_metadata`) are module-level so that other build modes (Apache
Beam) run the same code.
"""

import collections
from collections.abc import Iterator, Sequence
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import tempfile

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from acp_jax import labels
from acp_jax.features import inception
from acp_jax.features import media
from acp_jax.features import music
from tfds_imac import synthetic as synthetic_corpus
from tfds_imac.imac import corpus
from tfds_imac.imac import splits

WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Opt-in to random-init image features on the real corpus (value "1").
RANDOM_INCEPTION_ENV = "IMAC_RANDOM_INCEPTION"

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
IMAC is published as image and song lists (https://gaurav22verma.github.io/IMAC_Dataset.html).
Assemble the manual dir (default ~/tensorflow_datasets/downloads/manual/, or pass
--manual_dir to `tfds build`) as:

  <manual_dir>/images/<emotion>/<any name>.<jpg|jpeg|png|...>
      the Image Emotion (FI) dataset in its own layout, emotion in
      {{{", ".join(labels.EMOTIONS)}}}
  <manual_dir>/music/<song_id>.<wav|flac|mp3|ogg|m4a|aac>
  <manual_dir>/music.csv
      header: song_id,artist,title,pos_score,neu_score,neg_score
  <manual_dir>/{WEIGHTS_FILE}
      Keras ImageNet weights of Inception-V3, from
      {inception.WEIGHTS_URL}
      Without them the build stops; to build with a seeded random-init network
      instead, set IMAC_RANDOM_INCEPTION=1 (the dataset's metadata and every result
      then say so).

Then run: tfds build --imports tfds_imac imac/features --manual_dir=<manual_dir>
To try the project without IMAC: tfds build --imports tfds_imac imac/synthetic
"""


@dataclasses.dataclass(eq=False, kw_only=True)
class ImacConfig(tfds.core.BuilderConfig):
  """How items are turned into features; `synthetic` set means a generated corpus."""
  segment_seconds: float = 60.0   # music cut into non-overlapping segments of this length
  window_seconds: float = 10.0    # descriptor window inside a segment
  hop_seconds: float = 5.0        # hop between descriptor windows
  image_size: int = 224           # Inception input side
  min_image_side: int = 32        # smaller images are skipped as unusable
  image_batch: int = 64           # images embedded per Inception call
  decode_ahead: int = 256         # images decoded ahead of the embedder (bounds memory)
  inception_seed: int = 0         # seed of the random-init Inception (synthetic, or opt-in)
  media: bool = False             # item-level records with pixels and waveforms (baselines)
  synthetic: synthetic_corpus.CorpusConfig | None = None

  @property
  def descriptor(self) -> music.DescriptorConfig:
    return music.DescriptorConfig(segment_seconds=self.segment_seconds,
                                  window_seconds=self.window_seconds,
                                  hop_seconds=self.hop_seconds)


_SYNTHETIC = dict(segment_seconds=6.0, window_seconds=2.0, hop_seconds=1.0,
                  synthetic=synthetic_corpus.CorpusConfig())
MODALITIES = ("images", "music")
SKIP_REPORT_FILE = "skipped_items.txt"
# Weaker cues, more label noise, more items: objectives that tie on `synthetic` can differ.
_SYNTHETIC_HARD = dict(_SYNTHETIC, synthetic=synthetic_corpus.CorpusConfig(
    num_images=800, num_songs=240, label_noise=0.2, cue_strength=0.4))


def synthetic_corpus_dir(download_dir: epath.PathLike,
                         corpus_cfg: synthetic_corpus.CorpusConfig) -> epath.Path:
  """Where a synthetic config's generated corpus (raw images and songs) lives.

  One directory per corpus config and builder version, so `synthetic` and
  `synthetic_media` share one corpus and configs of other sizes never overwrite it.
  """
  key = hashlib.sha256(json.dumps(dataclasses.asdict(corpus_cfg), sort_keys=True).encode())
  name = f"imac_synthetic_corpus_{Builder.VERSION}_{key.hexdigest()[:12]}"
  return epath.Path(download_dir) / name


def _write_corpus_once(root: epath.Path, corpus_cfg: synthetic_corpus.CorpusConfig) -> None:
  """Generates the corpus at `root` unless it is there; no build ever reads a partial one.

  The corpus is written beside `root` and renamed into place, so builds running at once
  (two configs, two test workers) cannot delete each other's files half way.
  """
  if root.exists():
    return
  root.parent.mkdir(parents=True, exist_ok=True)
  partial = epath.Path(tempfile.mkdtemp(dir=root.parent, prefix=f"{root.name}.partial-"))
  synthetic_corpus.write_corpus(partial, corpus_cfg)
  try:
    partial.rename(root)
  except OSError:  # another build renamed its corpus first: the same bytes, keep that one
    partial.rmtree()


def inception_weights(cfg: ImacConfig, manual_dir: epath.Path | None
                      ) -> tuple[epath.Path | None, str]:
  """(weights file or None for random init, the `inception_weights` metadata value).

  A synthetic corpus always uses the seeded random-init network, so its features are
  the same on every machine. The real corpus needs the ImageNet weights unless the
  user opts in to random init.
  """
  random_init = (None, f"random(seed={cfg.inception_seed})")
  if cfg.synthetic is not None:
    return random_init
  weights = manual_dir / WEIGHTS_FILE
  if weights.exists():
    return weights, "imagenet"
  if os.environ.get(RANDOM_INCEPTION_ENV) == "1":
    print(_RANDOM_NOTICE.format(env=RANDOM_INCEPTION_ENV, label=random_init[1]), flush=True)
    return random_init
  raise FileNotFoundError(
      f"The Inception-V3 ImageNet weights are missing: put {WEIGHTS_FILE} (download it "
      f"from {inception.WEIGHTS_URL}) at {weights}, then run the build again. To build "
      f"with a seeded random-init network instead (features unlike the paper's; every "
      f"result says so), set {RANDOM_INCEPTION_ENV}=1.")


_RANDOM_NOTICE = """
{bar}
IMAC: {env}=1, image features come from a RANDOM-INIT Inception-V3,
not the ImageNet weights: results on this dataset are not the paper's setting.
The dataset metadata records inception_weights = "{label}".
{bar}""".replace("{bar}", "!" * 78)


# ------------------------------------------------------------- per-item extraction
# Module-level and free of builder state, so every build mode runs the same code.

@dataclasses.dataclass(frozen=True)
class Segment:
  """One music item: segment `index` of `song`."""
  id: str          # "<song_id>#<index:03d>"
  song: corpus.Song
  index: int


def make_embedder(weights: epath.Path | None, seed: int, batch_size: int
                  ) -> inception.ImageEmbedder:
  """Inception-V3 with the Keras weights in `weights`, or seeded random init if None."""
  variables = (inception.load_keras_weights(weights) if weights is not None
               else inception.random_variables(seed))
  return inception.ImageEmbedder(variables, batch_size)


def load_image_item(image: corpus.Image, cfg: ImacConfig) -> tuple[np.ndarray | None, str | None]:
  """(uint8 `image_size` x `image_size` x 3 pixels, None) or (None, skip reason)."""
  return media.load_image(image.path, cfg.image_size, cfg.min_image_side)


def embed_image_batch(embedder: inception.ImageEmbedder, pixels_BxHxWx3: np.ndarray
                      ) -> tuple[np.ndarray, list[str | None]]:
  """float32 B x 2048 features and, per row, None or the reason to skip the image."""
  feat_Bx2048 = embedder(pixels_BxHxWx3)
  finite_B = np.isfinite(feat_Bx2048).all(axis=1)
  return feat_Bx2048, [None if ok else "non-finite image features" for ok in finite_B]


def song_segments(song: corpus.Song, count: int) -> list[Segment]:
  return [Segment(f"{song.id}#{k:03d}", song, k) for k in range(count)]


def segment_waveform(song_path: epath.Path, desc_cfg: music.DescriptorConfig) -> np.ndarray:
  """int16 S x segment_samples: the song's segments as the descriptor saw them."""
  segments_SxT = music.segment(music.load_audio(song_path, desc_cfg.sample_rate), desc_cfg)
  return np.round(np.clip(segments_SxT, -1, 1) * 32767).astype(np.int16)


# ----------------------------------------------------------------------- pairing

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


def plan_splits(images: Sequence[corpus.Image], segments: Sequence[Segment]
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
                   segments: Sequence[Segment], log: corpus.SkipLog, weights_label: str,
                   desc_cfg: music.DescriptorConfig) -> dict:
  """The dataset metadata every build mode stores (keys shared with the trainer)."""
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
      "inception_weights": weights_label,
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


# ---------------------------------------------------------------- TFDS features

def _pair_item_features(dim: int) -> dict:
  return {
      "id": tfds.features.Text(),
      "features": tfds.features.Tensor(shape=(dim,), dtype=np.float32),
      "label": tfds.features.ClassLabel(names=labels.CLASSES),
      "cue": tfds.features.Scalar(dtype=np.int32,
                                  doc="hidden cue class (synthetic), -1 if unknown"),
  }


def _pair_features() -> tfds.features.FeaturesDict:
  image = _pair_item_features(inception.FEATURE_DIM)
  image["emotion"] = tfds.features.ClassLabel(names=labels.EMOTIONS)
  song = _pair_item_features(music.DESCRIPTOR_DIM)
  song["song_id"] = tfds.features.Text()
  return tfds.features.FeaturesDict({
      "image": image, "music": song,
      "label": tfds.features.ClassLabel(names=("false", "true")),
  })


def media_item_features(image_size: int) -> tfds.features.FeaturesDict:
  """One item's record in a media config. Pixels and waveforms are stored as they are:
  ArrayRecord compresses each record itself (zstd), which reads 4x (waveforms) to 9x
  (pixels) faster than TFDS's zlib encoding on top of it. On disk, a generated song's
  waveform took less than half as much; grainy photos' pixels ~7% more. (Pixels keep
  their side fixed: TFDS cannot read back an empty tensor of two unknown dimensions
  stored as bytes.)"""
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "label": tfds.features.ClassLabel(names=labels.CLASSES),
      "cue": tfds.features.Scalar(dtype=np.int32,
                                  doc="hidden cue class (synthetic), -1 if unknown"),
      "emotion": tfds.features.Scalar(dtype=np.int32,
                                      doc="index into the 8 emotions, -1 for music"),
      "song_id": tfds.features.Text(doc="empty for images"),
      "features": tfds.features.Tensor(shape=(None,), dtype=np.float32,
                                       doc="Inception 2048 (images), descriptor 193 (music)"),
      "pixels": tfds.features.Tensor(shape=(None, image_size, 3), dtype=np.uint8,
                                     encoding="bytes",
                                     doc=f"{image_size} rows for images, 0 for music"),
      "waveform": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding="bytes",
                                       doc="the segment at 22050 Hz for music, empty for images"),
  })


def pair_example(image: corpus.Image, image_feat: np.ndarray, segment: Segment,
                 music_feat: np.ndarray, label: int) -> tuple[str, dict]:
  """(key, example) of one pair of a features config; a split holds a pair once."""
  return f"{image.id}|{segment.id}", {
      "image": {"id": image.id, "features": image_feat, "label": image.label,
                "emotion": image.emotion, "cue": image.cue},
      "music": {"id": segment.id, "song_id": segment.song.id, "features": music_feat,
                "label": segment.song.label, "cue": segment.song.cue},
      "label": label,
  }


def image_item_example(image: corpus.Image, feat: np.ndarray, pixels: np.ndarray) -> dict:
  return {"id": image.id, "label": image.label, "cue": image.cue, "emotion": image.emotion,
          "song_id": "", "features": feat, "pixels": pixels,
          "waveform": np.zeros((0,), np.int16)}


def music_item_example(segment: Segment, feat: np.ndarray, waveform: np.ndarray,
                       image_size: int) -> dict:
  return {"id": segment.id, "label": segment.song.label, "cue": segment.song.cue,
          "emotion": -1, "song_id": segment.song.id, "features": feat,
          "pixels": np.zeros((0, image_size, 3), np.uint8), "waveform": waveform}


# ----------------------------------------------------------------------- builder

@dataclasses.dataclass(frozen=True)
class _Extracted:
  """The kept items and their features: all a build holds in memory."""
  images: list[corpus.Image]
  image_feat_NxD: np.ndarray
  segments: list[Segment]
  music_feat_MxD: np.ndarray


class Builder(tfds.core.GeneratorBasedBuilder):
  """IMAC correspondence pairs with Inception-V3 image and 193-d music features."""

  VERSION = tfds.core.Version("2.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: features and synthetic configs.",
      "1.1.0": "synthetic: 192 songs of one segment instead of 96 of two (a demo model "
               "overfitted 66 training songs).",
      "2.0.0": "Image ids keep their file extension (`awe/a.jpg`). Fixed pairs by "
               "rendezvous hashing of item ids: removing items changes only their pairs; "
               "each split's pair list has a fingerprint in the metadata. The real corpus "
               "needs the ImageNet weights (random init only by opt-in). The media "
               "configs are item-level ArrayRecord datasets. A skip report file is kept "
               "beside the dataset files.",
      "2.1.0": "Media configs store pixels and waveforms as raw bytes compressed by "
               "ArrayRecord alone, not also by TFDS's zlib: they read 4-9x faster. "
               "`pixels` is [None, image_size, 3]; music items hold 0 x 224 x 3. Images "
               "decode and resize to the same bytes as before, faster.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      ImacConfig(name="features", description="Real IMAC from a manual download."),
      ImacConfig(name="synthetic", **_SYNTHETIC,
                 description="Generated corpus with known cue classes; needs no download."),
      ImacConfig(name="synthetic_hard", **_SYNTHETIC_HARD,
                 description="`synthetic` with weaker cues, more label noise, more items."),
      ImacConfig(name="media", media=True,
                 description="Items of `features` with 224x224 pixels and segment waveforms."),
      ImacConfig(name="synthetic_media", media=True, **_SYNTHETIC,
                 description="Items of `synthetic` with 224x224 pixels and segment waveforms."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "features"
  _beam_build = None  # a beam_pipeline.Build when run with Beam options

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    # Media configs are read by item index (tfds.data_source), which needs ArrayRecord.
    array_record = tfds.core.FileFormat.ARRAY_RECORD
    if self.builder_config.media and file_format is None and self.info.file_format != array_record:
      self.info.set_file_format(array_record, override=True)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        features=media_item_features(cfg.image_size) if cfg.media else _pair_features(),
        supervised_keys=None,
        homepage="https://gaurav22verma.github.io/IMAC_Dataset.html",
        metadata=tfds.core.MetadataDict(),
        # Record i of a media split is item i in id order.
        disable_shuffling=cfg.media,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg: ImacConfig = self.builder_config
    manual_dir = self._manual_dir(dl_manager)
    if cfg.synthetic is not None:
      root = synthetic_corpus_dir(dl_manager.download_dir, cfg.synthetic)
      _write_corpus_once(root, cfg.synthetic)
    elif manual_dir is None:
      raise AssertionError(f"IMAC needs a manual download.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    else:
      root = manual_dir
    weights, weights_label = inception_weights(cfg, manual_dir)

    log = corpus.SkipLog()
    cues = corpus.read_cues(root)
    if self._beam_build is not None:
      return self._beam_splits(corpus.scan_images(root, cues, log),
                               corpus.scan_songs(root, cues, log), log, weights, weights_label)
    images, image_feat_NxD = _extract_images(corpus.scan_images(root, cues, log), cfg,
                                             weights, log)
    segments, music_feat_MxD = _extract_music(corpus.scan_songs(root, cues, log),
                                              cfg.descriptor, log)
    items = _Extracted(images, image_feat_NxD, segments, music_feat_MxD)
    plans = plan_splits(images, segments)
    self.info.metadata.update(build_metadata(plans, images, segments, log, weights_label,
                                             cfg.descriptor))
    if not cfg.media:
      return {name: self._generate_examples(items, plan) for name, plan in plans.items()}
    return {f"{name}_{modality}": self._generate_examples(items, plan, modality)
            for name, plan in plans.items() for modality in MODALITIES}

  def _generate_examples(self, items: _Extracted, plan: SplitPlan, modality: str | None = None):
    """The pairs of a split, or (media configs) the items of one modality in id order."""
    if modality is None:
      for i, j, label in zip(plan.image_P, plan.music_P, plan.label_P):
        image, segment = plan.images_N[i], plan.music_M[j]
        yield pair_example(items.images[image], items.image_feat_NxD[image],
                           items.segments[segment], items.music_feat_MxD[segment], int(label))
    elif modality == "images":
      for k, i in enumerate(plan.images_N):
        pixels, _ = load_image_item(items.images[i], self.builder_config)
        yield k, image_item_example(items.images[i], items.image_feat_NxD[i], pixels)
    else:
      # Segments of a song are neighbours in id order, so each song decodes once.
      waveforms = functools.lru_cache(maxsize=1)(
          functools.partial(segment_waveform, desc_cfg=self.builder_config.descriptor))
      for k, j in enumerate(plan.music_M):
        segment = items.segments[j]
        yield k, music_item_example(segment, items.music_feat_MxD[j],
                                    waveforms(segment.song.path)[segment.index],
                                    self.builder_config.image_size)

  def _download_and_prepare(self, dl_manager, download_config):
    # TFDS tells a builder that it runs on Beam only through the download config.
    beam_mode = download_config.beam_runner is not None or download_config.beam_options is not None
    self._beam_build = "requested" if beam_mode else None
    super()._download_and_prepare(dl_manager, download_config)
    # Still inside TFDS's temporary dataset dir, which becomes the dataset dir only when
    # the whole build succeeded: the report appears with the dataset files, atomically.
    skipped = self.info.metadata["skipped_items"]
    (epath.Path(self.data_dir) / SKIP_REPORT_FILE).write_text(skip_report(skipped))
    log = corpus.SkipLog()
    for item in skipped:
      log.skip(*item)
    final_dir = epath.Path(self.data_dir_root) / self.info.full_name
    print(f"{log.summary()}\nEvery skipped item and why: {final_dir / SKIP_REPORT_FILE}")

  def _beam_splits(self, images: list[corpus.Image], songs: list[corpus.Song],
                   log: corpus.SkipLog, weights: epath.Path | None, weights_label: str):
    """The splits as Beam transforms; their metadata arrives after the pipeline ran."""
    # Imported only for a Beam build: Beam takes seconds to import.
    from tfds_imac.imac import beam_pipeline  # pylint: disable=g-import-not-at-top
    cfg: ImacConfig = self.builder_config
    if cfg.media:
      raise ValueError(f"imac/{cfg.name} builds in-process only; drop --beam_pipeline_options "
                       "(the features configs build on Beam).")
    self._beam_build = beam_pipeline.Build(images, songs, log.items, cfg, weights, weights_label,
                                           epath.Path(self.data_dir) / "imac_beam_build")
    return {name: self._beam_build.split(name) for name in splits.SPLITS}

  def _process_pipeline_result(self, pipeline_result) -> None:
    self.info.metadata.update(self._beam_build.metadata())

  @staticmethod
  def _manual_dir(dl_manager) -> epath.Path | None:
    try:
      return epath.Path(dl_manager.manual_dir)
    except AssertionError:  # raised by TFDS when the manual dir is absent or empty
      return None


def _extract_images(images: list[corpus.Image], cfg: ImacConfig, weights: epath.Path | None,
                    log: corpus.SkipLog) -> tuple[list[corpus.Image], np.ndarray]:
  """Kept images and their N x 2048 features; decoded in threads, embedded in batches.

  At most `decode_ahead` decoded images wait for the embedder; the features fill one
  preallocated matrix (rows past the kept count are never written, so never paged in).
  """
  embedder = make_embedder(weights, cfg.inception_seed, cfg.image_batch)
  feat_NxD = np.empty((len(images), inception.FEATURE_DIM), np.float32)
  kept: list[corpus.Image] = []
  batch: list[tuple[corpus.Image, np.ndarray]] = []

  def embed_batch():
    feat_BxD, reasons = embed_image_batch(embedder, np.stack([p for _, p in batch]))
    for (image, _), feat, reason in zip(batch, feat_BxD, reasons):
      if reason:
        log.skip("image", image_file(image), reason)
      else:
        feat_NxD[len(kept)] = feat
        kept.append(image)
    bar.update(len(batch))
    batch.clear()

  with (concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool,
        tqdm(total=len(images), desc="IMAC images", unit="image", disable=not images) as bar):
    for image, (pixels, reason) in zip(images, _bounded_map(pool, load_image_item, images, cfg,
                                                            ahead=cfg.decode_ahead)):
      if reason:
        log.skip("image", image_file(image), reason)
        bar.update()
        continue
      batch.append((image, pixels))
      if len(batch) == cfg.image_batch:
        embed_batch()
    if batch:
      embed_batch()
  return kept, feat_NxD[:len(kept)]


def image_file(image: corpus.Image) -> str:
  """How the skip log names an image file: `<emotion folder>/<file name>`."""
  return f"{image.path.parent.name}/{image.path.name}"


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
                   log: corpus.SkipLog) -> tuple[list[Segment], np.ndarray]:
  """Kept segments (in song id order) and their M x 193 descriptors, songs over all cores.

  Largest files start first, so a long song never starts last and leaves the other
  workers idle at the end.
  """
  desc_by_song: dict[str, np.ndarray] = {}
  # spawn, not fork: TensorFlow and JAX threads are live in this process. Workers run
  # `media.describe_song`, whose module does not import TensorFlow.
  ctx = multiprocessing.get_context("spawn")
  with (concurrent.futures.ProcessPoolExecutor(max(1, min(os.cpu_count(), len(songs))),
                                               mp_context=ctx) as pool,
        tqdm(total=len(songs), desc="IMAC music", unit="song", disable=not songs) as bar):
    futures = {pool.submit(media.describe_song, song.path, desc_cfg): song
               for song in sorted(songs, key=lambda s: -s.path.stat().length)}
    for future in concurrent.futures.as_completed(futures):
      song = futures.pop(future)
      desc_Sx193, reason = future.result()
      if reason:
        log.skip("music", song.path.name, reason)
      else:
        desc_by_song[song.id] = desc_Sx193
      bar.update()
  segments = [seg for song in songs if song.id in desc_by_song
              for seg in song_segments(song, len(desc_by_song[song.id]))]
  feat_MxD = np.concatenate([desc_by_song[song.id] for song in songs if song.id in desc_by_song]
                            or [np.zeros((0, music.DESCRIPTOR_DIM))]).astype(np.float32)
  return segments, feat_MxD
