"""numba's on-disk cache, written by one process at a time.

librosa compiles numba kernels and caches them on disk: its gufuncs (`util.localmax`,
`util.peak_pick`, piptrack's interpolation, `zero_crossings`'s) as the modules that
declare them are imported, which librosa's lazy loader does at their first use; its
other kernels on first call; so do this package's kernels. Two processes compiling the
same gufunc at once can write a cache that segfaults every later process that calls it
(numba issue #10128): on a fresh install, a builder's worker pool, Beam's workers and
parallel tests did.

Importing this module imports those librosa modules under a machine-wide file lock, and
`first_call_serialised` runs a function's first call in each process under the same
lock: the first process compiles, the others load its cache. Import it before anything
touches librosa.
"""

import contextlib
import fcntl
import functools
import os
import tempfile

_LOCK_PATH = os.path.join(tempfile.gettempdir(), "acp_jax-librosa-numba.lock")
_lock_held = False


@contextlib.contextmanager
def _lock():
  global _lock_held
  with open(_LOCK_PATH, "a") as lock_file:  # closing it releases the lock
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    _lock_held = True
    try:
      yield
    finally:
      _lock_held = False


def first_call_serialised(fn):
  """Runs each process's first call of `fn` under the lock; later calls take none.

  A first call made inside another one's lock runs under it (within a process numba
  compiles one function at a time).
  """
  warm = False

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    nonlocal warm
    if warm or _lock_held:
      return fn(*args, **kwargs)
    with _lock():
      out = fn(*args, **kwargs)
    warm = True
    return out
  return wrapper


# The librosa modules that compile gufuncs as they are imported (librosa.beat, unused
# here, is the other one).
with _lock():
  # pylint: disable=g-import-not-at-top,unused-import
  import librosa.core.audio
  import librosa.core.pitch
  import librosa.util.utils
