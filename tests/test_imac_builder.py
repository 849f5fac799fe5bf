"""The imac builder end to end on generated corpora: bad input, metadata, examples."""

import csv
import io

import numpy as np
from PIL import Image
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from acp_jax import data
from acp_jax.features import media
from tfds_imac import synthetic
from tfds_imac.imac import imac_dataset_builder as imac


def _config(**kw):
  return imac.ImacConfig(name="tiny", segment_seconds=2.0, window_seconds=1.0, hop_seconds=0.5,
                         **kw)


def _build(tmp_path, manual_dir, cfg):
  builder = imac.Builder(config=cfg, data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir) if manual_dir else None))
  return builder


def _add_bad_items(root):
  img = root / "images"
  (img / "awe" / "empty.jpg").write_bytes(b"")
  good = next((img / "awe").glob("*.jpg")).read_bytes()
  (img / "awe" / "truncated.jpg").write_bytes(good[: len(good) // 3])
  (img / "awe" / "garbage.png").write_bytes(b"not an image at all" * 10)
  (img / "awe" / "notes.txt").write_text("hi")
  (img / "awe" / "dup.jpg").write_bytes(good)
  (img / "awe" / "dup.png").write_bytes(good)
  Image.new("RGB", (8, 8)).save(img / "fear" / "tiny.png")
  Image.new("L", (64, 80), 128).save(img / "fear" / "grey.png")
  Image.new("CMYK", (64, 64), (10, 200, 30, 0)).save(img / "fear" / "cmyk.jpg")
  Image.new("RGBA", (64, 64), (200, 10, 10, 0)).save(img / "fear" / "alpha.png")
  Image.new("I;16", (64, 64)).save(img / "fear" / "deep.png")
  (img / "boredom").mkdir()
  Image.new("RGB", (64, 64)).save(img / "boredom" / "x.jpg")
  (img / "stray.jpg").write_bytes(good)

  music, sr = root / "music", 22050
  tone = lambda s, rate: 0.3 * np.sin(2 * np.pi * 330 * np.arange(int(s * rate)) / rate)
  sf.write(music / "silent.wav", np.zeros(5 * sr), sr)
  sf.write(music / "short.wav", tone(1.0, sr), sr)
  sf.write(music / "stereo48k.wav", np.stack([tone(5, 48000), tone(5, 48000)], 1), 48000)
  sf.write(music / "orphan.wav", tone(5, sr), sr)
  (music / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
  rows = [["silent", "a", "t", 1, 0, 0], ["short", "a", "t", 1, 0, 0],
          ["stereo48k", "a", "t", 0, 0, 1], ["broken", "a", "t", 0, 1, 0],
          ["nofile", "a", "t", 1, 0, 0], ["badscore", "a", "t", "x", 1, 1],
          ["negative", "a", "t", -1, 1, 1], ["missing", "a"], ["stereo48k", "a", "t", 1, 0, 0]]
  with (root / "music.csv").open("a", newline="") as f:
    csv.writer(f).writerows(rows)


def test_bad_input_is_counted_and_never_aborts(tmp_path):
  root = tmp_path / "manual"
  synthetic.write_corpus(root, synthetic.CorpusConfig(num_images=60, num_songs=30,
                                                      song_seconds=4.5, seed=3))
  _add_bad_items(root)
  builder = _build(tmp_path, root, _config())
  skipped = builder.info.metadata["skipped"]
  expected = {
      "image: unreadable image": 3,  # empty, truncated, garbage
      "image: not an image file": 1,
      "image: duplicate image id": 1,
      "image: image smaller than 32 px": 1,
      "image: unknown emotion folder": 1,
      "image: file outside an emotion folder": 1,
      "music: audio: silent": 1,
      "music: audio: shorter than one segment": 1,
      "music: audio file without a music.csv row": 1,
      "music: music.csv row without an audio file": 1,
      "music: malformed csv row": 3,
      "music: duplicate song id in music.csv": 1,
  }
  for reason, n in expected.items():
    assert skipped.get(reason) == n, (reason, skipped)
  assert any(r.startswith("music: audio: ") and "broken" in item
             for _, item, r in [(m, i, f"{m}: {r}") for m, i, r in builder.info.metadata["skipped_items"]])
  splits = {name: data.split_from_examples(tfds.as_numpy(builder.as_dataset(name, batch_size=-1)))
            for name in ("train", "validation", "test")}
  ids = {i for s in splits.values() for i in s.images.ids}
  assert {"fear/grey", "fear/cmyk", "fear/alpha", "fear/deep"} <= ids  # converted, kept
  assert "stereo48k" in {i.split("#")[0] for s in splits.values() for i in s.music.ids}
  for s in splits.values():
    assert np.isfinite(s.images.features_NxD).all() and np.isfinite(s.music.features_NxD).all()
    assert abs(2 * int(s.pairs.labels_P.sum()) - len(s.pairs.labels_P)) <= 1
    np.testing.assert_array_equal(
        s.pairs.labels_P, s.images.labels_N[s.pairs.image_P] == s.music.labels_N[s.pairs.music_P])
  # No song leaks across splits.
  songs = [{i.split("#")[0] for i in s.music.ids} for s in splits.values()]
  assert not (songs[0] & songs[1] or songs[0] & songs[2] or songs[1] & songs[2])


def test_synthetic_records_oracle_and_media(tmp_path, monkeypatch):
  cfg = _config(media=True, synthetic=synthetic.CorpusConfig(num_images=45, num_songs=24,
                                                             song_seconds=4.5, seed=1))
  builder = _build(tmp_path, None, cfg)
  oracle = builder.info.metadata["oracle_accuracy"]
  assert set(oracle) == {"train", "validation", "test"}
  assert all(0.5 < v <= 1.0 for v in oracle.values())
  assert builder.info.metadata["inception_weights"] == "random(seed=0)"
  pixels, waves = 0, 0
  for ex in tfds.as_numpy(builder.as_dataset("train")):
    pixels += ex["image"]["pixels"].size > 0
    waves += ex["music"]["waveform"].size > 0
    if ex["image"]["pixels"].size:
      assert ex["image"]["pixels"].shape == (224, 224, 3)
  counts = builder.info.metadata["counts"]
  assert (pixels, waves) == (counts["train"]["images"], counts["train"]["music_segments"])

  # load_splits gives every item the media stored on its first pair.
  monkeypatch.setattr(data.tfds, "builder", lambda name, data_dir=None: builder)
  splits = data.load_splits("imac/tiny_media")
  for name, split in splits.items():
    assert split.images.pixels_NxHxWx3.shape == (counts[name]["images"], 224, 224, 3)
    assert split.images.pixels_NxHxWx3.dtype == np.uint8
    assert split.music.waveforms_NxT.shape == (counts[name]["music_segments"], 2 * 22050)
    assert split.music.waveforms_NxT.dtype == np.int16
    assert np.abs(split.music.waveforms_NxT).max(axis=1).min() > 0  # no empty placeholder kept
    assert len(split.pairs.labels_P) == counts[name]["pairs"]
  image_id = splits["test"].images.ids[0]
  emotion, stem = image_id.split("/")
  path, = (tmp_path / "tfds" / "downloads").glob(
      f"imac_synthetic_corpus_*/images/{emotion}/{stem}.*")
  np.testing.assert_array_equal(splits["test"].images.pixels_NxHxWx3[0],
                                media.load_image(path, 224, 32)[0])


def test_real_config_without_manual_data_fails_at_once(tmp_path):
  with pytest.raises(AssertionError, match="manual"):
    _build(tmp_path, tmp_path / "nothing_here", "features")


def test_not_prepared_message_points_to_the_demo(tmp_path):
  with pytest.raises(FileNotFoundError, match="configs/acp.py:synthetic"):
    data.load_splits("imac/features", data_dir=str(tmp_path))
