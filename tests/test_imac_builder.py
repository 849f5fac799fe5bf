"""The imac builder end to end on generated corpora: bad input, metadata, examples."""

import csv
import dataclasses
import shutil

import numpy as np
from PIL import Image
import pytest
import soundfile as sf
from etils import epath
import tensorflow_datasets as tfds

from acp_jax import data
from acp_jax import items
from acp_jax.features import media
from tfds_imac import synthetic
from tfds_imac.imac import config
from tfds_imac.imac import corpus
from tfds_imac.imac import imac_dataset_builder as imac
from tfds_imac.imac import plan
from tfds_imac.imac import splits as imac_splits
from tfds_imac.imac import weights


def _config(**kw):
  return config.ImacConfig(name="tiny", segment_seconds=2.0, window_seconds=1.0, hop_seconds=0.5,
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


_SMALL = dict(num_images=60, num_songs=24, song_seconds=4.5, seed=3)  # two segments a song
_GONE_SONGS = ("song_0002", "song_0011", "song_0019")


def test_build_of_a_reduced_corpus_with_bad_items(tmp_path, monkeypatch):
  """One real-config build (the costly part) of a corpus with ~15% of its images and
  three songs removed and bad items added, checked three ways below."""
  full = tmp_path / "full"
  synthetic.write_corpus(full, synthetic.CorpusConfig(**_SMALL))
  root = tmp_path / "manual"
  shutil.copytree(full, root)
  removed = sorted(root.glob("images/*/*.jpg"))[::7]
  for path in removed:
    path.unlink()
  for song in _GONE_SONGS:
    path, = (root / "music").glob(f"{song}.*")
    path.unlink()
  _add_bad_items(root)
  monkeypatch.setenv(weights.RANDOM_INCEPTION_ENV, "1")
  builder = _build(tmp_path, root, _config())
  _check_bad_input_is_counted_and_never_aborts(builder)
  _check_removed_items_change_only_their_pairs(
      builder, full, {f"{p.parent.name}/{p.name}" for p in removed})
  _check_metadata_fingerprints_weights_and_skip_report(builder)


def _splits(builder):
  return {name: data.split_from_examples(tfds.as_numpy(builder.as_dataset(name, batch_size=-1)))
          for name in ("train", "validation", "test")}


def _pairs(split) -> set:
  return {(split.images.ids[i], split.music.ids[j], int(l))
          for i, j, l in zip(split.pairs.image_P, split.pairs.music_P, split.pairs.labels_P)}


def _check_bad_input_is_counted_and_never_aborts(builder):
  skipped = builder.info.metadata["skipped"]
  expected = {
      "image: unreadable image": 3,  # empty, truncated, garbage
      "image: not an image file": 1,
      "image: image smaller than 32 px": 1,
      "image: unknown emotion folder": 1,
      "image: file outside an emotion folder": 1,
      "music: audio: silent": 1,
      "music: audio: shorter than one segment": 1,
      "music: audio file without a music.csv row": 1,
      "music: music.csv row without an audio file": 1 + len(_GONE_SONGS),
      "music: malformed csv row": 3,
      "music: duplicate song id in music.csv": 1,
  }
  for reason, n in expected.items():
    assert skipped.get(reason) == n, (reason, skipped)
  assert any(r.startswith("audio: ") and "broken" in item
             for _, item, r in builder.info.metadata["skipped_items"])
  splits = _splits(builder)
  ids = {i for s in splits.values() for i in s.images.ids}
  assert {"fear/grey.png", "fear/cmyk.jpg", "fear/alpha.png", "fear/deep.png"} <= ids  # kept
  # dup.jpg and dup.png share a stem: ids carry the extension, so both are kept.
  assert {"awe/dup.jpg", "awe/dup.png"} <= ids
  assert "image: duplicate image id" not in skipped
  assert "stereo48k" in {i.split("#")[0] for s in splits.values() for i in s.music.ids}
  for s in splits.values():
    assert np.isfinite(s.images.features_NxD).all() and np.isfinite(s.music.features_NxD).all()
    np.testing.assert_array_equal(
        s.pairs.labels_P, s.images.labels_N[s.pairs.image_P] == s.music.labels_N[s.pairs.music_P])
  # No song leaks across splits.
  songs = [{i.split("#")[0] for i in s.music.ids} for s in splits.values()]
  assert not (songs[0] & songs[1] or songs[0] & songs[2] or songs[1] & songs[2])


def _check_removed_items_change_only_their_pairs(builder, full, removed):
  log = corpus.SkipLog()
  gone_images = [im for im in corpus.scan_images(full, {}, log) if im.id in removed]
  gone_segments = [seg for song in corpus.scan_songs(full, {}, log)
                   if song.id in _GONE_SONGS for seg in corpus.song_segments(song, 2)]
  lost = 0
  for name, split in _splits(builder).items():
    # The built corpus plus the removed items, paired by the shared rule.
    back_images = [im for im in gone_images if imac_splits.assign_split(f"image:{im.id}") == name]
    back_segments = [seg for seg in gone_segments
                     if imac_splits.assign_split(f"music:{seg.song.id}") == name]
    image_ids = list(split.images.ids) + [im.id for im in back_images]
    music_ids = list(split.music.ids) + [seg.id for seg in back_segments]
    image_P, music_P, label_P, _ = imac_splits.make_pairs(
        image_ids, np.r_[split.images.labels_N, [im.label for im in back_images]],
        music_ids, np.r_[split.music.labels_N, [seg.song.label for seg in back_segments]])
    full_pairs = {(image_ids[i], music_ids[j], int(l))
                  for i, j, l in zip(image_P, music_P, label_P)}
    built = _pairs(split)
    surviving = {p for p in full_pairs
                 if p[0] not in removed and p[1].split("#")[0] not in _GONE_SONGS}
    lost += len(full_pairs) - len(surviving)
    assert surviving <= built, name
    # The built pairs are the shared rule applied to the built items.
    image_P, music_P, label_P, _ = imac_splits.make_pairs(
        split.images.ids, split.images.labels_N, split.music.ids, split.music.labels_N)
    assert _pairs(dataclasses.replace(split, pairs=items.Pairs(image_P, music_P, label_P))) == built
  assert lost >= len(removed)  # the removal did take pairs away


def _check_metadata_fingerprints_weights_and_skip_report(builder):
  meta = builder.info.metadata
  assert meta["inception_weights"] == "random(seed=0)"
  assert set(meta["descriptor"]) >= {"segment_seconds", "window_seconds", "hop_seconds"}
  for name, split in _splits(builder).items():
    ids_P = ([split.images.ids[i] for i in split.pairs.image_P],
             [split.music.ids[j] for j in split.pairs.music_P])
    assert meta["pair_fingerprint"][name] == imac_splits.pair_fingerprint(*ids_P,
                                                                         split.pairs.labels_P)
  report = (epath.Path(builder.data_dir) / plan.SKIP_REPORT_FILE).read_text()
  lines = [line.split("\t") for line in report.splitlines() if not line.startswith("#")]
  assert len(lines) == len(meta["skipped_items"])
  assert ["images/awe/truncated.jpg", "unreadable image"] in lines
  broken = next(r for _, i, r in meta["skipped_items"] if i == "broken.wav")
  assert ["music/broken.wav", broken] in lines


def test_real_config_refuses_to_build_without_weights(tmp_path, monkeypatch):
  root = tmp_path / "manual"
  synthetic.write_corpus(root, synthetic.CorpusConfig(num_images=6, num_songs=6, song_seconds=2.5))
  monkeypatch.delenv(weights.RANDOM_INCEPTION_ENV, raising=False)
  with pytest.raises(FileNotFoundError) as error:
    _build(tmp_path, root, _config())
  for needed in (weights.WEIGHTS_FILE, str(root), "storage.googleapis.com",
                 f"{weights.RANDOM_INCEPTION_ENV}=1"):
    assert needed in str(error.value)


def test_synthetic_media_is_item_level_and_ignores_manual_weights(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  # A synthetic config never reads the manual dir: a broken weights file there is harmless.
  (manual / weights.WEIGHTS_FILE).write_bytes(b"not an h5 file")
  cfg = _config(media=True, synthetic=synthetic.CorpusConfig(num_images=45, num_songs=24,
                                                             song_seconds=4.5, seed=1))
  builder = _build(tmp_path, manual, cfg)
  meta = builder.info.metadata
  assert meta["inception_weights"] == "random(seed=0)"
  # Cues joined every item (ids match cues.csv); small splits can sit near chance.
  assert set(meta["oracle_accuracy"]) == {"train", "validation", "test"}
  assert meta["oracle_accuracy"]["train"] > 0.6, meta["oracle_accuracy"]
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  sources = builder.as_data_source()
  assert set(sources) == {f"{s}_{m}" for s in ("train", "validation", "test")
                          for m in ("images", "music")}
  corpus_dir, = (tmp_path / "tfds" / "downloads").glob("imac_synthetic_corpus_*")
  for name, counts in meta["counts"].items():
    images, music = sources[f"{name}_images"], sources[f"{name}_music"]
    assert (len(images), len(music)) == (counts["images"], counts["music_segments"])
    image_rows = [images[i] for i in range(len(images))]
    music_rows = [music[j] for j in range(len(music))]
    image_ids = [r["id"].decode() for r in image_rows]
    music_ids = [r["id"].decode() for r in music_rows]
    assert image_ids == sorted(image_ids) and music_ids == sorted(music_ids)  # record i = item i
    for r in image_rows:
      assert r["pixels"].shape == (224, 224, 3) and r["waveform"].shape == (0,)
      assert r["features"].shape == (2048,) and r["emotion"] >= 0 and r["song_id"] == b""
    for r in music_rows:
      assert r["waveform"].shape == (2 * 22050,) and r["pixels"].shape == (0, 224, 3)
      assert r["features"].shape == (193,) and r["emotion"] == -1
      assert r["song_id"].decode() == r["id"].decode().split("#")[0]
      assert np.abs(r["waveform"]).max() > 0
    # The media config's fixed pairs are make_pairs of its items, as in the features config.
    image_P, music_P, label_P, _ = imac_splits.make_pairs(
        image_ids, [r["label"] for r in image_rows], music_ids, [r["label"] for r in music_rows])
    assert meta["pair_fingerprint"][name] == imac_splits.pair_fingerprint(
        [image_ids[i] for i in image_P], [music_ids[j] for j in music_P], label_P)
    path = corpus_dir / "images" / image_ids[0]
    np.testing.assert_array_equal(image_rows[0]["pixels"], media.load_image(path, 224, 32)[0])


def test_real_config_without_manual_data_fails_at_once(tmp_path):
  with pytest.raises(AssertionError, match="manual"):
    _build(tmp_path, tmp_path / "nothing_here", "features")


def test_not_prepared_message_points_to_the_demo(tmp_path):
  with pytest.raises(FileNotFoundError, match="configs/acp.py:synthetic"):
    data.load_splits("imac/features", data_dir=str(tmp_path))
