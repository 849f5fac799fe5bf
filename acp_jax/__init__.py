"""acp-jax: affective correspondence between music and images (ACP-Net) in JAX/Flax."""


class UserError(ValueError):
  """An error the user can fix; its message says how. launch.py prints it as one line.

  A ValueError, so that callers that catch bad values keep catching it.
  """


class MissingInputError(UserError, FileNotFoundError):
  """A UserError about a file or dataset that is not there; a FileNotFoundError too."""
