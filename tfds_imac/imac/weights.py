"""Which Inception-V3 weights a build embeds images with: the ImageNet file or random init."""

import os

from etils import epath

from acp_jax.features import inception
from tfds_imac.imac import config

WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Opt-in to random-init image features on the real corpus (value "1").
RANDOM_INCEPTION_ENV = "IMAC_RANDOM_INCEPTION"

_RANDOM_NOTICE = """
{bar}
IMAC: {env}=1, image features come from a RANDOM-INIT Inception-V3,
not the ImageNet weights: results on this dataset are not the paper's setting.
The dataset metadata records inception_weights = "{label}".
{bar}""".replace("{bar}", "!" * 78)


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
