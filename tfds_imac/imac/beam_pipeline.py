"""The IMAC build as an Apache Beam pipeline (TFDS's Beam mode of the `imac` builder).

The launcher only lists the corpus (paths, labels, cues). Workers decode and embed
images and decode and describe songs, one item per element; pairing sees only ids,
labels and cues, one group per split; examples are joined from the features by id.
Skips and per-split summaries become the pipeline's last output, a JSON file under
`work_dir` that the builder folds into the dataset metadata once the pipeline has run.
Workers hold no process-global state and every path goes through epath, so the same
pipeline runs on the DirectRunner, Dataflow, Flink or Spark.
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

from acp_jax.features import inception
from acp_jax.features import media
from acp_jax.features import music
from tfds_imac.imac import corpus
from tfds_imac.imac import splits

_SKIP = "skip"
_SUMMARY = "summary"
_MODALITIES = ("image", "music")
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


class _DecodeImage(beam.DoFn):
  """corpus.Image -> (image, 224x224x3 pixels) | skip."""

  def __init__(self, size: int, min_side: int, progress: _Progress):
    self._size, self._min_side, self._progress = size, min_side, progress

  def setup(self):
    self._progress.start()

  def process(self, image: corpus.Image):
    with _local_file(image.path) as path:
      pixels, reason = media.load_image(path, self._size, self._min_side)
    self._progress.add()
    if reason:
      yield beam.pvalue.TaggedOutput(_SKIP, ("image", image.id, reason))
    else:
      yield image, pixels

  def finish_bundle(self):
    self._progress.flush()


class _EmbedImages(beam.DoFn):
  """Batches of (image, pixels) -> (image, 2048 features) | skip."""

  def __init__(self, weights: epath.Path | None, seed: int):
    self._weights, self._seed = weights, seed

  def setup(self):
    if self._weights is None:
      self._embedder = inception.ImageEmbedder.from_weights_file(None, seed=self._seed)
      return
    with _local_file(self._weights) as path:
      self._embedder = inception.ImageEmbedder.from_weights_file(path, seed=self._seed)

  def process(self, batch: Sequence[tuple[corpus.Image, np.ndarray]]):
    feat_Bx2048 = self._embedder(np.stack([pixels for _, pixels in batch]))
    for (image, _), feat in zip(batch, feat_Bx2048):
      if np.isfinite(feat).all():
        yield image, feat
      else:
        yield beam.pvalue.TaggedOutput(_SKIP, ("image", image.id, "non-finite image features"))


class _DescribeSong(beam.DoFn):
  """corpus.Song -> ((song, segment id), 193 descriptor) per segment | skip."""

  def __init__(self, cfg: music.DescriptorConfig, progress: _Progress):
    self._cfg, self._progress = cfg, progress

  def setup(self):
    self._progress.start()

  def process(self, song: corpus.Song):
    with _local_file(song.path) as path:
      desc_Sx193, reason = media.describe_song(path, self._cfg)
    self._progress.add()
    if reason:
      yield beam.pvalue.TaggedOutput(_SKIP, ("music", song.id, reason))
      return
    for k, row in enumerate(desc_Sx193):
      yield (song, f"{song.id}#{k:03d}"), row

  def finish_bundle(self):
    self._progress.flush()


class _PairSplit(beam.DoFn):
  """(split, items) -> (split, k, image id, segment id, label) | summary, from ids alone."""

  def __init__(self, pair_split):
    self._pair_split = pair_split

  def process(self, split_items):
    name, items = split_items
    images = [item for modality, item in items if modality == "image"]
    segments = [item for modality, item in items if modality == "music"]
    pairs, summary = self._pair_split(name, images, segments)
    yield beam.pvalue.TaggedOutput(_SUMMARY, (name, summary))
    for k, (i, j, label) in enumerate(pairs):
      yield name, k, images[i].id, segments[j][1], label


def _attach_image(joined):
  """Image id, its pairs and features -> each pair keyed by its segment id."""
  _, group = joined
  (image, feat), = group["image"]
  for pair in group["pair"]:
    yield pair[3], (pair, image, feat)


def _write_summary(path: str, scan_skips: list, skips: list, summaries: list) -> None:
  # Workers finish in any order; the in-process build reports skips by modality, then id.
  skips = sorted(skips, key=lambda s: (_MODALITIES.index(s[0]), s[1]))
  epath.Path(path).write_text(json.dumps({
      "skipped_items": [list(s) for s in scan_skips] + [list(s) for s in skips],
      "splits": dict(summaries),
  }))


class Build:
  """The Beam graph of one build; `split(name)` is what `_generate_examples` returns.

  The graph is shared by the splits: the first split's transform builds it, the
  others take their part of it.
  """

  def __init__(self, images: Sequence[corpus.Image], songs: Sequence[corpus.Song],
               scan_skips: Sequence[tuple[str, str, str]], *, image_size: int,
               min_image_side: int, image_batch: int, inception_seed: int,
               weights: epath.Path | None, descriptor: music.DescriptorConfig,
               split_of, pair_split, pair_example, work_dir: epath.Path):
    """`split_of(modality, id)`, `pair_split` and `pair_example` are the builder's own
    functions, so both build modes assign, pair and write examples alike."""
    self._images, self._songs, self._scan_skips = list(images), list(songs), list(scan_skips)
    self._image_size, self._min_image_side = image_size, min_image_side
    self._image_batch, self._inception_seed, self._weights = image_batch, inception_seed, weights
    self._descriptor = descriptor
    self._split_of, self._pair_split, self._pair_example = split_of, pair_split, pair_example
    self._work_dir = epath.Path(work_dir)
    self._by_split = None
    self._bars = None

  @property
  def summary_path(self) -> epath.Path:
    return self._work_dir / "summary.json"

  def split(self, name: str) -> beam.PTransform:
    return _Split(self, name)

  def part(self, root: beam.pvalue.PBegin, name: str) -> beam.PCollection:
    """(split, (key, example)) of split `name`; builds the shared graph on first use."""
    if self._by_split is None:
      self._by_split = self._graph(root)
    return self._by_split[name]

  def _graph(self, root: beam.pvalue.PBegin) -> dict:
    progress_dir = self._work_dir / "progress"
    progress_dir.mkdir(parents=True, exist_ok=True)
    decoded = (root
               | "ListImages" >> _ReadItems(self._work_dir / "images.jsonl", self._images,
                                            corpus.Image)
               | "DecodeImage" >> beam.ParDo(_DecodeImage(
                   self._image_size, self._min_image_side,
                   _Progress(progress_dir, "image"))).with_outputs(_SKIP, main="item"))
    embedded = (decoded.item
                | "BatchImages" >> beam.BatchElements(min_batch_size=self._image_batch,
                                                      max_batch_size=self._image_batch)
                | "EmbedImages" >> beam.ParDo(_EmbedImages(
                    self._weights, self._inception_seed)).with_outputs(_SKIP, main="item"))
    segments = (root
                | "ListSongs" >> _ReadItems(self._work_dir / "songs.jsonl", self._songs,
                                           corpus.Song)
                | "DescribeSong" >> beam.ParDo(_DescribeSong(
                    self._descriptor, _Progress(progress_dir, "music"))
                                               ).with_outputs(_SKIP, main="item"))

    split_of = self._split_of
    items = (
        (embedded.item | "ImageSplit" >> beam.Map(
            lambda x: (split_of("image", x[0].id), ("image", x[0]))),
         segments.item | "SegmentSplit" >> beam.Map(
             lambda x: (split_of("music", x[0][0].id), ("music", x[0]))))
        | "AllItems" >> beam.Flatten())
    pairs = (items
             | "GroupBySplit" >> beam.GroupByKey()
             | "Pair" >> beam.ParDo(_PairSplit(self._pair_split)).with_outputs(
                 _SUMMARY, main="pair"))

    pair_example = self._pair_example
    half = ({"pair": pairs.pair | "PairByImage" >> beam.Map(lambda p: (p[2], p)),
             "image": embedded.item | "ImageById" >> beam.Map(lambda x: (x[0].id, x))}
            | "JoinImages" >> beam.CoGroupByKey()
            | "AttachImage" >> beam.FlatMap(_attach_image))

    def attach_segment(joined):
      _, group = joined
      ((song, segment_id), feat), = group["segment"]
      for (name, k, _, _, label), image, image_feat in group["half"]:
        yield name, pair_example(k, image, image_feat, song, segment_id, feat, label)

    examples = ({"half": half,
                 "segment": segments.item | "SegmentById" >> beam.Map(lambda x: (x[0][1], x))}
                | "JoinSegments" >> beam.CoGroupByKey()
                | "AttachSegment" >> beam.FlatMap(attach_segment))

    skips = ((decoded[_SKIP], embedded[_SKIP], segments[_SKIP])
             | "AllSkips" >> beam.Flatten()
             | "SkipList" >> beam.combiners.ToList())
    summaries = pairs[_SUMMARY] | "SummaryList" >> beam.combiners.ToList()
    _ = (root
         | "SummaryPath" >> beam.Create([os.fspath(self.summary_path)])
         | "WriteSummary" >> beam.Map(_write_summary, scan_skips=self._scan_skips,
                                      skips=beam.pvalue.AsSingleton(skips),
                                      summaries=beam.pvalue.AsSingleton(summaries)))

    parts = examples | "BySplit" >> beam.Partition(
        lambda ex, n: splits.SPLITS.index(ex[0]), len(splits.SPLITS))
    self._bars = _Bars(progress_dir, {"image": len(self._images), "music": len(self._songs)})
    return dict(zip(splits.SPLITS, parts))

  def result(self) -> tuple[list[tuple[str, str, str]], dict]:
    """After the pipeline ran: (skipped items, {split: summary}); cleans up work_dir."""
    if self._bars is not None:
      self._bars.close()
    summary = json.loads(self.summary_path.read_text())
    self._work_dir.rmtree()
    missing = [name for name in splits.SPLITS if name not in summary["splits"]]
    if missing:
      raise ValueError(f"The split(s) {missing} got no images or no music segments; IMAC "
                       "needs both in every split. Add more items.")
    return [tuple(s) for s in summary["skipped_items"]], summary["splits"]


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
    self._bars = {m: tqdm(total=n, desc=f"IMAC {m} (beam)", unit="item" if m == "image" else "song")
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
