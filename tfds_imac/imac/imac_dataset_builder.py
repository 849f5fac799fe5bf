"""IMAC (Image-Music Affective Correspondence) as a TensorFlow Datasets builder.

Configs: `features` (default; the real corpus from a manual download) and
`synthetic` (a generated corpus in the same layout, built by the same code path).
Each example is one fixed correspondence pair carrying both items' features.
"""

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import tempfile
from collections.abc import Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from acp_jax import labels
from acp_jax.features import inception
from acp_jax.features import music
from tfds_imac import synthetic as synthetic_corpus
from tfds_imac.imac import corpus
from acp_jax.features import media
from tfds_imac.imac import splits

WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
IMAC is published as image and song lists (https://gaurav22verma.github.io/IMAC_Dataset.html).
Assemble the manual dir (default ~/tensorflow_datasets/downloads/manual/, or pass
--manual_dir to `tfds build`) as:

  <manual_dir>/images/<emotion>/<any name>.<jpg|jpeg|png|...>
      the Image Emotion (FI) dataset in its own layout, emotion in
      {{{", ".join(labels.EMOTIONS)}}}
  <manual_dir>/music/<song_id>.<wav|flac|mp3|ogg|m4a>
  <manual_dir>/music.csv
      header: song_id,artist,title,pos_score,neu_score,neg_score
  <manual_dir>/{WEIGHTS_FILE}
      Keras ImageNet weights of Inception-V3 (without them the image features come
      from a seeded random-init network, with a warning).

Then run: tfds build --imports tfds_imac imac
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
  image_chunk: int = 256          # images decoded and embedded per chunk (bounds memory)
  inception_seed: int = 0         # seed of the random-init Inception when no weights
  media: bool = False             # also store pixels and waveforms (for the baselines)
  synthetic: synthetic_corpus.CorpusConfig | None = None

  @property
  def descriptor(self) -> music.DescriptorConfig:
    return music.DescriptorConfig(segment_seconds=self.segment_seconds,
                                  window_seconds=self.window_seconds,
                                  hop_seconds=self.hop_seconds)


_SYNTHETIC = dict(segment_seconds=6.0, window_seconds=2.0, hop_seconds=1.0,
                  synthetic=synthetic_corpus.CorpusConfig())


def synthetic_corpus_dir(download_dir: epath.PathLike,
                         corpus_cfg: synthetic_corpus.CorpusConfig) -> epath.Path:
  """Where a synthetic config's generated corpus (raw images and songs) lives.

  One directory per corpus config and builder version, so `synthetic` and
  `synthetic_media` share one corpus and configs of other sizes never overwrite it.
  """
  key = hashlib.sha256(json.dumps(dataclasses.asdict(corpus_cfg), sort_keys=True).encode())
  return epath.Path(download_dir) / f"imac_synthetic_corpus_{Builder.VERSION}_{key.hexdigest()[:12]}"


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


def _item_features(dim: int) -> dict:
  return {
      "id": tfds.features.Text(),
      "features": tfds.features.Tensor(shape=(dim,), dtype=np.float32),
      "label": tfds.features.ClassLabel(names=labels.CLASSES),
      "cue": tfds.features.Scalar(dtype=np.int32, doc="hidden cue class (synthetic), -1 if unknown"),
  }


def split_of(modality: str, item_id: str) -> str:
  return splits.assign_split(f"{modality}:{item_id}")


def pair_split(name: str, images: Sequence[corpus.Image],
               segments: Sequence[tuple[corpus.Song, str]]
               ) -> tuple[list[tuple[int, int, int]], dict]:
  """The fixed pairs of one split from its items' ids, labels and cues alone.

  Returns the pairs as (index into `images`, index into `segments`, label) in the
  split's fixed order, and the split's summary (counts, oracle accuracy, label flips).
  The input order does not matter, so both build modes pair alike.
  """
  img_idx = sorted(range(len(images)), key=lambda i: splits.item_hash(images[i].id))
  seg_idx = sorted(range(len(segments)), key=lambda j: splits.item_hash(segments[j][1]))
  if not img_idx or not seg_idx:
    raise ValueError(f"The {name} split has {len(img_idx)} images and {len(seg_idx)} music "
                     "segments; IMAC needs both in every split. Add more items.")
  pair_img, pair_mus, pair_lab, flips = splits.make_pairs(
      np.array([images[i].label for i in img_idx]),
      np.array([segments[j][0].label for j in seg_idx]), seed_key=name)
  summary = {"counts": {"images": len(img_idx), "music_segments": len(seg_idx),
                        "songs": len({song.id for song, _ in segments}), "pairs": len(pair_lab)},
             "flips": flips}
  img_cue = np.array([images[img_idx[i]].cue for i in pair_img])
  mus_cue = np.array([segments[seg_idx[j]][0].cue for j in pair_mus])
  if (img_cue >= 0).all() and (mus_cue >= 0).all():
    summary["oracle"] = float(np.mean((img_cue == mus_cue) == pair_lab.astype(bool)))
  pairs = [(img_idx[i], seg_idx[j], int(lab)) for i, j, lab in zip(pair_img, pair_mus, pair_lab)]
  return pairs, summary


def build_metadata(log: corpus.SkipLog, summaries: dict[str, dict]) -> dict:
  """The dataset metadata a build learns from its items (both build modes)."""
  return {
      "skipped": log.counts(),
      "skipped_items": [list(item) for item in log.items],
      "oracle_accuracy": {n: s["oracle"] for n, s in summaries.items() if "oracle" in s},
      "counts": {n: s["counts"] for n, s in summaries.items()},
      "pair_label_flips": sum(s["flips"] for s in summaries.values()),
  }


def pair_example(k: int, image: corpus.Image, image_feat: np.ndarray, song: corpus.Song,
                 segment_id: str, music_feat: np.ndarray, label: int) -> tuple[str, dict]:
  """Key and features of the k-th pair of a split (both build modes)."""
  # A pair may repeat; its position in the split's fixed pair list makes the key unique.
  return f"{k:07d}|{image.id}|{segment_id}", {
      "image": {"id": image.id, "features": image_feat, "label": image.label,
                "emotion": image.emotion, "cue": image.cue},
      "music": {"id": segment_id, "song_id": song.id, "features": music_feat,
                "label": song.label, "cue": song.cue},
      "label": label,
  }


class Builder(tfds.core.GeneratorBasedBuilder):
  """IMAC correspondence pairs with Inception-V3 image and 193-d music features."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release: features and synthetic configs.",
      "1.1.0": "synthetic: 192 songs of one segment instead of 96 of two (a demo model "
               "overfitted 66 training songs).",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      ImacConfig(name="features", description="Real IMAC from a manual download."),
      ImacConfig(name="synthetic", **_SYNTHETIC,
                 description="Generated corpus with known cue classes; needs no download."),
      ImacConfig(name="media", media=True,
                 description="`features` plus 224x224 pixels and segment waveforms."),
      ImacConfig(name="synthetic_media", media=True, **_SYNTHETIC,
                 description="`synthetic` plus 224x224 pixels and segment waveforms."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "features"
  _beam_build = None  # set for a build run with Beam options; see _download_and_prepare

  def _info(self) -> tfds.core.DatasetInfo:
    image = _item_features(inception.FEATURE_DIM)
    image["emotion"] = tfds.features.ClassLabel(names=labels.EMOTIONS)
    song = _item_features(music.DESCRIPTOR_DIM)
    song["song_id"] = tfds.features.Text()
    if self.builder_config.media:
      # Each item's media is stored once per split, on its first pair; other pairs
      # carry empty arrays (see README.md, "Media configs").
      image["pixels"] = tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8,
                                             encoding="zlib")
      song["waveform"] = tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding="zlib")
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": image,
            "music": song,
            "label": tfds.features.ClassLabel(names=("false", "true")),
        }),
        supervised_keys=None,
        homepage="https://gaurav22verma.github.io/IMAC_Dataset.html",
        metadata=tfds.core.MetadataDict(),
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

    log = corpus.SkipLog()
    cues = corpus.read_cues(root)
    images = corpus.scan_images(root, cues, log)
    songs = corpus.scan_songs(root, cues, log)
    weights = manual_dir / WEIGHTS_FILE if manual_dir is not None else None
    self.info.metadata.update(self._model_metadata(weights))
    if self._beam_build is not None:
      return self._beam_splits(images, songs, log, weights)
    images, image_feats = self._embed_images(images, weights, log)
    segments, music_feats = self._describe_music(songs, log)

    split_of_image = [split_of("image", im.id) for im in images]
    split_of_song = {s.id: split_of("music", s.id) for s in songs}
    summaries, examples = {}, {}
    for name in splits.SPLITS:
      img_idx = [i for i, s in enumerate(split_of_image) if s == name]
      seg_idx = [j for j, (song, _) in enumerate(segments) if split_of_song[song.id] == name]
      pairs, summaries[name] = pair_split(name, [images[i] for i in img_idx],
                                          [segments[j] for j in seg_idx])
      examples[name] = [(images[img_idx[i]], image_feats[img_idx[i]], segments[seg_idx[j]],
                         music_feats[seg_idx[j]], label) for i, j, label in pairs]

    self.info.metadata.update(build_metadata(log, summaries))
    print(log.summary())
    return {name: self._generate_examples(rows) for name, rows in examples.items()}

  def _generate_examples(self, rows):
    cfg: ImacConfig = self.builder_config
    seen_images, seen_segments = set(), set()
    # One decoded song at a time: rows sorted by song make each song load once.
    load_song = functools.lru_cache(maxsize=1)(
        lambda path: music.segment(music.load_audio(path, cfg.descriptor.sample_rate),
                                   cfg.descriptor))
    rows = list(enumerate(rows))
    if cfg.media:
      rows.sort(key=lambda row: row[1][2][0].id)
    for k, (image, image_feat, (song, segment_id), music_feat, label) in rows:
      key, example = pair_example(k, image, image_feat, song, segment_id, music_feat, label)
      if cfg.media:
        example["image"]["pixels"] = np.zeros((0, 0, 3), np.uint8)
        example["music"]["waveform"] = np.zeros((0,), np.int16)
        if image.id not in seen_images:
          seen_images.add(image.id)
          pixels, _ = media.load_image(image.path, cfg.image_size, cfg.min_image_side)
          example["image"]["pixels"] = pixels
        if segment_id not in seen_segments:
          seen_segments.add(segment_id)
          wave_T = load_song(song.path)[int(segment_id.rsplit("#", 1)[1])]
          example["music"]["waveform"] = np.round(np.clip(wave_T, -1, 1) * 32767).astype(np.int16)
      yield key, example

  def _download_and_prepare(self, dl_manager, download_config):
    # TFDS tells a builder it runs under Beam only through the download config.
    beam_mode = download_config.beam_runner is not None or download_config.beam_options is not None
    self._beam_build = "requested" if beam_mode else None
    super()._download_and_prepare(dl_manager, download_config)

  def _beam_splits(self, images, songs, log, weights):
    """The splits as Beam transforms; their summary reaches the metadata afterwards."""
    # Imported only for a Beam build: Beam takes seconds to import.
    from tfds_imac.imac import beam_pipeline  # pylint: disable=g-import-not-at-top
    cfg: ImacConfig = self.builder_config
    if cfg.media:
      raise ValueError(f"imac/{cfg.name} stores media and builds in-process only; drop "
                       "--beam_pipeline_options or build a features config with Beam.")
    self._beam_build = beam_pipeline.Build(
        images, songs, log.items, image_size=cfg.image_size, min_image_side=cfg.min_image_side,
        image_batch=cfg.image_chunk, inception_seed=cfg.inception_seed,
        weights=weights if weights is not None and weights.exists() else None,
        descriptor=cfg.descriptor, split_of=split_of, pair_split=pair_split,
        pair_example=pair_example, work_dir=epath.Path(self.data_dir) / "imac_beam_build")
    return {name: self._beam_build.split(name) for name in splits.SPLITS}

  def _process_pipeline_result(self, pipeline_result) -> None:
    log = corpus.SkipLog()
    log.items, summaries = self._beam_build.result()
    self.info.metadata.update(build_metadata(log, summaries))
    print(log.summary())

  def _model_metadata(self, weights: epath.Path | None) -> dict:
    cfg: ImacConfig = self.builder_config
    return {
        "inception_weights": "imagenet" if weights is not None and weights.exists()
                             else f"random(seed={cfg.inception_seed})",
        "descriptor": dataclasses.asdict(cfg.descriptor),
    }

  @staticmethod
  def _manual_dir(dl_manager) -> epath.Path | None:
    try:
      return epath.Path(dl_manager.manual_dir)
    except AssertionError:  # raised by TFDS when the manual dir is absent or empty
      return None

  def _embed_images(self, images: list[corpus.Image], weights: epath.Path | None,
                    log: corpus.SkipLog) -> tuple[list[corpus.Image], np.ndarray]:
    cfg: ImacConfig = self.builder_config
    if weights is None or not weights.exists():
      weights = None
    embedder = inception.ImageEmbedder.from_weights_file(weights, seed=cfg.inception_seed)
    kept, feats = [], []
    load = lambda im: media.load_image(im.path, cfg.image_size, cfg.min_image_side)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
      for start in tqdm(range(0, len(images), cfg.image_chunk), desc="IMAC images",
                        unit="chunk", disable=not images):
        chunk = images[start:start + cfg.image_chunk]
        decoded = []
        for im, (pixels, reason) in zip(chunk, pool.map(load, chunk)):
          if reason:
            log.skip("image", im.id, reason)
          else:
            decoded.append((im, pixels))
        if not decoded:
          continue
        feat_Bx2048 = embedder(np.stack([p for _, p in decoded]))
        finite = np.isfinite(feat_Bx2048).all(axis=1)
        for (im, _), ok, feat in zip(decoded, finite, feat_Bx2048):
          if ok:
            kept.append(im), feats.append(feat)
          else:
            log.skip("image", im.id, "non-finite image features")
    return kept, np.asarray(feats, np.float32).reshape(-1, inception.FEATURE_DIM)

  def _describe_music(self, songs: list[corpus.Song], log: corpus.SkipLog
                      ) -> tuple[list[tuple[corpus.Song, str]], np.ndarray]:
    """Segments as (song, segment id) and their descriptors, songs over all cores."""
    desc_cfg = self.builder_config.descriptor
    segments, feats = [], []
    # spawn, not fork: TensorFlow and JAX threads are live in this process.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(os.cpu_count(), max(len(songs), 1)),
                                                mp_context=ctx) as pool:
      results = pool.map(media.describe_song, [s.path for s in songs],
                         [desc_cfg] * len(songs), chunksize=1)
      for song, (desc_Sx193, reason) in tqdm(zip(songs, results), total=len(songs),
                                             desc="IMAC music", unit="song"):
        if reason:
          log.skip("music", song.id, reason)
          continue
        for k, row in enumerate(desc_Sx193):
          segments.append((song, f"{song.id}#{k:03d}"))
          feats.append(row)
    return segments, np.asarray(feats, np.float32).reshape(-1, music.DESCRIPTOR_DIM)
