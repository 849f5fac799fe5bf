"""TensorFlow Datasets builders of this project; importing registers `imac`."""

from tfds_imac.imac import imac_dataset_builder  # noqa: F401  (registers the builder)
