"""Conversion throughput: the process pool against Apache Beam's DirectRunner on one folder.

  python bench/convert_bench.py [--videos=48] [--frames=48] [--size=96x64] [--workers=2]
      [--short_side=0] [--repeats=2]

Writes a folder of generated H.264 videos (two classes), then converts it with
data.convert.convert_folder on the local process pool (--runner=processes, --workers processes)
and on Beam's DirectRunner (--direct_num_workers=--workers, multi_processing), alternating,
`repeats` times each, into fresh output folders. Prints files/s and input MB/s per run (the
median of each runner last) and whether both runners wrote byte-identical shards. Needs
apache-beam for the DirectRunner rows.
"""
import argparse
import filecmp
import os
import platform
import shutil
import statistics
import tempfile
import time

import av
import numpy as np

from layerlock_jax.data import convert
from layerlock_jax.data import convert_beam


def write_folder(root: str, videos: int, frames: int, width: int, height: int) -> int:
  total = 0
  for i in range(videos):
    d = os.path.join(root, f"class_{i % 2}")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"v{i:04d}.mp4")
    rng = np.random.default_rng(i)
    with av.open(path, "w") as container:
      stream = container.add_stream("libx264", rate=25)
      stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
      base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
      for t in range(frames):
        image = np.roll(base, t, axis=1)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
          container.mux(packet)
      for packet in stream.encode():
        container.mux(packet)
    total += os.path.getsize(path)
  return total


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--videos", type=int, default=48)
  parser.add_argument("--frames", type=int, default=48)
  parser.add_argument("--size", default="96x64")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--short_side", type=int, default=0)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  width, height = (int(v) for v in args.size.split("x"))
  work = tempfile.mkdtemp(prefix="convert_bench_")
  try:
    folder = os.path.join(work, "in")
    size = write_folder(folder, args.videos, args.frames, width, height)
    runners = {"processes": lambda: None}
    if convert_beam.available():
      runners["DirectRunner"] = lambda: convert_beam.BeamRunner(
          "DirectRunner", [f"--direct_num_workers={args.workers}"])
    rows, outs = [], {}
    for r in range(args.repeats):
      for name, make in runners.items():
        out = os.path.join(work, f"{name}_{r}")
        start = time.perf_counter()
        convert.convert_folder(folder, out, workers=args.workers, short_side=args.short_side,
                               num_shards=4, log=lambda _: None, runner=make())
        seconds = time.perf_counter() - start
        rows.append((name, seconds))
        outs.setdefault(name, out)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"CPU: {cpu} ({os.cpu_count()} cores visible); {args.videos} videos, {args.frames} "
          f"frames at {width}x{height}, {size / 2**20:.1f} MiB; workers {args.workers}; "
          f"short_side {args.short_side or 'off (original bytes)'}")
    print(f"{'runner':>13} {'seconds':>8} {'files/s':>8} {'MB/s':>7}")
    for name, seconds in rows:
      print(f"{name:>13} {seconds:>8.2f} {args.videos / seconds:>8.1f} "
            f"{size / 1e6 / seconds:>7.2f}")
    for name in runners:
      med = statistics.median(s for n, s in rows if n == name)
      print(f"{name + ' median':>20} {med:>8.2f} s, {args.videos / med:.1f} files/s")
    if len(outs) == 2:
      a, b = outs.values()
      same = sorted(os.listdir(a)) == sorted(os.listdir(b)) and all(
          filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False)
          for f in os.listdir(a))
      print(f"byte-identical output: {same}")
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
