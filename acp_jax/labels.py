"""Emotion label sets of IMAC and the paper's rules that map raw annotations to them."""

from collections.abc import Sequence

# Broad classes, most positive first: song ties resolve to the lowest index.
CLASSES = ("positive", "neutral", "negative")

# The eight Image Emotion (FI) categories, in alphabetical order.
EMOTIONS = (
    "amusement", "anger", "awe", "contentment",
    "disgust", "excitement", "fear", "sadness",
)

# Paper, Table 1.
EMOTION_TO_CLASS = {
    "awe": 0, "amusement": 0, "excitement": 0,
    "contentment": 1,
    "fear": 2, "disgust": 2, "anger": 2, "sadness": 2,
}


def song_class(scores: Sequence[float]) -> int:
  """Class of a song from its (positive, neutral, negative) scores.

  The highest score wins; a tie goes to the more positive class (paper, section 2).
  """
  if len(scores) != len(CLASSES):
    raise ValueError(f"expected {len(CLASSES)} scores, got {len(scores)}")
  best = max(scores)
  return next(i for i, s in enumerate(scores) if s == best)
