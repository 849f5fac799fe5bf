"""report.html: the tables of report.md from the same results, the listening gallery's
media and notes, escaped text, and the page itself in headless Chromium."""

import html.parser
import pathlib

import av
import numpy as np
from PIL import Image
import pytest
import soundfile as sf

import optional
from acp_jax import gallery
from acp_jax import items
from acp_jax import labels
from acp_jax import report
from configs import acp
from test_report import fake_results

UNSAFE = "<script>alert(1)</script> & \"quoted\" 'id'"
CLIP_SECONDS, SEGMENT_SECONDS = 1.0, 1.5
CLIP_KBPS = acp.media_config().clip_kbps
NUM_AUDIO = 15  # <audio> elements of the corpus's page
# Chromium on a closed network, as root: no sandbox, nothing fetched in the background.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync")


class _Page(html.parser.HTMLParser):
  """The elements of a page by tag (their attributes), and its tables' cells as text."""

  def __init__(self, text: str):
    super().__init__()
    self.elements, self.tables, self._cell = {}, [], None
    self.feed(text)

  def handle_starttag(self, tag, attrs):
    self.elements.setdefault(tag, []).append(dict(attrs))
    if tag == "table":
      self.tables.append([])
    elif tag == "tr":
      self.tables[-1].append([])
    elif tag in ("td", "th"):
      self._cell = ""

  def handle_endtag(self, tag):
    if tag in ("td", "th"):
      self.tables[-1][-1].append(self._cell)
      self._cell = None

  def handle_data(self, data):
    if self._cell is not None:
      self._cell += data


def _items(ids, classes, emotions=None, source=None) -> items.Items:
  return items.Items(ids=tuple(ids), features_NxD=None, labels_N=np.array(classes, np.int32),
                     cues_N=-np.ones(len(ids), np.int32),
                     emotions_N=None if emotions is None else np.array(emotions, np.int32),
                     source=source)


def _split(images: items.Items, music: items.Items, **fields) -> items.Split:
  no_pairs = items.Pairs(*(np.zeros(0, np.int32),) * 3)
  return items.Split(images, music, no_pairs, **fields)


def _media(**overrides):
  settings = acp.media_config()
  settings.update({"clip_seconds": CLIP_SECONDS, **overrides})
  return settings


def _corpus(root: pathlib.Path) -> items.Split:
  """A corpus folder with two songs, one song file missing and one unreadable, two
  images and one image id that is no file name (and unsafe markup)."""
  rate = gallery.SAMPLE_RATE
  (root / "music").mkdir(parents=True)
  for song, pitch, seconds in (("song0", 440.0, 3.2), ("song1", 660.0, 2.0)):
    time_T = np.arange(round(seconds * rate)) / rate
    sf.write(root / "music" / f"{song}.wav", 0.3 * np.sin(2 * np.pi * pitch * time_T), rate)
  (root / "music" / "broken.mp3").write_bytes(b"no audio in here")
  for name, colour in (("awe/a.jpg", (220, 160, 40)), ("sadness/b.png", (40, 60, 160))):
    (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (90, 60), colour).save(root / "images" / name)
  emotions = [labels.EMOTIONS.index(e) for e in ("amusement", "awe", "contentment", "sadness")]
  images = _items([f"amusement/{UNSAFE}", "awe/a.jpg", "contentment/gone.jpg", "sadness/b.png"],
                  [0, 0, 1, 2], emotions)
  music = _items(["song0#000", "song0#001", "song1#000", "broken#000", "missing#000"],
                 [0, 0, 1, 2, 2])
  return _split(images, music, corpus_root=root, segment_seconds=SEGMENT_SECONDS)


def _gallery(listening: gallery.Gallery, split: items.Split, top_k: int) -> dict:
  """Every item a query in both directions, with seeded scores."""
  rng = np.random.default_rng(0)
  scores = lambda query_Q, keys: rng.normal(size=(len(query_Q), len(keys.ids)))
  music_Q = gallery.pick_queries(split.music.labels_N, 2)
  image_Q = gallery.pick_queries(split.images.labels_N, 2)
  return {"notes": listening.notes,
          "music_to_image": listening.rank("test", "music", music_Q,
                                           scores(music_Q, split.images), top_k),
          "image_to_music": listening.rank("test", "image", image_Q,
                                           scores(image_Q, split.music), top_k)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> pathlib.Path:
  """A report over the corpus: every table, the gallery (every item shown) and its PNG."""
  tmp = tmp_path_factory.mktemp("report_html")
  out, split = tmp / "run", _corpus(tmp / "corpus")
  shown = _gallery(gallery.Gallery({"test": split}, out, _media()), split, top_k=5)
  report.plot_gallery(shown["music_to_image"], out, out / report.FIGURES_DIR / "gallery.png")
  report.write_report({**fake_results(), "gallery": shown,
                       "degenerate": [f"a note naming {UNSAFE}"]},
                      out, {"Gallery": out / report.FIGURES_DIR / "gallery.png"})
  return out


def _markdown_tables(text: str) -> list[list[list[str]]]:
  tables, previous = [], ""
  for line in text.splitlines():
    if line.startswith("|") and not line.startswith("|---"):
      if not previous.startswith("|"):
        tables.append([])
      tables[-1].append([cell.strip() for cell in line.strip("|").split(" | ")])
    previous = line
  return tables


def test_page_lays_out_report_md_s_tables(run_dir):
  page = _Page((run_dir / "report.html").read_text())
  # Table 4, Table 5's two, retrieval: the same cells as report.md's.
  assert page.tables == _markdown_tables((run_dir / "report.md").read_text())
  assert len(page.tables) == 4
  assert ["Chance (one answer for every pair)", "—", "50.00", "200", "0.500"] in page.tables[0]
  assert page.elements["img"][-1] == {"src": "figures/gallery.png", "alt": "Gallery"}
  assert "report.html" in (run_dir / "report.md").read_text()


def test_the_folder_is_self_contained(run_dir):
  page = _Page((run_dir / "report.html").read_text())
  sources = [e["src"] for tag in ("img", "audio") for e in page.elements[tag]]
  # Music queries with a song file (3 of 5), and each image query's (4) that have one (3).
  assert len(page.elements["audio"]) == NUM_AUDIO == 3 + 4 * 3
  for source in sources:
    assert not source.startswith(("/", "http", "file:")) and (run_dir / source).is_file()
  for element in [e for elements in page.elements.values() for e in elements]:
    assert not {"href", "srcset"} & set(element)
  assert {p.name for p in (run_dir / gallery.DIR).iterdir()} == {
      "music_test_00000.ogg", "music_test_00001.ogg", "music_test_00002.ogg",
      "image_test_00001.jpg", "image_test_00003.jpg"}


def test_clips_decode_to_their_length(run_dir):
  for clip in (run_dir / gallery.DIR).glob("*.ogg"):
    with av.open(str(clip)) as container:
      stream = container.streams.audio[0]
      assert stream.codec_context.name == "opus"
      samples = sum(frame.samples for frame in container.decode(stream))
    # Opus adds a few ms of pre-skip that the decoder keeps.
    assert samples / stream.rate == pytest.approx(CLIP_SECONDS, abs=0.02), clip.name
    # The bit rate bounds the size (1 kB for the Ogg and Opus headers).
    assert clip.stat().st_size < 1.1 * CLIP_SECONDS * 1000 * CLIP_KBPS / 8 + 1024, clip.name


def test_a_clip_longer_than_a_segment_is_the_segment(tmp_path):
  split = _corpus(tmp_path / "corpus")
  listening = gallery.Gallery({"test": split}, tmp_path, _media(clip_seconds=5.0))
  second = listening.item("test", "music", split.music.ids.index("song0#001"))
  with av.open(str(tmp_path / second["file"])) as container:
    # Not to the end of the song (3.2 s, 1.7 s after the segment's start).
    assert container.duration / 1e6 == pytest.approx(SEGMENT_SECONDS, abs=0.02)


def test_missing_and_unreadable_files_leave_notes(run_dir):
  text = (run_dir / "report.html").read_text()
  assert f"no song file music/missing.&lt;ext&gt; in {run_dir.parent / 'corpus'}" in text
  assert "music/broken.mp3: Cannot decode" in text
  assert "images/contentment/gone.jpg: unreadable image" in text


def test_text_from_files_is_escaped(run_dir):
  text = (run_dir / "report.html").read_text()
  assert "<script>alert" not in text
  escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quoted&#34; &#39;id&#39;"
  assert text.count(escaped) >= 3  # the id, its file's note, the degenerate note
  assert len(_Page(text).elements["script"]) == 1  # the page's own


def test_no_audio_at_hand_says_why(tmp_path):
  split = _split(_items(["awe/a.jpg", "fear/b.jpg"], [0, 2]),
                 _items(["s0#000", "s1#000"], [0, 2]), segment_seconds=SEGMENT_SECONDS)
  listening = gallery.Gallery({"test": split}, tmp_path, _media())
  report.write_report({"test_accuracy": 0.5, "gallery": _gallery(listening, split, 2)},
                      tmp_path, {})
  text = (tmp_path / "report.html").read_text()
  assert "No audio at hand: the dataset holds the segments&#39; features only" in text
  assert "No image files at hand" in text
  assert "<audio" not in text and "<img" not in text
  assert "<code>s0#000</code>" in text and "<code>fear/b.jpg</code>" in text


def test_media_config_records_are_played(tmp_path):
  rate, rng = gallery.SAMPLE_RATE, np.random.default_rng(0)
  waveform = lambda: (rng.normal(0, 3000, round(0.5 * rate))).astype(np.int16)
  images = _items(["awe/a", "fear/b"], [0, 2], [2, 6], source=[
      {"pixels": rng.integers(0, 255, (224, 224, 3), np.uint8)} for _ in range(2)])
  music = _items(["s0#000", "s1#000"], [0, 2], source=[{"waveform": waveform()} for _ in range(2)])
  split = _split(images, music)
  shown = _gallery(gallery.Gallery({"test": split}, tmp_path, _media()), split, 2)
  assert shown["notes"] == {}
  query = shown["music_to_image"][0]
  with av.open(str(tmp_path / query["file"])) as container:
    assert container.duration / 1e6 == pytest.approx(0.5, abs=0.02)  # the whole segment
  with Image.open(tmp_path / query["matches"][0]["file"]) as thumbnail:
    assert thumbnail.size == (gallery.THUMBNAIL, gallery.THUMBNAIL)


def test_rank_marks_by_class_and_breaks_ties_by_index(tmp_path):
  split = _split(_items(["a", "b", "c", "d"], [0, 0, 2, 1], [2, 5, 7, 3]),
                 _items(["m#000", "n#000"], [0, 2]))
  listening = gallery.Gallery({"test": split}, tmp_path, _media())
  score_QxI = np.array([[0.125, 0.75, 0.5, 0.75], [0.25, 0.125, 0.875, 0.0]])
  rows = listening.rank("test", "music", np.array([0, 1]), score_QxI, 3)
  assert [row["class"] for row in rows] == ["positive", "negative"]
  assert [(m["emotion"], m["score"], m["match"]) for m in rows[0]["matches"]] == [
      ("excitement", 0.75, True), ("contentment", 0.75, False), ("sadness", 0.5, False)]
  assert rows[1]["matches"][0]["emotion"] == "sadness" and rows[1]["matches"][0]["match"]
  songs_M = np.array(["x", "x", "y", "z"])
  assert list(gallery.pick_queries(np.array([0, 0, 0, 2]), 2, songs_M)) == [0, 2, 3]


def test_page_in_headless_chromium(run_dir, tmp_path):
  """Tables, every clip's duration, no console errors, no request off the folder, the
  unsafe id as text; and a screenshot."""
  sync_api = optional.module("playwright.sync_api", "pip install -e .[test]")
  chromium = optional.executable("chromium", "apt-get install chromium")
  errors, off_folder, dialogs = [], [], []
  with sync_api.sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    try:
      page = browser.new_page(viewport={"width": 1280, "height": 900})
      page.on("console", lambda m: m.type == "error" and errors.append(m.text))
      page.on("pageerror", lambda e: errors.append(str(e)))
      page.on("requestfailed", lambda r: errors.append(f"{r.url}: {r.failure}"))
      page.on("request", lambda r: r.url.startswith("file:") or off_folder.append(r.url))
      page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
      page.goto((run_dir / "report.html").as_uri())
      durations = page.evaluate("""() => Promise.all([...document.querySelectorAll("audio")]
          .map((audio) => audio.readyState >= 1 ? audio.duration : new Promise((done) => {
            audio.addEventListener("loadedmetadata", () => done(audio.duration));
            audio.addEventListener("error", () => done(-1));
          })))""")
      headings = page.locator("h2").all_inner_texts()
      num_tables = page.locator("table").count()
      body = page.inner_text("body")
      num_scripts = page.locator("script").count()
      page.screenshot(path=tmp_path / "report.png", full_page=True)
    finally:
      browser.close()
  assert errors == [] and off_folder == [] and dialogs == []
  assert num_tables == 4 and {"Affective correspondence (paper Table 4)",
                              "Cross-modal retrieval", "Listening gallery"} <= set(headings)
  assert durations == pytest.approx([CLIP_SECONDS] * NUM_AUDIO, abs=0.02)
  assert f"amusement/{UNSAFE}" in body and num_scripts == 1
  with Image.open(tmp_path / "report.png") as screenshot:
    assert screenshot.width == 1280 and screenshot.height > 2000
