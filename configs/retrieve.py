r"""Query by example: an audio or image file against a prepared dataset, with a trained run.

  python launch.py --config=configs/retrieve.py --config.checkpoint_dir=/tmp/acp_synthetic \
      --config.query=song.wav --workdir=/tmp/acp_query

Prints the top matches of the other modality (an audio file ranks images, an image
file ranks music segments): id, split, class, emotion and match log-odds; writes them
to <workdir>/matches.json, and <workdir>/report.html shows (or plays) the query and
its matches. The query's features are computed as the dataset's were (its recorded
descriptor config and encoders' weights). Seconds on a CPU, plus ~10 s
to compile Inception-V3 for an image query.

Audio: .wav .flac .mp3 .ogg .m4a, at least one segment long (6 s for imac/synthetic,
60 s for IMAC). Images: .jpg .jpeg .png .bmp .gif .tif .tiff .webp.
"""

import ml_collections

from configs import acp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The retrieve job; no variants."""
  if arg is not None:
    raise ValueError(f"configs/retrieve.py takes no argument, got {arg!r}")
  config = ml_collections.ConfigDict()
  config.job = "retrieve"               # launch.py runs query.run
  placeholder = ml_collections.config_dict.placeholder
  config.checkpoint_dir = placeholder(str)  # the trained run's workdir (required)
  config.query = placeholder(str)       # the audio or image file (required)
  config.dataset = placeholder(str)     # None: the run's; else must match it
  config.data_dir = placeholder(str)    # TFDS data dir; None: the run's
  config.split = "all"                  # items searched: train, validation, test or all
  config.top_k = 10                     # matches printed
  config.seed_index = placeholder(int)  # which seed of the run; None: best validation
  # The Keras Inception-V3 .h5 the dataset was built with, needed for image queries when
  # its metadata says 'imagenet' (for the real IMAC: <manual_dir>/inception_v3_..._notop.h5).
  config.inception_weights = placeholder(str)
  # Datasets of frozen encoders (imac/clip_clap, ...): the directory holding the encoders'
  # weight directories that the dataset was built with; None: $IMAC_ENCODER_WEIGHTS.
  config.encoder_weights = placeholder(str)
  config.score_block = acp.evals_config().retrieval.score_block  # pairs scored per call
  config.media = acp.media_config()     # report.html: the query's and matches' media
  return config
