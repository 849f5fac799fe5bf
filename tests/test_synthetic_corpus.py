"""The synthetic IMAC corpus: layout, determinism, label noise and recoverable cues."""

import csv
import dataclasses
import hashlib

import librosa
import numpy as np
from PIL import Image
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
import soundfile as sf

from acp_jax import labels
from acp_jax.features import numba_cache
from tfds_imac import synthetic
from tfds_imac.imac import corpus

CFG = synthetic.CorpusConfig()
# Still has a FLAC song (every 5th) and a 44.1 kHz stereo one (every 7th).
SMALL = dataclasses.replace(CFG, num_images=12, num_songs=8, song_seconds=2.0)
EXCERPT_SECONDS = 6.0  # one segment of the `imac/synthetic` builder config
MIN_CUE_ACCURACY = 0.95
SCORE_COLUMNS = ("pos_score", "neu_score", "neg_score")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  path = tmp_path_factory.mktemp("synthetic") / "corpus"
  synthetic.write_corpus(path, CFG)
  return path


def _read_csv(path) -> tuple[list[str], list[dict[str, str]]]:
  with path.open(newline="") as f:
    reader = csv.DictReader(f)
    return list(reader.fieldnames), list(reader)


def _cues(root) -> dict[tuple[str, str], int]:
  return {(r["modality"], r["item_id"]): int(r["cue"]) for r in _read_csv(root / "cues.csv")[1]}


def _song_labels(root) -> dict[str, int]:
  return {r["song_id"]: labels.song_class([float(r[c]) for c in SCORE_COLUMNS])
          for r in _read_csv(root / "music.csv")[1]}


def _cv_accuracy(x_NxF: np.ndarray, y_N: np.ndarray) -> float:
  model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
  folds = StratifiedKFold(5, shuffle=True, random_state=0)
  return float(cross_val_score(model, x_NxF, y_N, cv=folds).mean())


def _assert_items_vary(x_NxF: np.ndarray, cue_N: np.ndarray) -> None:
  """Every statistic varies within every cue class: items are not copies of one template."""
  for c in range(len(labels.CLASSES)):
    assert (x_NxF[cue_N == c].std(axis=0) > 0.01 * x_NxF.std(axis=0)).all(), c


def test_layout_headers_and_media(root):
  assert _read_csv(root / "music.csv")[0] == [
      "song_id", "artist", "title", "pos_score", "neu_score", "neg_score"]
  assert _read_csv(root / "cues.csv")[0] == ["modality", "item_id", "cue"]
  cues = _cues(root)

  images = sorted((root / "images").glob("*/*"))
  assert len(images) == CFG.num_images
  assert {p.parent.name for p in images} <= set(labels.EMOTIONS)
  image_ids = {("image", f"{p.parent.name}/{p.name}") for p in images}
  assert image_ids == {k for k in cues if k[0] == "image"}
  sizes = set()
  for path in images:
    assert path.suffix == ".jpg"
    with Image.open(path) as img:
      assert img.format == "JPEG" and img.mode == "RGB"
      sizes.add(img.size)
  assert all(160 <= side <= 320 for size in sizes for side in size)
  assert any(w != h for w, h in sizes) and len(sizes) > 3

  songs = sorted((root / "music").iterdir())
  song_ids = {p.stem for p in songs}
  assert song_ids == set(_song_labels(root)) == {k[1] for k in cues if k[0] == "music"}
  assert {p.suffix for p in songs} == {".wav", ".flac"}
  formats = set()
  for path in songs:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    formats.add((sr, audio.shape[1]))
    assert audio.shape[0] == round(CFG.song_seconds * sr)
    assert np.abs(audio).max() <= 1.0 and np.sqrt(np.mean(audio**2)) > 0.01, path.name
  assert formats == {(CFG.sample_rate, 1), (44100, 2)}


def test_the_builder_scan_takes_every_item(root):
  log = corpus.SkipLog()
  cues = corpus.read_cues(root)
  images = corpus.scan_images(root, cues, log)
  songs = corpus.scan_songs(root, cues, log)
  assert not log.items, log.summary()
  assert (len(images), len(songs)) == (CFG.num_images, CFG.num_songs)
  assert all(item.cue >= 0 for item in images + songs)


def test_same_seed_same_bytes(tmp_path):
  roots = [tmp_path / name for name in ("a", "b", "c")]
  for path, seed in zip(roots, (0, 0, 1)):
    synthetic.write_corpus(path, dataclasses.replace(SMALL, seed=seed))

  def digests(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}

  a, b, c = (digests(path) for path in roots)
  assert a == b
  assert {"music/song_0003.wav", "music/song_0004.flac", "music.csv", "cues.csv"} <= set(a)
  assert a["music.csv"] != c["music.csv"]
  assert set(a.values()).isdisjoint(v for k, v in c.items() if k.startswith(("music/", "images/")))


def test_rewrites_its_own_corpus_and_refuses_other_dirs(tmp_path):
  path = tmp_path / "corpus"
  synthetic.write_corpus(path, SMALL)
  synthetic.write_corpus(path, dataclasses.replace(SMALL, num_images=6, num_songs=4))
  assert len(list((path / "images").glob("*/*"))) == 6  # nothing of the first corpus left
  assert len(list((path / "music").iterdir())) == 4

  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(ValueError, match="not empty and holds no synthetic corpus"):
    synthetic.write_corpus(foreign, SMALL)
  with pytest.raises(ValueError, match="is a file"):
    synthetic.write_corpus(foreign / "notes.txt", SMALL)
  assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("field, value",
                         [("label_noise", 1.5), ("num_songs", 2), ("song_seconds", 0.0)])
def test_config_rejects_bad_values(field, value):
  with pytest.raises(ValueError, match=field):
    dataclasses.replace(CFG, **{field: value})


def test_labels_follow_cues_up_to_the_label_noise(root):
  cues = _cues(root)
  song_labels = _song_labels(root)
  image_pairs = [(labels.EMOTION_TO_CLASS[item.split("/")[0]], cue)
                 for (modality, item), cue in cues.items() if modality == "image"]
  song_pairs = [(song_labels[item], cue)
                for (modality, item), cue in cues.items() if modality == "music"]
  for pairs in (image_pairs, song_pairs):
    label_N, cue_N = np.array(pairs).T
    assert np.ptp(np.bincount(cue_N)) <= 1  # balanced cue classes
    # Exactly round(noise * n) items disagree; a tie resolved against its label adds one.
    assert np.sum(label_N != cue_N) == round(CFG.label_noise * len(pairs))
    assert len({(l, c) for l, c in pairs if l != c}) > 3  # noise reaches every other class

  scores = [[r[c] for c in SCORE_COLUMNS] for r in _read_csv(root / "music.csv")[1]]
  assert any(s.count(max(s, key=float)) > 1 for s in scores), "no tie to exercise the tie rule"


def _image_stats(path) -> np.ndarray:
  """Mean hue, saturation and brightness, and the mean brightness step between neighbours."""
  with Image.open(path) as img:
    hsv_HxWx3 = np.asarray(img.convert("HSV"), np.float32) / 255
  value_HxW = hsv_HxWx3[..., 2]
  texture = np.abs(np.diff(value_HxW, axis=0)).mean() + np.abs(np.diff(value_HxW, axis=1)).mean()
  return np.array([*hsv_HxWx3.reshape(-1, 3).mean(axis=0), texture])


def test_image_cues_are_recoverable(root):
  cues = _cues(root)
  items = sorted(k for k in cues if k[0] == "image")
  x_NxF = np.stack([_image_stats(root / "images" / item) for _, item in items])
  cue_N = np.array([cues[k] for k in items])
  accuracy = _cv_accuracy(x_NxF, cue_N)
  print(f"image cue accuracy from mean HSV + texture: {accuracy:.3f}")
  assert accuracy >= MIN_CUE_ACCURACY
  _assert_items_vary(x_NxF, cue_N)


def _triads(intervals: tuple[int, ...]) -> np.ndarray:
  """Unit-norm chroma templates of one triad quality on all 12 roots, 12 x 12."""
  one = np.zeros(12)
  one[list(intervals)] = 1 / np.sqrt(len(intervals))
  return np.stack([np.roll(one, k) for k in range(12)])


# Its librosa calls compile numba kernels: serialised with the builder's (a cache race segfaults).
@numba_cache.first_call_serialised
def _music_stats(path) -> np.ndarray:
  """Major-vs-minor triad fit of the chroma, onset rate and strength, centroid, loudness."""
  audio_N, sr = librosa.load(path, sr=22050, mono=True, duration=EXCERPT_SECONDS)
  magnitude_FxT = np.abs(librosa.stft(audio_N))
  chroma_12xT = librosa.feature.chroma_stft(S=magnitude_FxT**2, sr=sr)
  chroma_12xT /= np.linalg.norm(chroma_12xT, axis=0, keepdims=True) + 1e-9
  # Best triad per frame, so the random key of a song does not matter.
  major_T = (_triads((0, 4, 7)) @ chroma_12xT).max(axis=0)
  minor_T = (_triads((0, 3, 7)) @ chroma_12xT).max(axis=0)
  mel_db_MxT = librosa.power_to_db(librosa.feature.melspectrogram(S=magnitude_FxT**2, sr=sr))
  onset_T = librosa.onset.onset_strength(S=mel_db_MxT, sr=sr)
  onsets = librosa.onset.onset_detect(onset_envelope=onset_T, sr=sr)
  centroid = librosa.feature.spectral_centroid(S=magnitude_FxT, sr=sr).mean()
  rms = librosa.feature.rms(S=magnitude_FxT).mean()
  return np.array([(major_T - minor_T).mean(), len(onsets) / EXCERPT_SECONDS, onset_T.mean(),
                   np.log(centroid), np.log(rms)])


def test_music_cues_are_recoverable(root):
  cues = _cues(root)
  paths = {p.stem: p for p in (root / "music").iterdir()}
  items = sorted(k for k in cues if k[0] == "music")
  x_NxF = np.stack([_music_stats(paths[item]) for _, item in items])
  cue_N = np.array([cues[k] for k in items])
  accuracy = _cv_accuracy(x_NxF, cue_N)
  print(f"music cue accuracy from chroma mode + onsets + centroid + RMS: {accuracy:.3f}")
  assert accuracy >= MIN_CUE_ACCURACY
  _assert_items_vary(x_NxF, cue_N)
