"""The IMAC build as an Apache Beam pipeline (TFDS's Beam mode of the `imac` builder).

The launcher only lists the corpus (paths, labels, cues). Workers run the per-item
functions of the in-process build (`extract`, `media`): decode and embed images, decode
and describe songs, one item per element. The pairing (`plan.plan_splits`) sees only
the kept items' ids, labels and cues, gathered in one place; examples are joined from
the features by id. The dataset metadata (`plan.build_metadata`, with every skip) is a
side output, a JSON file under `work_dir` that the builder folds into its info once the
pipeline has run. Workers hold no process-global state and every path goes through
epath, so the same pipeline runs on the DirectRunner, Dataflow, Flink or Spark.
"""

import contextlib
import dataclasses
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence

import apache_beam as beam
from etils import epath
import numpy as np
from tqdm import tqdm

from acp_jax.features import media
from acp_jax.features import music
from tfds_imac.imac import config
from tfds_imac.imac import corpus
from tfds_imac.imac import examples
from tfds_imac.imac import extract
from tfds_imac.imac import plan
from tfds_imac.imac import splits

_SKIP = "skip"
PROGRESS_SECONDS = 2.0  # how often a worker reports its count and the launcher redraws


@contextlib.contextmanager
def _local_file(path: epath.Path):
  """`path` itself when it is on this machine, else a temporary local copy.

  Decoders (h5py, audioread) need a local file; on a cluster the corpus may live in
  an object store.
  """
  if "://" not in os.fspath(path):
    yield path
    return
  with tempfile.TemporaryDirectory() as tmp:
    local = epath.Path(tmp) / path.name
    path.copy(local)
    yield local


class _Progress:
  """Items one worker has done, in a file of its own that the launcher adds up."""

  def __init__(self, directory: epath.Path, modality: str):
    self._directory, self._modality = directory, modality

  def start(self) -> None:
    self._path = self._directory / f"{self._modality}-{uuid.uuid4().hex}"
    self._done, self._written = 0, 0.0

  def add(self, n: int = 1) -> None:
    self._done += n
    if time.monotonic() - self._written > PROGRESS_SECONDS:
      self.flush()

  def flush(self) -> None:
    self._path.write_text(str(self._done))
    self._written = time.monotonic()


class _CountedDoFn(beam.DoFn):
  """A DoFn whose processed items show in the launcher's progress bars."""

  def __init__(self, progress: _Progress):
    self._progress = progress

  def setup(self):
    self._progress.start()

  def finish_bundle(self):
    self._progress.flush()


class _DecodeImage(_CountedDoFn):
  """corpus.Image -> (image, pixels) | skip."""

  def __init__(self, cfg: config.ImacConfig, progress: _Progress):
    super().__init__(progress)
    self._cfg = cfg

  def process(self, image: corpus.Image):
    with _local_file(image.path) as path:
      pixels, reason = media.load_image(path, self._cfg.image_size, self._cfg.min_image_side)
    self._progress.add()
    if reason:
      yield beam.pvalue.TaggedOutput(_SKIP, ("image", corpus.image_file(image), reason))
    else:
      yield image, pixels


class _EmbedImages(beam.DoFn):
  """Batches of (image, pixels) -> (image, D features) | skip.

  Inception's weights file is copied to the worker when it lives in an object store; a
  frozen encoder's weights directory must be on a file system the workers mount.
  """

  def __init__(self, cfg: config.ImacConfig, encoders: config.Encoders):
    self._cfg, self._encoders = cfg, encoders

  def setup(self):
    with contextlib.ExitStack() as stack:
      encoders, weights = self._encoders, self._encoders.image_weights
      if encoders.image == "inception" and weights is not None:
        weights = stack.enter_context(_local_file(weights))
      self._embedder = extract.make_embedder(encoders.image, weights, self._cfg.inception_seed,
                                             self._cfg.image_batch)

  def process(self, batch: Sequence[tuple[corpus.Image, np.ndarray]]):
    feat_BxD, reasons = extract.embed_image_batch(self._embedder,
                                                  np.stack([pixels for _, pixels in batch]))
    for (image, _), feat, reason in zip(batch, feat_BxD, reasons):
      if reason:
        yield beam.pvalue.TaggedOutput(_SKIP, ("image", corpus.image_file(image), reason))
      else:
        yield image, feat


class _SongFeatures(_CountedDoFn):
  """corpus.Song -> (segment, D features) per segment | skip."""

  def __init__(self, cfg: music.DescriptorConfig, clap_weights: epath.Path | None,
               progress: _Progress):
    super().__init__(progress)
    self._cfg, self._clap_weights = cfg, clap_weights

  def process(self, song: corpus.Song):
    with _local_file(song.path) as path:
      feat_SxD, reason = media.song_features(path, self._cfg, self._clap_weights)
    self._progress.add()
    if reason:
      yield beam.pvalue.TaggedOutput(_SKIP, ("music", song.path.name, reason))
      return
    yield from zip(corpus.song_segments(song, len(feat_SxD)), feat_SxD)


def _plan(items: list, skips: list, scan_skips: list, encoders: config.Encoders,
          desc_cfg: music.DescriptorConfig, metadata_path: str):
  """All kept items' records (no features) -> each pair, keyed by its image id.

  Writes the dataset metadata to `metadata_path` on the way: it needs every split.
  """
  images = [item for modality, item in items if modality == "image"]
  segments = [item for modality, item in items if modality == "music"]
  plans = plan.plan_splits(images, segments)
  log = corpus.SkipLog()
  log.items = [*scan_skips, *skips]
  metadata = plan.build_metadata(plans, images, segments, log, encoders.metadata(), desc_cfg)
  epath.Path(metadata_path).write_text(json.dumps(metadata))
  for name, split in plans.items():
    for i, j, label in zip(split.image_P, split.music_P, split.label_P):
      yield images[split.images_N[i]].id, (name, segments[split.music_M[j]].id, int(label))


def _attach_image(joined):
  """Image id, its pairs and features -> each pair, keyed by its segment id."""
  _, group = joined
  (image, feat), = group["image"]
  for name, segment_id, label in group["pair"]:
    yield segment_id, (name, image, feat, label)


def _attach_segment(joined):
  """Segment id, its half-made pairs and features -> (split, (key, example))."""
  _, group = joined
  (segment, feat), = group["segment"]
  for name, image, image_feat, label in group["half"]:
    yield name, examples.pair_example(image, image_feat, segment, feat, label)


class Build:
  """The Beam graph of one build; `split(name)` is what `_generate_examples` returns.

  The graph is shared by the splits: the first split's transform builds it, the
  others take their part of it.
  """

  def __init__(self, images: Sequence[corpus.Image], songs: Sequence[corpus.Song],
               scan_skips: Sequence[tuple[str, str, str]], cfg: config.ImacConfig,
               encoders: config.Encoders, work_dir: epath.Path):
    self._images, self._songs, self._scan_skips = list(images), list(songs), list(scan_skips)
    self._cfg, self._encoders = cfg, encoders
    self._work_dir = epath.Path(work_dir)
    self._by_split = None
    self._bars = None

  def split(self, name: str) -> beam.PTransform:
    return _Split(self, name)

  def part(self, root: beam.pvalue.PBegin, name: str) -> beam.PCollection:
    """(split, (key, example)) of split `name`; builds the shared graph on first use."""
    if self._by_split is None:
      self._by_split = self._graph(root)
    return self._by_split[name]

  @property
  def _metadata_path(self) -> epath.Path:
    return self._work_dir / "metadata.json"

  def _graph(self, root: beam.pvalue.PBegin) -> dict:
    cfg = self._cfg
    progress_dir = self._work_dir / "progress"
    progress_dir.mkdir(parents=True, exist_ok=True)
    decoded = (root
               | "ListImages" >> _ReadItems(self._work_dir / "images.jsonl", self._images,
                                            corpus.Image)
               | "DecodeImage" >> beam.ParDo(_DecodeImage(
                   cfg, _Progress(progress_dir, "image"))).with_outputs(_SKIP, main="item"))
    embedded = (decoded.item
                | "BatchImages" >> beam.BatchElements(min_batch_size=cfg.image_batch,
                                                      max_batch_size=cfg.image_batch)
                | "EmbedImages" >> beam.ParDo(_EmbedImages(cfg, self._encoders)
                                              ).with_outputs(_SKIP, main="item"))
    segments = (root
                | "ListSongs" >> _ReadItems(self._work_dir / "songs.jsonl", self._songs,
                                           corpus.Song)
                | "SongFeatures" >> beam.ParDo(_SongFeatures(
                    cfg.descriptor, self._encoders.music_weights,
                    _Progress(progress_dir, "music"))).with_outputs(_SKIP, main="item"))

    skips = ((decoded[_SKIP], embedded[_SKIP], segments[_SKIP])
             | "AllSkips" >> beam.Flatten()
             | "SkipList" >> beam.combiners.ToList())
    # The pairing needs only ids, labels and cues: the item records travel, not features.
    items = ((embedded.item | "ImageRecord" >> beam.Map(lambda x: ("image", x[0])),
              segments.item | "SegmentRecord" >> beam.Map(lambda x: ("music", x[0])))
             | "AllItems" >> beam.Flatten()
             | "ItemList" >> beam.combiners.ToList())
    pairs = items | "Plan" >> beam.FlatMap(
        _plan, skips=beam.pvalue.AsSingleton(skips), scan_skips=self._scan_skips,
        encoders=self._encoders, desc_cfg=cfg.descriptor,
        metadata_path=os.fspath(self._metadata_path))

    half = ({"pair": pairs,
             "image": embedded.item | "ImageById" >> beam.Map(lambda x: (x[0].id, x))}
            | "JoinImages" >> beam.CoGroupByKey()
            | "AttachImage" >> beam.FlatMap(_attach_image))
    whole = ({"half": half,
              "segment": segments.item | "SegmentById" >> beam.Map(lambda x: (x[0].id, x))}
             | "JoinSegments" >> beam.CoGroupByKey()
             | "AttachSegment" >> beam.FlatMap(_attach_segment))
    parts = whole | "BySplit" >> beam.Partition(
        lambda ex, n: splits.SPLITS.index(ex[0]), len(splits.SPLITS))
    self._bars = _Bars(progress_dir, {"image": len(self._images), "music": len(self._songs)})
    return dict(zip(splits.SPLITS, parts))

  def metadata(self) -> dict:
    """After the pipeline ran: the dataset metadata it computed; cleans up work_dir."""
    if self._bars is not None:
      self._bars.close()
    metadata = json.loads(self._metadata_path.read_text())
    self._work_dir.rmtree()
    return metadata


def _parse_item(line: str, record_type: type):
  fields = json.loads(line)
  return record_type(**{**fields, "path": epath.Path(fields["path"])})


class _ReadItems(beam.PTransform):
  """Item records through a file, spread over the workers.

  A file, not `beam.Create`: Create puts the whole list into the job graph, which
  runners limit in size (Dataflow: 10 MB; IMAC's listing is larger).
  """

  def __init__(self, path: epath.Path, items: Sequence, record_type: type):
    super().__init__()
    self._path, self._items, self._type = path, items, record_type

  def expand(self, root):
    self._path.write_text("".join(
        json.dumps({**dataclasses.asdict(item), "path": os.fspath(item.path)}) + "\n"
        for item in self._items))
    return (root
            | "Read" >> beam.io.ReadFromText(os.fspath(self._path))
            | "Parse" >> beam.Map(_parse_item, self._type)
            | "Spread" >> beam.Reshuffle())


class _Split(beam.PTransform):
  """One split's examples out of the build's shared graph."""

  def __init__(self, build: Build, name: str):
    super().__init__()
    self._build, self._name = build, name

  def expand(self, root):
    # Applied here so that each split's transform has a part of its own (Beam pickles
    # a transform without parts as if it were a primitive).
    return (self._build.part(root, self._name)
            | "Examples" >> beam.Map(lambda split_example: split_example[1]))


class _Bars:
  """Per-modality tqdm bars (items/s, ETA) over the counts all workers report."""

  def __init__(self, directory: epath.Path, totals: dict[str, int]):
    self._directory = directory
    # Named as the in-process build's bars: images count images, music counts songs.
    self._bars = {m: tqdm(total=n, desc=f"IMAC {'images' if m == 'image' else m}",
                          unit="image" if m == "image" else "song")
                  for m, n in totals.items()}
    self._stop = threading.Event()
    # A daemon: if the pipeline fails, TFDS removes the directory and the thread ends.
    self._thread = threading.Thread(target=self._poll, daemon=True)
    self._thread.start()

  def _poll(self):
    while not self._stop.wait(PROGRESS_SECONDS) and self._directory.exists():
      self._update()

  def _update(self):
    done = dict.fromkeys(self._bars, 0)
    with contextlib.suppress(OSError, ValueError):  # a worker may be writing its file
      for f in self._directory.iterdir():
        done[f.name.split("-")[0]] += int(f.read_text())
    for m, bar in self._bars.items():
      bar.update(min(done[m], bar.total) - bar.n)  # retried bundles count twice

  def close(self):
    self._stop.set()
    self._thread.join()
    self._update()
    for bar in self._bars.values():
      bar.close()
