"""What a test needs beyond the default install: skipped without it, but not in CI.

`.ci/run` sets ACP_REQUIRE_OPTIONAL=1 after installing every optional piece (the
`clap` extra, Chromium), so there a missing piece fails the test instead of hiding it.
"""

import importlib
import os
import shutil

import pytest

REQUIRE_ENV = "ACP_REQUIRE_OPTIONAL"


def _missing(why: str):
  if os.environ.get(REQUIRE_ENV) == "1":
    pytest.fail(f"{why}, and {REQUIRE_ENV}=1 says it must be installed.")
  pytest.skip(why)


def module(name: str, install: str):
  """The imported module `name`; skips (fails under ACP_REQUIRE_OPTIONAL=1) without it."""
  try:
    return importlib.import_module(name)
  except ImportError:
    _missing(f"{name} is not installed ({install})")


def executable(name: str, install: str) -> str:
  """The path of program `name`; skips (fails under ACP_REQUIRE_OPTIONAL=1) without it."""
  path = shutil.which(name)
  if path is None:
    _missing(f"{name} is not on PATH ({install})")
  return path
