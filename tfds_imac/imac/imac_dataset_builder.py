"""IMAC (Image-Music Affective Correspondence) as a TensorFlow Datasets builder.

Configs: `features` (default; the real corpus from a manual download) and
`synthetic` (a generated corpus in the same layout, built by the same code path):
each example is one fixed correspondence pair carrying both items' features.
`clip_clap` and `siglip_clap` (and `synthetic_clip_clap`, `synthetic_siglip_clap`):
the same pairs with features from frozen encoders, CLIP ViT-B/32 or SigLIP B/16 for
images and CLAP for music, read from local weights (`weights.py`).
`media` and `synthetic_media`: item-level ArrayRecord datasets (record i of a split is
its i-th item in id order) with features, pixels and waveforms, for the baselines.

This module declares the dataset as the `tfds new` template does; the build's steps
live beside it (README.md, "Module layout"): the builder scans the corpus (`corpus`),
extracts the features in-process (`in_process`) or on Beam (`beam_pipeline`), plans
the splits and metadata (`plan`) and writes the examples (`examples`).
"""

import dataclasses
import functools
import hashlib
import json

from etils import epath
import tensorflow_datasets as tfds

from acp_jax import labels
from acp_jax.features import inception
from acp_jax.features import media
from tfds_imac import synthetic as synthetic_corpus
from tfds_imac.imac import config
from tfds_imac.imac import corpus
from tfds_imac.imac import examples
from tfds_imac.imac import extract
from tfds_imac.imac import in_process
from tfds_imac.imac import plan
from tfds_imac.imac import splits
from tfds_imac.imac import weights

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
  <manual_dir>/{weights.WEIGHTS_FILE}
      Keras ImageNet weights of Inception-V3, from
      {inception.WEIGHTS_URL}
      Without them the build stops; to build with a seeded random-init network
      instead, set IMAC_RANDOM_INCEPTION=1 (the dataset's metadata and every result
      then say so).
  <manual_dir>/encoders/{{{", ".join(sorted(weights.ENCODER_DIRS.values()))}}}/
      only for the frozen-encoder configs (clip_clap, siglip_clap): each encoder's
      checkpoint directory (README, "Frozen encoders"); or set
      {weights.ENCODER_WEIGHTS_ENV} to a directory holding them.

Then run: tfds build --imports tfds_imac imac/features --manual_dir=<manual_dir>
To try the project without IMAC: tfds build --imports tfds_imac imac/synthetic
"""

MODALITIES = ("images", "music")  # a media config's splits are `<split>_<modality>`


def synthetic_corpus_dir(download_dir: epath.PathLike,
                         corpus_cfg: synthetic_corpus.CorpusConfig) -> epath.Path:
  """Where a synthetic config's generated corpus (raw images and songs) lives.

  One directory per corpus config and builder version, so `synthetic` and
  `synthetic_media` share one corpus and configs of other sizes never overwrite it.
  """
  key = hashlib.sha256(json.dumps(dataclasses.asdict(corpus_cfg), sort_keys=True).encode())
  name = f"imac_synthetic_corpus_{Builder.VERSION}_{key.hexdigest()[:12]}"
  return epath.Path(download_dir) / name


class Builder(tfds.core.GeneratorBasedBuilder):
  """IMAC correspondence pairs with Inception-V3 image and 193-d music features."""

  VERSION = tfds.core.Version("2.2.0")
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
      "2.2.0": "Configs with frozen encoders: clip_clap, siglip_clap, synthetic_clip_clap, "
               "synthetic_siglip_clap (the same pairs; CLIP or SigLIP image and CLAP music "
               "embeddings). The metadata's `encoders` names each side's encoder and weights.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      config.ImacConfig(name="features", description="Real IMAC from a manual download."),
      config.ImacConfig(name="synthetic", **config.SYNTHETIC, description=(
          "Generated corpus with known cue classes; needs no download.")),
      config.ImacConfig(name="synthetic_hard", **config.SYNTHETIC_HARD, description=(
          "`synthetic` with weaker cues, more label noise, more items.")),
      config.ImacConfig(name="media", media=True, description=(
          "Items of `features` with 224x224 pixels and segment waveforms.")),
      config.ImacConfig(name="synthetic_media", media=True, **config.SYNTHETIC, description=(
          "Items of `synthetic` with 224x224 pixels and segment waveforms.")),
      config.ImacConfig(name="clip_clap", **config.CLIP_CLAP, description=(
          "Pairs of `features` with CLIP ViT-B/32 image and CLAP music embeddings.")),
      config.ImacConfig(name="siglip_clap", **config.SIGLIP_CLAP, description=(
          "Pairs of `features` with SigLIP B/16 image and CLAP music embeddings.")),
      config.ImacConfig(name="synthetic_clip_clap", **config.SYNTHETIC, **config.CLIP_CLAP,
                        description="Pairs of `synthetic` with CLIP and CLAP embeddings."),
      config.ImacConfig(name="synthetic_siglip_clap", **config.SYNTHETIC, **config.SIGLIP_CLAP,
                        description="Pairs of `synthetic` with SigLIP and CLAP embeddings."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "features"
  _beam = False       # whether this build runs on Beam
  _beam_build = None  # the beam_pipeline.Build of a Beam build

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    # Media configs are read by item index (tfds.data_source), which needs ArrayRecord.
    array_record = tfds.core.FileFormat.ARRAY_RECORD
    if self.builder_config.media and file_format is None and self.info.file_format != array_record:
      self.info.set_file_format(array_record, override=True)

  def download_and_prepare(self, *, download_config=None, **kwargs):
    # TFDS tells a builder that it runs on Beam only through the download config, which
    # `_split_generators` does not get (asking it for a `pipeline` argument would start a
    # Beam pipeline for every build; tensorflow-datasets 4.9.10).
    self._beam = download_config is not None and (download_config.beam_runner is not None or
                                                  download_config.beam_options is not None)
    super().download_and_prepare(download_config=download_config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        features=(examples.media_item_features(cfg.image_size) if cfg.media
                  else examples.pair_features(cfg.feature_dims)),
        supervised_keys=None,
        homepage="https://gaurav22verma.github.io/IMAC_Dataset.html",
        metadata=tfds.core.MetadataDict(),
        # Record i of a media split is item i in id order.
        disable_shuffling=cfg.media,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg: config.ImacConfig = self.builder_config
    if self._beam and cfg.media:
      raise ValueError(f"imac/{cfg.name} builds in-process only; drop --beam_pipeline_options "
                       "(the features configs build on Beam).")
    manual_dir = self._manual_dir(dl_manager)
    if cfg.synthetic is None and manual_dir is None:
      raise AssertionError(f"IMAC needs a manual download.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    encoders = weights.resolve(cfg, manual_dir)  # before any item is made or read
    if cfg.synthetic is not None:
      root = synthetic_corpus_dir(dl_manager.download_dir, cfg.synthetic)
      synthetic_corpus.write_corpus_once(root, cfg.synthetic)
    else:
      root = manual_dir

    log = corpus.SkipLog()
    cues = corpus.read_cues(root)
    images, songs = corpus.scan_images(root, cues, log), corpus.scan_songs(root, cues, log)
    if self._beam:
      # Imported only for a Beam build: Beam takes seconds to import.
      from tfds_imac.imac import beam_pipeline  # pylint: disable=g-import-not-at-top
      self._beam_build = beam_pipeline.Build(images, songs, log.items, cfg, encoders,
                                             epath.Path(self.data_dir) / "imac_beam_build")
      # The metadata arrives after the pipeline ran: `_process_pipeline_result`.
      return {name: self._beam_build.split(name) for name in splits.SPLITS}
    items = in_process.extract_items(images, songs, cfg, encoders, log)
    try:
      plans = plan.plan_splits(items.images, items.segments)
    except ValueError as e:  # a split left empty: the skips say why
      raise ValueError(f"{e}\n{log.summary()}") from None
    self._set_metadata(plan.build_metadata(plans, items.images, items.segments, log,
                                           encoders.metadata(), cfg.descriptor))
    if not cfg.media:
      return {name: self._generate_examples(items, split) for name, split in plans.items()}
    return {f"{name}_{modality}": self._generate_examples(items, split, modality)
            for name, split in plans.items() for modality in MODALITIES}

  def _generate_examples(self, items: in_process.Extracted, split: plan.SplitPlan,
                         modality: str | None = None):
    """The pairs of a split, or (media configs) the items of one modality in id order."""
    cfg: config.ImacConfig = self.builder_config
    if modality is None:
      for i, j, label in zip(split.image_P, split.music_P, split.label_P):
        image, segment = split.images_N[i], split.music_M[j]
        yield examples.pair_example(items.images[image], items.image_feat_NxD[image],
                                    items.segments[segment], items.music_feat_MxD[segment],
                                    int(label))
    elif modality == "images":
      for k, i in enumerate(split.images_N):
        pixels, _ = media.load_image(items.images[i].path, cfg.image_size, cfg.min_image_side)
        yield k, examples.image_item_example(items.images[i], items.image_feat_NxD[i], pixels)
    else:
      # Segments of a song are neighbours in id order, so each song decodes once.
      waveforms = functools.lru_cache(maxsize=1)(
          functools.partial(extract.segment_waveform, desc_cfg=cfg.descriptor))
      for k, j in enumerate(split.music_M):
        segment = items.segments[j]
        yield k, examples.music_item_example(segment, items.music_feat_MxD[j],
                                             waveforms(segment.song.path)[segment.index],
                                             cfg.image_size)

  def _process_pipeline_result(self, pipeline_result) -> None:
    self._set_metadata(self._beam_build.metadata())

  def _post_download_and_prepare_hook(self) -> None:
    """Once the dataset is in its final dir: the skip summary and where the report is."""
    log = corpus.SkipLog()
    for item in self.info.metadata["skipped_items"]:
      log.skip(*item)
    report = epath.Path(self.data_dir) / plan.SKIP_REPORT_FILE
    print(f"{log.summary()}\nEvery skipped item and why: {report}")

  def _set_metadata(self, metadata: dict) -> None:
    """Stores the dataset metadata and writes the skip report beside the dataset files.

    Runs inside TFDS's temporary dataset dir, which becomes the dataset dir only when
    the whole build succeeded: the report appears with the dataset files, atomically.
    """
    self.info.metadata.update(metadata)
    (epath.Path(self.data_dir) / plan.SKIP_REPORT_FILE).write_text(
        plan.skip_report(metadata["skipped_items"]))

  @staticmethod
  def _manual_dir(dl_manager) -> epath.Path | None:
    try:
      return epath.Path(dl_manager.manual_dir)
    except AssertionError:  # raised by TFDS when the manual dir is absent or empty
      return None
