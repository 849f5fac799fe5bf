"""Which weights a build embeds items with: each side's encoder, its weights and their label.

Inception-V3 reads the Keras ImageNet file from the manual dir (random init only for a
synthetic corpus or by opt-in). A frozen encoder (CLIP, SigLIP, CLAP) reads its
checkpoint from one directory of a weights root: $IMAC_ENCODER_WEIGHTS, else
<manual_dir>/encoders. Everything is checked before any item is extracted, and nothing
is ever downloaded.
"""

import hashlib
import os

from etils import epath

from acp_jax.features import clap
from acp_jax.features import clip
from acp_jax.features import inception
from tfds_imac.imac import config

WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Opt-in to random-init image features on the real corpus (value "1").
RANDOM_INCEPTION_ENV = "IMAC_RANDOM_INCEPTION"
# The root of the frozen encoders' weight directories (default: <manual_dir>/encoders).
ENCODER_WEIGHTS_ENV = "IMAC_ENCODER_WEIGHTS"
# Each frozen encoder's directory under the root: its checkpoint's name.
ENCODER_DIRS = {"clip": "clip_vit_base_patch32", "siglip": "siglip_base_patch16_224",
                "clap": "larger_clap_music"}

_RANDOM_NOTICE = """
{bar}
IMAC: {env}=1, image features come from a RANDOM-INIT Inception-V3,
not the ImageNet weights: results on this dataset are not the paper's setting.
The dataset metadata records inception_weights = "{label}".
{bar}""".replace("{bar}", "!" * 78)


def resolve(cfg: config.ImacConfig, manual_dir: epath.Path | None) -> config.Encoders:
  """The encoders of `cfg` and their checked weights; raises before any extraction."""
  if cfg.image_encoder == "inception":
    image_weights, image_label = inception_weights(cfg, manual_dir)
  else:
    image_weights = clip.check_weights_dir(
        cfg.image_encoder, _encoder_dir(cfg, manual_dir, cfg.image_encoder))
    image_label = weights_label(image_weights)
  music_weights = music_label = None
  if cfg.music_encoder == "clap":
    music_weights = clap.check_weights_dir(_encoder_dir(cfg, manual_dir, "clap"))
    music_label = weights_label(music_weights)
  return config.Encoders(cfg.image_encoder, image_weights, image_label, cfg.music_encoder,
                  music_weights, music_label)


def _encoder_dir(cfg: config.ImacConfig, manual_dir: epath.Path | None, encoder: str
                 ) -> epath.Path:
  root = os.environ.get(ENCODER_WEIGHTS_ENV)
  if root:
    return epath.Path(root) / ENCODER_DIRS[encoder]
  if manual_dir is None:
    raise FileNotFoundError(
        f"imac/{cfg.name} embeds with {encoder}, whose weights are read from "
        f"${ENCODER_WEIGHTS_ENV}/{ENCODER_DIRS[encoder]} or <manual_dir>/encoders/"
        f"{ENCODER_DIRS[encoder]}; set {ENCODER_WEIGHTS_ENV} to the directory holding "
        f"{', '.join(sorted(ENCODER_DIRS.values()))} (README, 'Frozen encoders').")
  return manual_dir / "encoders" / ENCODER_DIRS[encoder]


def weights_label(directory: epath.Path) -> str:
  """`<dir name> sha256:<12 hex>` over the directory's files (names and bytes, streamed)."""
  digest = hashlib.sha256()
  for path in sorted(p for p in directory.iterdir() if p.is_file()):
    digest.update(path.name.encode() + b"\0")
    with path.open("rb") as f:
      while block := f.read(1 << 22):
        digest.update(block)
  return f"{directory.name} sha256:{digest.hexdigest()[:12]}"


def inception_weights(cfg: config.ImacConfig, manual_dir: epath.Path | None
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
