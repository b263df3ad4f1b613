"""Can the video loader feed the tiny train step? Clips/s of each, and their ratio.

  python bench/loader_bench.py [--videos=32] [--workers=0,2] [--batches=12] [--steps=15]

1. Writes `--videos` real video files (H.264 / VP9 / MPEG-4 in mp4 / webm / avi, `--height` x
   `--width`, `--frames` frames, moving textures) into a temporary folder with PyAV, and converts
   them to ArrayRecord shards with layerlock_jax.data.convert.
2. Loader: clips/s of `pipeline.make_train_iterator` on configs/tiny.py's data settings (16 frames
   at 32x32, batch 16, stride 2, random resized crop, flip) for data.source=video_folder and
   array_record, for each worker count in --workers (0 = decoding in reader threads of the main
   process, the config default). Timed after two warm-up batches (worker start-up excluded).
3. Step: clips/s of the compiled tiny train step on a fixed device batch (compile excluded).
4. Together: clips/s of next(batch) + step, the rate a training run actually gets with the
   default loader (num_workers=0; on 2 cores the reader threads and XLA share the CPU).
Prints one line per measurement and the loader / step ratio (> 1: the loader keeps up). Each
in-process measurement also reports CPU ms per clip (all threads of this process): on a machine
shared with other jobs the wall-clock rates drop, while CPU time per clip stays about the same, so
`cores / CPU-time` estimates the rate on an idle machine (worker processes' CPU is not included).
Runs in about 1-2 minutes on 2 idle CPU cores.
"""
import copy
import os
import shutil
import tempfile
import time

from absl import app
from absl import flags

_VIDEOS = flags.DEFINE_integer("videos", 32, "Videos to generate.")
_HEIGHT = flags.DEFINE_integer("height", 96, "Frame height of the generated videos.")
_WIDTH = flags.DEFINE_integer("width", 128, "Frame width of the generated videos.")
_FRAMES = flags.DEFINE_integer("frames", 64, "Frames per generated video.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "data.num_workers values to measure.")
_BATCHES = flags.DEFINE_integer("batches", 12, "Timed loader batches per setting.")
_STEPS = flags.DEFINE_integer("steps", 15, "Timed train steps.")


def write_videos(folder: str, count: int, height: int, width: int, frames: int) -> None:
  import av  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  kinds = [("libx264", "mp4"), ("libvpx-vp9", "webm"), ("mpeg4", "avi")]
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  for k in range(count):
    codec, ext = kinds[k % len(kinds)]
    cls = os.path.join(folder, f"class{k % 4}")
    os.makedirs(cls, exist_ok=True)
    with av.open(os.path.join(cls, f"v{k:03d}.{ext}"), "w") as c:
      s = c.add_stream(codec, rate=25)
      s.height, s.width, s.pix_fmt = height, width, "yuv420p"
      s.bit_rate = 2_000_000
      for t in range(frames):
        # A texture drifting at a per-video speed and direction, plus a per-video colour.
        phase = (x * np.cos(k) + y * np.sin(k)) / 6.0 + t * 0.3 * (1 + k % 3)
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = 128 + 100 * np.sin(phase)
        img[..., 1] = (40 + 7 * k) % 256
        img[..., 2] = 128 + 100 * np.cos(phase * 0.7)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
          c.mux(p)
      for p in s.encode():
        c.mux(p)


class Timer:
  """Wall-clock and this process's CPU time (all threads) of a block."""

  def __enter__(self):
    self.wall, self.cpu = time.perf_counter(), time.process_time()
    return self

  def __exit__(self, *exc):
    self.wall = time.perf_counter() - self.wall
    self.cpu = time.process_time() - self.cpu

  def line(self, clips: int, in_process: bool = True) -> tuple[float, str]:
    rate = clips / self.wall
    cpu = f"{1e3 * self.cpu / clips:6.1f} CPU ms/clip" if in_process else "(CPU in workers)"
    return rate, f"{rate:7.1f} clips/s  {cpu}"


def loader_rate(data_cfg, batch_size: int, batches: int) -> tuple[float, str]:
  from layerlock_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  it = pipeline.make_train_iterator(data_cfg, seed=0, global_batch_size=batch_size,
                                    process_index=0, process_count=1)
  for _ in range(2):
    next(it)
  with Timer() as t:
    for _ in range(batches):
      next(it)
  it.close()
  return t.line(batches * batch_size, in_process=not data_cfg.num_workers)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from layerlock_jax.config import loading as config_loading  # pylint: disable=g-import-not-at-top
  from layerlock_jax.data import convert, pipeline  # pylint: disable=g-import-not-at-top
  from layerlock_jax.trainer import Trainer  # pylint: disable=g-import-not-at-top

  config = config_loading.load_config(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "tiny.py"))
  batch = config.batch_size
  tmp = tempfile.mkdtemp(prefix="loader_bench_")
  try:
    start = time.perf_counter()
    folder, shards = os.path.join(tmp, "videos"), os.path.join(tmp, "shards")
    write_videos(folder, _VIDEOS.value, _HEIGHT.value, _WIDTH.value, _FRAMES.value)
    convert.convert_folder(folder, shards, workers=2, log=lambda s: None)
    print(f"data: {_VIDEOS.value} videos {_WIDTH.value}x{_HEIGHT.value}, {_FRAMES.value} frames "
          f"(h264/vp9/mpeg4), written + converted in {time.perf_counter() - start:.1f}s; clips "
          f"{config.data.num_frames}x{config.data.image_size}^2, batch {batch}, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")

    rates = {}
    settings = [(source, path, int(w), 1) for source, path in (("video_folder", folder),
                                                               ("array_record", shards))
                for w in _WORKERS.value]
    settings.append(("video_folder", folder, 0, 2))  # VideoMAEv2-style: 2 clips per decode
    for source, path, workers, clips in settings:
      cfg = copy.deepcopy(config.data)  # keeps num_workers typed "int or \"auto\""
      with cfg.unlocked():
        cfg.source, cfg.path, cfg.num_workers, cfg.clips_per_video = source, path, workers, clips
      name = f"{source:12s} num_workers={workers} clips_per_video={clips}"
      rates[name], line = loader_rate(cfg, batch, _BATCHES.value)
      print(f"loader {name}: {line}")

    # The step alone, on a fixed batch already on the device.
    trainer = Trainer(config)
    spec = trainer.spec_at(0)
    state = trainer.init_state(spec)
    video_np = np.random.default_rng(0).integers(
        0, 256, (batch, config.data.num_frames, config.data.image_size, config.data.image_size, 3),
        dtype=np.uint8)
    video = pipeline.global_batch({"video": video_np}, trainer.video_sharding)["video"]
    step_fn = trainer.step_fn(spec, state, video)
    for _ in range(2):
      state, metrics = step_fn(state, video)
    jax.block_until_ready(metrics)
    with Timer() as t:
      for _ in range(_STEPS.value):
        state, metrics = step_fn(state, video)
      jax.block_until_ready(metrics)
    step_rate, line = t.line(_STEPS.value * batch)
    print(f"tiny train step (device batch):       {line}")

    # Both together with the default loader (num_workers=0), as a training run sees it.
    cfg = copy.deepcopy(config.data)
    with cfg.unlocked():
      cfg.source, cfg.path, cfg.num_workers = "video_folder", folder, 0
    it = pipeline.make_train_iterator(cfg, seed=0, global_batch_size=batch, process_index=0,
                                      process_count=1)
    for _ in range(2):
      next(it)
    with Timer() as t:
      for _ in range(_STEPS.value):
        b = pipeline.global_batch({"video": next(it)["video"]}, trainer.video_sharding)["video"]
        state, metrics = step_fn(state, b)
      jax.block_until_ready(metrics)
    it.close()
    together, line = t.line(_STEPS.value * batch)
    print(f"step fed by video_folder (workers=0): {line} ({100 * together / step_rate:.0f}% of "
          "the step alone)")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, rate in rates.items():
      print(f"ratio loader/step  {name}: {rate / step_rate:5.2f}")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
