"""The imac build at IMAC scale: a generated corpus in IMAC's formats, built both ways.

  python -m bench.build [--songs 4 24] [--workdir DIR] [--json]

Generates photograph-sized JPEGs (varied sizes and aspects, up to 3840x2160) and
3-5 minute 44.1 kHz stereo MP3 songs (Ogg Vorbis without PyAV) in the manual-dir
layout, with IMAC's ratio of images to audio, at two sizes, and runs the user's command,
`tfds build --imports tfds_imac imac/features --manual_dir=...`, on each: in-process and
as a Beam pipeline (DirectRunner, one worker per core). For each build it prints images/s
and audio-seconds/s (the whole build's wall time over each modality) and the peak memory
of the whole process tree (PSS and RSS summed over the build and all its workers,
sampled): it should stay flat while the corpus grows 6x. From the two sizes (cost =
fixed + per item) it extrapolates the wall time and memory of the full IMAC here, per
core, and on a 16-core machine with one GPU; and, as a check, the CPU the stages alone
take (image decode, Inception, song decode and descriptors, each timed on its own
over the larger corpus).
Timings are this machine's under its load; CPU seconds much less so.
"""

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import threading
import time

from etils import epath
import numpy as np
from PIL import Image
import psutil
import soundfile as sf

from acp_jax import labels
from acp_jax.features import inception
from acp_jax.features import media
from tfds_imac.imac import config
from tfds_imac.imac import extract
from tfds_imac.imac import splits

# The full IMAC (Verma et al.): images and seconds of audio (3,812 songs).
IMAC_IMAGES, IMAC_AUDIO_S = 85_000, 270 * 3600
SONG_RATE = 44_100
SPLIT_CYCLE = ("train", "validation", "test") + ("train",) * 5 + ("test", "train")  # 70/10/20
PHOTO_ASPECTS = ((4, 3), (3, 2), (16, 9), (1, 1), (3, 4), (2, 3))


def _song_name(i: int, want: str) -> str:
  """A song id in split `want`, so that a corpus of a few songs fills every split."""
  return next(name for name in (f"song{i:04d}_{j}" for j in range(10_000))
              if splits.assign_split(f"music:{name}") == want)


def _photo(rng: np.random.Generator) -> Image.Image:
  """A smooth scene with fine grain, so it compresses like a photograph."""
  long_side = int(rng.integers(1024, 3841))
  a, b = PHOTO_ASPECTS[rng.integers(len(PHOTO_ASPECTS))]
  w, h = (long_side, long_side * b // a) if a >= b else (long_side * a // b, long_side)
  coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
  scene_HxWx3 = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), np.int16)
  grain_HxWx3 = rng.normal(0, 6, (h, w, 1)).astype(np.int16)
  return Image.fromarray(np.clip(scene_HxWx3 + grain_HxWx3, 0, 255).astype(np.uint8))


def _song_TxC(rng: np.random.Generator, seconds: float) -> np.ndarray:
  """Chords with decaying harmonics and noise hits, stereo, `seconds` long at 44.1 kHz."""
  beat = 60.0 / rng.uniform(80, 160)
  n = int(beat * SONG_RATE)
  t_N = np.arange(n) / SONG_RATE
  env_N = np.exp(-3 * t_N / beat)
  root = rng.integers(45, 60)
  beats = []
  for k in range(int(seconds / beat) + 1):
    midi = root + np.array([0, 4 if k % 8 < 4 else 3, 7]) + 12 * (k % 16 >= 8)
    hz_3 = 440.0 * 2 ** ((midi - 69) / 12)
    tone_N = sum(np.sin(2 * np.pi * h * hz_3[:, None] * t_N).sum(0) / h for h in (1, 2, 3))
    hit_N = rng.normal(0, 1, n) * np.exp(-30 * t_N) * (k % 2 == 0)
    beats.append(0.08 * tone_N * env_N + 0.1 * hit_N)
  mono_T = np.concatenate(beats)[:int(seconds * SONG_RATE)].astype(np.float32)
  return np.stack([mono_T, np.roll(mono_T, 200) * 0.8], axis=1)


def _encode_song(path: epath.Path, wave_TxC: np.ndarray) -> epath.Path:
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError:  # soundfile writes Ogg Vorbis everywhere
    path = path.with_suffix(".ogg")
    sf.write(path, wave_TxC, SONG_RATE, format="OGG", subtype="VORBIS")
    return path
  with av.open(os.fspath(path), "w") as out:
    stream = out.add_stream("libmp3lame", rate=SONG_RATE, layout="stereo")
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave_TxC.T), format="fltp",
                                       layout="stereo")
    frame.sample_rate = SONG_RATE
    for packet in [*stream.encode(frame), *stream.encode(None)]:
      out.mux(packet)
  return path


def write_corpus(root: epath.Path, num_images: int, num_songs: int, seed: int = 0,
                 song_seconds: tuple[float, float] = (180, 300)) -> float:
  """IMAC's manual-dir layout at `root`; returns the seconds of audio written."""
  rng = np.random.default_rng(seed)
  rows, audio_s = [], 0.0
  for i in range(num_songs):
    seconds = float(rng.uniform(*song_seconds))
    (root / "music").mkdir(parents=True, exist_ok=True)
    path = _encode_song(root / "music" / f"{_song_name(i, SPLIT_CYCLE[i % 10])}.mp3",
                        _song_TxC(rng, seconds))
    scores = rng.dirichlet(np.ones(3))
    rows.append(f"{path.stem},artist,title,{scores[0]:.3f},{scores[1]:.3f},{scores[2]:.3f}")
    audio_s += seconds
  (root / "music.csv").write_text(
      "song_id,artist,title,pos_score,neu_score,neg_score\n" + "\n".join(rows) + "\n")
  for i in range(num_images):
    emotion = labels.EMOTIONS[i % len(labels.EMOTIONS)]
    (root / "images" / emotion).mkdir(parents=True, exist_ok=True)
    _photo(rng).save(root / "images" / emotion / f"img{i:05d}.jpg", quality=90)
  return audio_s


@dataclasses.dataclass
class Run:
  wall_s: float
  peak_pss_mb: float  # summed over the process tree: what the build takes from the machine
  peak_rss_mb: float  # summed RSS: counts shared pages once per process, an upper bound
  cpu_s: float        # user + system CPU of the whole tree: what the build costs, load or not


def _tree_memory(proc: psutil.Process) -> tuple[float, float]:
  pss = rss = 0
  for p in [proc, *proc.children(recursive=True)]:
    try:
      info = p.memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
    pss, rss = pss + info.pss, rss + info.rss
  return pss / 2**20, rss / 2**20


def run_build(manual_dir: epath.Path, data_dir: epath.Path, beam_workers: int | None) -> Run:
  """`tfds build` in a child process, its tree's memory sampled every 0.5 s."""
  cmd = [sys.executable, "-m", "tensorflow_datasets.scripts.cli.main", "build",
         "--imports", "tfds_imac", "imac/features", f"--manual_dir={manual_dir}",
         f"--data_dir={data_dir}", "--overwrite"]
  if beam_workers:
    cmd.append("--beam_pipeline_options=runner=DirectRunner,"
               f"direct_num_workers={beam_workers},direct_running_mode=multi_processing")
  env = dict(os.environ, IMAC_RANDOM_INCEPTION="1")
  cpu_before = _children_cpu_s()
  start = time.perf_counter()
  proc = psutil.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  peaks = [0.0, 0.0]
  done = threading.Event()

  def sample():
    while not done.wait(0.5):
      peaks[:] = np.maximum(peaks, _tree_memory(proc)).tolist()

  sampler = threading.Thread(target=sample)
  sampler.start()
  _, err = proc.communicate()
  wall = time.perf_counter() - start
  done.set()
  sampler.join()
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.decode()[-3000:]}")
  return Run(wall, peaks[0], peaks[1], _children_cpu_s() - cpu_before)


def _children_cpu_s() -> float:
  """CPU seconds of every finished descendant (each process reaps its own children)."""
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def stage_costs(manual_dir: epath.Path) -> dict:
  """CPU seconds, load or not, of each stage on all of this corpus's items: per image,
  decode and Inception (all threads); per second of audio, a song's decode and
  descriptors."""
  paths = sorted((manual_dir / "images").glob("*/*.jpg"))
  media.load_image(paths[0], 224, 32)  # warm: the resize kernels
  start = time.process_time()
  pixels = [media.load_image(p, 224, 32)[0] for p in paths]
  decode = (time.process_time() - start) / len(paths)
  embedder = extract.make_embedder("inception", None, seed=0, batch_size=64)
  batch_Bx224x224x3 = np.stack((pixels * embedder.batch_size)[:embedder.batch_size])
  embedder(batch_Bx224x224x3)  # compile
  start = time.process_time()
  embedder(batch_Bx224x224x3)
  embed = (time.process_time() - start) / embedder.batch_size
  songs = sorted((manual_dir / "music").iterdir())
  cfg = config.ImacConfig(name="features")
  media.song_features(songs[0], cfg.descriptor)  # warm: numba and librosa's first calls
  start = time.process_time()
  for song in songs:
    media.song_features(song, cfg.descriptor)
  audio = (time.process_time() - start) / sum(sf.info(song).duration for song in songs)
  return {"decode_cpu_s_per_image": decode, "embed_cpu_s_per_image": embed,
          "audio_cpu_s_per_audio_s": audio}


def _fit(small: tuple[int, float], large: tuple[int, float]) -> tuple[float, float]:
  """(fixed, per image) of a cost linear in the corpus size (images, with their audio)."""
  (n1, c1), (n2, c2) = small, large
  per_image = (c2 - c1) / (n2 - n1)
  return max(c1 - per_image * n1, 0.0), per_image


def full_imac_core_h_stages(stages: dict) -> float:
  """Full-IMAC core-hours from the stages alone (`stage_costs`): the build with no overhead."""
  return (IMAC_IMAGES * (stages["decode_cpu_s_per_image"] + stages["embed_cpu_s_per_image"])
          + IMAC_AUDIO_S * stages["audio_cpu_s_per_audio_s"]) / 3600


def imac_images(songs: int) -> int:
  """Images beside `songs` songs in IMAC's ratio (3-5 min songs average 4 min)."""
  return round(songs * 240 * IMAC_IMAGES / IMAC_AUDIO_S)


def extrapolate(runs: dict[int, Run], sizes: dict[int, tuple[int, float]], cores: int,
                stages: dict, gpu_images_per_s: float) -> dict:
  """Full-IMAC wall time and memory from the builds at two sizes (cost = fixed + per item).

  From the wall time: this machine as loaded now. From the CPU time of the build's
  process tree: this machine with its cores to itself (CPU / cores), per core, and a
  16-core machine whose GPU takes Inception's share.
  """
  small, large = (runs[k] for k in sorted(runs, key=lambda k: sizes[k][0]))
  n_small, n_large = sorted(sizes[k][0] for k in runs)
  wall_fixed, wall_per_image = _fit((n_small, small.wall_s), (n_large, large.wall_s))
  cpu_fixed, cpu_per_image = _fit((n_small, small.cpu_s), (n_large, large.cpu_s))
  cpu_s = cpu_per_image * IMAC_IMAGES
  embed_cpu_s = stages["embed_cpu_s_per_image"] * IMAC_IMAGES
  features_mb = (IMAC_IMAGES * inception.FEATURE_DIM + IMAC_AUDIO_S / 60 * 193) * 4 / 2**20
  return {
      "fixed_s": wall_fixed,
      # A load that changes between the two sizes can make the wall slope meaningless.
      "full_imac_h_loaded": ((wall_fixed + wall_per_image * IMAC_IMAGES) / 3600
                             if wall_per_image > 0 else float("nan")),
      "full_imac_core_h": cpu_s / 3600,
      "full_imac_core_h_stages": full_imac_core_h_stages(stages),
      "full_imac_h_idle": (cpu_fixed + cpu_s) / cores / 3600,
      "full_imac_min_16core_gpu": (cpu_fixed / cores + max(max(cpu_s - embed_cpu_s, 0.0) / 16,
                                                          IMAC_IMAGES / gpu_images_per_s)) / 60,
      "full_imac_peak_gb": (large.peak_pss_mb + features_mb) / 1024,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--songs", type=int, nargs=2, default=(4, 24),
                      help="songs in the smaller and the larger corpus (>= 3)")
  parser.add_argument("--workdir", default="/tmp/imac_bench_build")
  parser.add_argument("--gpu_images_per_s", type=float, default=2000.0,
                      help="assumed Inception-V3 images/s of one GPU, for the 16-core figure")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  cores = os.cpu_count()
  work = epath.Path(args.workdir)
  sizes, corpora = {}, {}
  for songs in args.songs:
    num_images = imac_images(songs)
    manual = work / f"corpus_{num_images}i_{songs}s"
    stamp = manual / "audio_seconds.txt"
    if not stamp.exists():
      manual.rmtree(missing_ok=True)
      audio_s = write_corpus(manual, num_images, songs)
      stamp.write_text(str(audio_s))
    sizes[songs], corpora[songs] = (num_images, float(stamp.read_text())), manual

  stages = stage_costs(corpora[args.songs[1]])  # the larger: photo sizes vary 14x
  results = {"cores": cores, **stages}
  for mode, workers in (("in_process", None), ("beam", cores)):
    runs = {songs: run_build(corpora[songs], work / f"tfds_{mode}", workers)
            for songs in args.songs}
    results[mode] = {
        "runs": {songs: {**dataclasses.asdict(run), "images": sizes[songs][0],
                         "audio_s": sizes[songs][1],
                         "images_per_s": sizes[songs][0] / run.wall_s,
                         "audio_s_per_s": sizes[songs][1] / run.wall_s}
                 for songs, run in runs.items()},
        **extrapolate(runs, sizes, cores, stages, args.gpu_images_per_s)}
  if args.json:
    print(json.dumps(results, indent=1))
    return
  print(f"{cores} cores, shared with other users: wall times are under their load; "
        "CPU-s (user + system of the build's whole process tree) are not.")
  print(f"CPU per image: decode {stages['decode_cpu_s_per_image'] * 1e3:.0f} ms, "
        f"Inception {stages['embed_cpu_s_per_image'] * 1e3:.0f} ms; per second of audio: "
        f"{stages['audio_cpu_s_per_audio_s'] * 1e3:.1f} ms (decode and descriptors)")
  for mode in ("in_process", "beam"):
    r = results[mode]
    for songs, run in r["runs"].items():
      print(f"{mode:>10} {run['images']:4d} images {songs:2d} songs "
            f"({run['audio_s'] / 60:5.1f} min): {run['wall_s']:6.1f} s  "
            f"{run['images_per_s']:5.2f} images/s  {run['audio_s_per_s']:6.1f} audio-s/s  "
            f"{run['cpu_s']:6.0f} CPU-s  "
            f"peak PSS {run['peak_pss_mb']:6.0f} MB (RSS sum {run['peak_rss_mb']:.0f})")
    print(f"{'':>10} full IMAC, extrapolated: {r['full_imac_h_loaded']:.1f} h here as loaded "
          f"now (nan: the load changed); {r['full_imac_h_idle']:.2f} h here unloaded "
          f"({r['full_imac_core_h']:.2f} core-h; the stages alone: "
          f"{r['full_imac_core_h_stages']:.2f}); {r['full_imac_min_16core_gpu']:.0f} min on "
          f"16 cores + 1 GPU (GPU not measured: {args.gpu_images_per_s:.0f} images/s assumed); "
          f"peak {r['full_imac_peak_gb']:.1f} GB")


if __name__ == "__main__":
  main()
