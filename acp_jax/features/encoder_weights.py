"""Checks of a frozen encoder's local weights directory, run before anything is loaded."""

import json

from etils import epath


def read_config(path: epath.Path, files: tuple[str, ...], what: str, fetch: str) -> dict:
  """`path`'s config.json, once the directory is known to hold `files`.

  Raises FileNotFoundError (no directory, missing files) or ValueError (config.json is
  not a JSON object), each naming the directory, what is missing and `fetch`, the way
  to get the weights.
  """
  if not path.is_dir():
    raise FileNotFoundError(f"The {what} weights directory {path} does not exist: {fetch}.")
  missing = [f for f in files if not (path / f).exists()]
  if missing:
    raise FileNotFoundError(
        f"The {what} weights directory {path} lacks {', '.join(missing)}: {fetch}.")
  try:
    config = json.loads((path / "config.json").read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path / 'config.json'} is not JSON ({e}): {fetch}.") from None
  if not isinstance(config, dict):
    raise ValueError(f"{path / 'config.json'} is not a model config: {fetch}.")
  return config
