"""Query by example: an audio or image file ranked against a dataset's other modality.

`run(config, workdir)` is the retrieve job of launch.py (configs/retrieve.py). The
query's features are computed as the dataset builder computed the dataset's: music
descriptors with the descriptor config the builder recorded in the dataset's
metadata; an image loaded and resized as the builder does, through Inception-V3 with
the weights (or random-init seed) it recorded. A dataset of frozen encoders (CLIP,
SigLIP, CLAP) embeds the query with the same encoder, from a weights directory whose
digest must be the one the build recorded. The run's training statistics then
standardise them, and the model's towers and fusion head score them against every
item of the other modality in the chosen splits. The job's report.html shows the query
and its matches with their media (acp_jax/gallery.py).
"""

import json
import os
import re

from etils import epath
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from acp_jax import MissingInputError
from acp_jax import UserError
from acp_jax import data
from acp_jax import evaluate
from acp_jax import gallery
from acp_jax import inputs
from acp_jax import labels
from acp_jax import report
from acp_jax.evaluators import common
from acp_jax.features import clip
from acp_jax.features import inception
from acp_jax.features import media
from acp_jax.features import music
from tfds_imac.imac import corpus
from tfds_imac.imac import weights

SPLITS = ("train", "validation", "test")
# How the builder records random-init Inception weights (tfds_imac/imac/weights.py).
_RANDOM_WEIGHTS = re.compile(r"random\(seed=(\d+)\)")


def _image_embedder(recorded: str, weights_file: str | None) -> inception.ImageEmbedder:
  """The Inception-V3 the dataset's image features came from, per its metadata."""
  if recorded == "imagenet":
    if not weights_file or not epath.Path(weights_file).exists():
      raise MissingInputError(
          "the dataset's image features come from the Keras ImageNet weights of Inception-V3; "
          "pass the file it was built with: --config.inception_weights=<manual_dir>/"
          "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
    variables = inception.load_keras_weights(weights_file)
  elif match := _RANDOM_WEIGHTS.fullmatch(recorded):
    variables = inception.random_variables(int(match.group(1)))
  else:
    raise UserError(f"the dataset's metadata names unknown Inception weights {recorded!r}; "
                     "rebuild the dataset")
  # One image: a batch of one per device, not the builder's 64.
  return inception.ImageEmbedder(variables, batch_size=jax.device_count())


def _encoder_weights(encoder: str, recorded: str, root: str | None) -> epath.Path:
  """The weights directory of a frozen encoder, checked against the build's digest."""
  root = root or os.environ.get(weights.ENCODER_WEIGHTS_ENV)
  if not root:
    raise MissingInputError(
        f"the dataset's features come from {encoder} ({recorded}); pass the directory "
        f"holding its weights (the build's {weights.ENCODER_WEIGHTS_ENV}): "
        f"--config.encoder_weights=<dir with {weights.ENCODER_DIRS[encoder]}/>")
  directory = epath.Path(root) / weights.ENCODER_DIRS[encoder]
  directory = (clip.check_weights_dir(encoder, directory) if encoder in clip.ENCODERS
               else _clap().check_weights_dir(directory))
  if (label := weights.weights_label(directory)) != recorded:
    raise UserError(f"{directory} holds other {encoder} weights ({label}) than the dataset "
                    f"was built with ({recorded}); pass the build's weights directory")
  return directory


def _clap():
  from acp_jax.features import clap  # pylint: disable=g-import-not-at-top  (the extra)
  return clap


def query_modality(path: epath.PathLike) -> str:
  """'music' or 'image' by the file's extension; raises if it is missing or of another type."""
  path = epath.Path(path)
  if not path.is_file():
    raise MissingInputError(f"query file {path} does not exist")
  suffix = path.suffix.lower()
  if suffix in corpus.AUDIO_EXTENSIONS:
    return "music"
  if suffix in corpus.IMAGE_EXTENSIONS:
    return "image"
  raise UserError(
      f"{path}: unsupported file type {suffix or '(no extension)'!r}; a query is an image "
      f"({' '.join(sorted(corpus.IMAGE_EXTENSIONS))}) or audio "
      f"({' '.join(sorted(corpus.AUDIO_EXTENSIONS))})")


def query_features(path: epath.PathLike, builder: tfds.core.DatasetBuilder,
                   inception_weights: str | None, encoder_weights: str | None = None
                   ) -> tuple[str, np.ndarray]:
  """('music', S x D features of the file's segments) or ('image', 1 x D), by the
  dataset's encoders; `encoder_weights` is the root of a frozen encoder's weights.

  Raises FileNotFoundError for a missing file and ValueError for one of another type
  or one that cannot be decoded (with the reason).
  """
  modality, path, metadata = query_modality(path), epath.Path(path), builder.info.metadata
  encoders = data.dataset_encoders(metadata)
  if modality == "music":
    desc_cfg = music.DescriptorConfig(**metadata["descriptor"])
    try:
      if encoders["music"] == "descriptor":
        return modality, music.song_descriptors(path, desc_cfg)
      embedder = _clap().ClapEmbedder(
          _encoder_weights("clap", encoders["music_weights"], encoder_weights))
      return modality, _clap().song_embeddings(path, desc_cfg, embedder)
    except music.AudioError as e:
      raise UserError(f"cannot use {path} as a music query: {e}") from e
  cfg = builder.builder_config
  pixels_HxWx3, reason = media.load_image(path, cfg.image_size, cfg.min_image_side)
  if reason:
    raise UserError(f"cannot use {path} as an image query: {reason}")
  if encoders["image"] == "inception":
    embedder = _image_embedder(metadata["inception_weights"], inception_weights)
  else:
    embedder = clip.VisionEmbedder(
        encoders["image"],
        _encoder_weights(encoders["image"], encoders["image_weights"], encoder_weights),
        batch_size=jax.device_count())
  return modality, embedder(pixels_HxWx3[None])


def _pool(subject: common.Subject, names: tuple[str, ...], modality: str
          ) -> tuple[list[dict], list[tuple[str, int]], np.ndarray]:
  """The searched items of one modality (id, split, class, emotion), where each is (its
  split and index there), and their embeddings."""
  found, places, embeddings = [], [], []
  for name in names:
    image_NxE, music_MxE = subject.seed_embeddings(name)
    side = subject.splits[name].images if modality == "image" else subject.splits[name].music
    embeddings.append(image_NxE if modality == "image" else music_MxE)
    for i, item_id in enumerate(side.ids):
      item = {"id": item_id, "split": name, "class": labels.CLASSES[side.labels_N[i]]}
      if side.emotions_N is not None:
        item["emotion"] = labels.EMOTIONS[side.emotions_N[i]]
      found.append(item)
      places.append((name, i))
  return found, places, np.concatenate(embeddings)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The retrieve job: prints the query's top matches and writes `<workdir>/matches.json`,
  and `<workdir>/report.html`, which shows or plays the query and its matches.

  A music query of several segments scores each segment against each image and ranks
  the images by the mean log-odds over its segments.

  Returns:
    {'query', 'modality', 'segments', 'dataset', 'splits', 'pool_size', 'model',
     'matches': [{'rank', 'id', 'split', 'class', 'emotion' (images), 'score'}]}.
  """
  for field in ("checkpoint_dir", "query"):
    if not config[field]:
      raise UserError(f"set --config.{field} (see configs/retrieve.py)")
  names = SPLITS if config.split == "all" else (config.split,)
  if not set(names) <= set(SPLITS):
    raise UserError(f"config.split must be one of {SPLITS} or 'all', got {config.split!r}")
  query_modality(config.query)  # a missing or unsupported file fails before the restore
  subject = evaluate.restore(config.checkpoint_dir, dataset=config.dataset,
                             data_dir=config.data_dir, seed=config.seed_index)
  run_config = subject.config
  if inputs.kinds(run_config) != ("features", "features"):
    raise UserError(f"{config.checkpoint_dir} is a {run_config.model!r} run, which reads "
                    "media; queries by file are for models on the dataset's features "
                    "(configs/acp.py)")
  dataset, data_dir = run_config.dataset, config.data_dir or run_config.data_dir
  modality, features_SxD = query_features(config.query, tfds.builder(dataset, data_dir=data_dir),
                                          config.inception_weights, config.encoder_weights)

  variables = subject.seed_variables(subject.seed)
  image_std, music_std = subject.feed.standardizers
  embed = lambda rows_NxD, method: np.asarray(inputs.embed_rows(
      subject.module, variables, rows_NxD, method, run_config.batch_size))
  if modality == "music":
    query_SxE = embed(music_std(features_SxD), "embed_music")
    found, places, pool_NxE = _pool(subject, names, "image")
    score_N = common.match_scores(subject.module, variables, query_SxE, pool_NxE,
                                  config.score_block).mean(axis=0)
  else:
    query_1xE = embed(image_std(features_SxD), "embed_image")
    found, places, pool_NxE = _pool(subject, names, "music")
    score_N = common.match_scores(subject.module, variables, pool_NxE, query_1xE,
                                  config.score_block)[:, 0]
  subject.feed.close()

  top = np.argsort(-score_N, kind="stable")[:config.top_k]
  matches = [{"rank": r + 1, **found[i], "score": float(score_N[i])} for r, i in enumerate(top)]
  result = {"query": str(config.query), "modality": modality, "segments": len(features_SxD),
            "dataset": dataset, "splits": list(names), "pool_size": len(found),
            "model": f"{config.checkpoint_dir}, {subject.description}", "matches": matches}
  print(_table(result))
  out = epath.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "matches.json").write_text(json.dumps(result, indent=2) + "\n")

  listening = gallery.Gallery({name: subject.splits[name] for name in names}, out, config.media)
  other = "image" if modality == "music" else "music"
  shown = {**listening.query_file(config.query, modality), "matches": []}
  for i in top:  # a query file has no class: its matches are not marked
    split, index = places[i]
    shown["matches"].append({**listening.item(split, other, index), "score": float(score_N[i]),
                             "match": None})
  report.write_html(out, f"Query: {epath.Path(config.query).name}",
                    {"gallery": {"notes": listening.notes, f"{modality}_to_{other}": [shown]}},
                    intro=_heading(result))
  return result


def _heading(result: dict) -> list[str]:
  other = "images" if result["modality"] == "music" else "music segments"
  segments = (f", {result['segments']} segment(s), log-odds averaged over them"
              if result["modality"] == "music" else "")
  return [f"Query: {result['query']} ({result['modality']}{segments})",
          f"Top {len(result['matches'])} of {result['pool_size']} {other} in {result['dataset']} "
          f"({'+'.join(result['splits'])}) by match log-odds; model: {result['model']}"]


def _table(result: dict) -> str:
  lines = [*_heading(result),
           f"{'rank':>4}  {'score':>8}  {'class':<9} {'emotion':<12} {'split':<11} id"]
  for m in result["matches"]:
    lines.append(f"{m['rank']:>4}  {m['score']:>8.3f}  {m['class']:<9} {m.get('emotion', '-'):<12} "
                 f"{m['split']:<11} {m['id']}")
  return "\n".join(lines)
