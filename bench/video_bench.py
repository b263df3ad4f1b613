"""Real-video loading at training speed: loader cost vs the decode floor, throughput, memory.

  python bench/video_bench.py [--corpus=/tmp/video_corpus] [--clips=48] [--batches=8]
      [--workers=0,auto] [--vit_s] [--parts=1,2,3,4] [--baseline=OTHER_CHECKOUT]

On the corpus of bench/video_corpus.py (10 s 30 fps 640x360 / 1280x720 H.264 with 150-250-frame
keyframe gaps, VP9, MPEG-4, MPEG-2, short clips, broken files), as a folder and as shards made
by `convert --short_side=64`:
1. Floor vs loader, on IDENTICAL clips (the tiny config: 16 frames at stride 2, 32^2 random
   resized crops): the decode floor is the CPU time PyAV needs to open the file, seek and decode
   from the keyframe before the clip to its last frame, nothing else (for shards with a packet
   table: to decode those frames' packets without the container, the cheaper floor; the
   container floor is printed beside it); the loader's cost is the
   CPU time of `source.training_item` for the same (position, record) - planning, packet scan,
   seek, decode, libswscale scaling, crop/resize. Both single-threaded in this process, so their
   ratio does not depend on how busy the machine is.
2. Throughput: clips/s of `pipeline.make_train_iterator` (batch 16) for each --workers value,
   CPU ms per clip of the whole process tree and its peak RSS (bench/proc_tree.py).
3. Memory vs video length: peak RSS of a fresh process that cuts 40 clips of a 10 s and of a
   60 s 640x360 video.
4. The train step's clips/s (tiny; ViT-S at 16x224^2 with --vit_s, batch 2, slow on CPU) and the
   loader/step ratios (> 1: the loader keeps up on this machine).
Prints `uptime`'s load average with the numbers: the machine may be shared.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proc_tree  # pylint: disable=g-import-not-at-top,wrong-import-position
import video_corpus  # pylint: disable=g-import-not-at-top,wrong-import-position

_CORPUS = flags.DEFINE_string("corpus", "/tmp/video_corpus", "Corpus folder (built if missing).")
_CLIPS = flags.DEFINE_integer("clips", 48, "Clips for the floor-vs-loader comparison.")
_BATCHES = flags.DEFINE_integer("batches", 8, "Timed batches (of 16) per throughput setting.")
_WORKERS = flags.DEFINE_list("workers", ["0", "auto"], "data.num_workers values to measure.")
_VIT_S = flags.DEFINE_bool("vit_s", False, "Also time the ViT-S step (16x224^2) and loader.")
_SHORT_SIDE = flags.DEFINE_integer("short_side", 64, "convert --short_side for the shards.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Clip size of part 1 (32: tiny; 224: ViT-S).")
_PARTS = flags.DEFINE_list("parts", ["1", "2", "3", "4"], "Which of the numbered parts to run.")
_BASELINE = flags.DEFINE_string("baseline", "", "Another checkout of the repository (e.g. `git "
                                "archive <commit> | tar -x -C DIR`): its folder loader is timed "
                                "on the same clips in a subprocess, for a before/after ratio.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load() -> str:
  return "load average %.1f %.1f %.1f" % os.getloadavg()


def tiny_data_cfg(source: str, path: str, workers=0, image_size=None, num_frames=None):
  from layerlock_jax.config import loading as config_loading  # pylint: disable=g-import-not-at-top
  cfg = config_loading.load_config(os.path.join(REPO, "configs", "tiny.py")).data
  import ml_collections  # pylint: disable=g-import-not-at-top
  out = ml_collections.ConfigDict(cfg.to_dict())
  out.source, out.path = source, path
  out.num_workers = ml_collections.FieldReference(workers, field_type=object)
  out.read_threads = ml_collections.FieldReference(cfg.read_threads, field_type=object)
  if image_size:
    out.image_size = image_size
  if num_frames:
    out.num_frames = num_frames
  return out


def floor_and_cost(source, clips: int, seed: int = 0, rounds: int = 5) -> dict:
  """CPU ms per clip: the decode floor and the loader, on the same (position, record) pairs
  (medians over `rounds` alternated passes)."""
  import av  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from layerlock_jax.data import augment, decode, packets  # pylint: disable=g-import-not-at-top
  pairs, plans = [], []
  for p in range(10 * clips):
    if len(pairs) == clips:
      break
    r = (p * 7919) % len(source)
    rec = source.read_record(r)
    try:
      c = decode.open_container(rec.src)
      index = rec.index or decode.index_stream(c, decode.video_stream(c))
      c.close()
      rng = augment.clip_rng(seed, p)
      temporal = augment.plan_temporal(min(rec.known_frames or index.num_frames,
                                           source.max_decode_frames), source.spec, rng)
    except (decode.BadVideoError, augment.TooShortError):
      continue  # broken records are the replacement logic's business, not the floor's
    needed = sorted({int(i) for t in temporal for i in t})
    pairs.append((p, r))
    plans.append((rec.src, index, needed))
  # The floor: open, seek to the keyframe at or before the first needed frame, decode to the last.
  # A record with a packet table (packets.py) can be decoded without the container: its floor is
  # then decoding those frames' packets, and the container floor is reported beside it.
  # Floors and loader alternate over `rounds` passes on the same clips and the ratio is the median
  # of the per-round ratios: one pass of each swings with cache state and the machine's load.
  def floor_pass(use_packets: bool) -> tuple[float, int]:
    t0 = time.process_time()
    decoded = 0
    for src, index, needed in plans:
      if use_packets and index.packets is not None:
        k = index.keyframes[np.searchsorted(index.keyframes, needed[0], side="right") - 1]
        decoded += packets.decode_span(src, index.packets, int(k), needed, lambda i, f: None)
        continue
      c = decode.open_container(src)
      s = decode.video_stream(c)
      s.codec_context.thread_count = 1
      first, last = needed[0], needed[-1]
      if index.pts is not None and len(index.keyframes) and first > 0:
        k = index.keyframes[np.searchsorted(index.keyframes, first, side="right") - 1]
        c.seek(int(index.pts[k]), stream=s, backward=True, any_frame=False)
        last_pts = int(index.pts[last])
        for f in c.decode(s):
          decoded += 1
          if f.pts is not None and f.pts >= last_pts:
            break
      else:
        for i, f in enumerate(c.decode(s)):
          decoded += 1
          if i >= last:
            break
      c.close()
    return time.process_time() - t0, decoded

  def loader_pass() -> float:
    t0 = time.process_time()
    for p, r in pairs:
      source.training_item(p, r, seed)
    return time.process_time() - t0

  with_table = any(index.packets is not None for _, index, _ in plans)
  floors, container_floors, costs, decoded = [], [], [], 0
  for _ in range(rounds):
    floor, decoded = floor_pass(use_packets=True)
    floors.append(floor)
    if with_table:
      container_floors.append(floor_pass(use_packets=False)[0])
    costs.append(loader_pass())
  n = len(pairs)
  ratios = sorted(c / f for c, f in zip(costs, floors))
  return {"clips": n, "floor_ms": 1e3 * float(np.median(floors)) / n,
          "container_floor_ms": (1e3 * float(np.median(container_floors)) / n
                                 if with_table else None),
          "loader_ms": 1e3 * float(np.median(costs)) / n, "ratio": float(np.median(ratios)),
          "ratio_range": (ratios[0], ratios[-1]), "rounds": rounds,
          "frames_decoded_per_clip": decoded / n, "pairs": pairs}


_BASELINE_CHILD = r"""
import json, resource, sys, time
from layerlock_jax.data import augment, video_files
folder, pairs = sys.argv[1], json.loads(sys.argv[2])
spec = augment.ClipSpec(16, 32, frame_stride=2)
src = video_files.VideoFolderSource(folder, "train", spec)
t = time.process_time()
for p, r in pairs:
  src.training_item(p, r, 0)
print(json.dumps({"loader_ms": 1e3 * (time.process_time() - t) / len(pairs),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def throughput(data_cfg, batches: int, batch: int = 16) -> dict:
  from layerlock_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  me = proc_tree.psutil.Process()
  with proc_tree.TreeSampler() as sampler:
    it = pipeline.make_train_iterator(data_cfg, seed=0, global_batch_size=batch, process_index=0,
                                      process_count=1)
    # Warm-up drains what the read threads / workers prefetched while the first batch was made
    # (up to max(prefetch, read_threads) batches per process), so the timed batches are made
    # while timed.
    for _ in range(6):
      next(it)
    wall, cpu = time.perf_counter(), proc_tree.tree_cpu(me)
    for _ in range(batches):
      next(it)
    wall, cpu = time.perf_counter() - wall, proc_tree.tree_cpu(me) - cpu
    it.close()
    del it
  clips = batches * batch
  return {"clips_per_s": clips / wall, "cpu_ms_per_clip": 1e3 * cpu / clips,
          "peak_tree_rss_mib": sampler.peak / 2**20}


_LENGTH_CHILD = r"""
import resource, sys, numpy as np
from layerlock_jax.data import augment, decode
spec = augment.ClipSpec(16, 32, frame_stride=2)
for p in range(40):
  decode.load_clips(sys.argv[1], spec, augment.clip_rng(0, p))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def step_rate(config, steps: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from layerlock_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from layerlock_jax.trainer import Trainer  # pylint: disable=g-import-not-at-top
  trainer = Trainer(config)
  spec = trainer.spec_at(0)
  state = trainer.init_state(spec)
  d = config.data
  video = pipeline.global_batch({"video": np.random.default_rng(0).integers(
      0, 256, (config.batch_size, d.num_frames, d.image_size, d.image_size, 3), np.uint8)},
      trainer.video_sharding)["video"]
  fn = trainer.step_fn(spec, state, video)
  state, m = fn(state, video)
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(steps):
    state, m = fn(state, video)
  jax.block_until_ready(m)
  return steps * config.batch_size / (time.perf_counter() - t)


def main(argv):
  del argv
  from layerlock_jax.data import convert, records, video_files  # pylint: disable=g-import-not-at-top
  from layerlock_jax.data import augment  # pylint: disable=g-import-not-at-top
  manifest = video_corpus.build(_CORPUS.value)
  folder = os.path.join(_CORPUS.value, "train")
  shards = os.path.join(_CORPUS.value + f"_shards{_SHORT_SIDE.value}")
  if not os.path.exists(os.path.join(shards, records.METADATA_FILE)):
    t = time.perf_counter()
    convert.convert_folder(folder, shards, short_side=_SHORT_SIDE.value, workers=2,
                           min_frames=16, overwrite=True, log=lambda s: None)
    print(f"convert --short_side={_SHORT_SIDE.value}: {time.perf_counter() - t:.0f}s")
  size = sum(os.path.getsize(os.path.join(shards, f)) for f in os.listdir(shards))
  print(f"corpus: {len(manifest['train'])} files ({len(manifest['broken'])} broken), "
        f"{manifest['bytes'] / 2**20:.0f} MiB; shards {size / 2**20:.1f} MiB; "
        f"{os.cpu_count()} cores, {load()}")
  spec = augment.spec_from_config(tiny_data_cfg("video_folder", folder,
                                                image_size=_IMAGE_SIZE.value))
  sources = {"folder": video_files.VideoFolderSource(folder, "train", spec),
             f"shards{_SHORT_SIDE.value}": records.ArrayRecordSource(shards, "train", spec)}
  print(f"\n1. decode floor vs loader, identical clips, CPU ms/clip (single thread, 16 frames "
        f"at {_IMAGE_SIZE.value}^2)")
  for name, src in sources.items() if "1" in _PARTS.value else ():
    r = floor_and_cost(src, _CLIPS.value)
    print(f"  {name:9s} floor {r['floor_ms']:7.2f}  loader {r['loader_ms']:7.2f}  "
          f"ratio {r['ratio']:.2f} [{r['ratio_range'][0]:.2f}, {r['ratio_range'][1]:.2f}] "
          f"({r['frames_decoded_per_clip']:.0f} frames decoded/clip, {r['clips']} clips, "
          f"median of {r['rounds']} alternated rounds)  [{load()}]")
    if r["container_floor_ms"] is not None:
      print(f"  {'':9s} (floor from packets, no container; through the container the same frames "
            f"cost {r['container_floor_ms']:.2f}, loader / that {r['loader_ms'] / r['container_floor_ms']:.2f})")
    if name == "folder" and _BASELINE.value:
      out = subprocess.run([sys.executable, "-c", _BASELINE_CHILD, folder, json.dumps(r["pairs"])],
                           capture_output=True, text=True, check=True, cwd=_BASELINE.value,
                           env={**os.environ, "PYTHONPATH": _BASELINE.value})
      base = json.loads(out.stdout.strip().splitlines()[-1])
      print(f"  baseline  {_BASELINE.value}: loader {base['loader_ms']:7.2f} CPU ms/clip on the "
            f"same clips ({base['loader_ms'] / r['loader_ms']:.1f}x this loader's cost), peak "
            f"RSS {base['peak_rss_mib']:.0f} MiB  [{load()}]")
  print("\n2. pipeline throughput (tiny: batch 16 of 16x32^2), process tree")
  rates = {}
  for name, path, kind in (("folder", folder, "video_folder"),
                           (f"shards{_SHORT_SIDE.value}", shards, "array_record")):
    for w in _WORKERS.value if "2" in _PARTS.value else ():
      workers = w if w == "auto" else int(w)
      r = throughput(tiny_data_cfg(kind, path, workers), _BATCHES.value)
      rates[(name, w)] = r["clips_per_s"]
      print(f"  {name:9s} num_workers={w:4s} {r['clips_per_s']:7.1f} clips/s  "
            f"{r['cpu_ms_per_clip']:7.1f} CPU ms/clip  peak tree RSS "
            f"{r['peak_tree_rss_mib']:6.0f} MiB  [{load()}]")
  r = throughput(tiny_data_cfg("moving_mnist", "", 0), _BATCHES.value if "2" in _PARTS.value
                 else 2)
  rates[("embedded", "0")] = r["clips_per_s"]
  print(f"  embedded  num_workers=0    {r['clips_per_s']:7.1f} clips/s  "
        f"{r['cpu_ms_per_clip']:7.1f} CPU ms/clip  [{load()}]")
  print("\n3. memory vs video length (fresh process, 40 clips of one 640x360 video)")
  for secs in (10, 60) if "3" in _PARTS.value else ():
    path = os.path.join(_CORPUS.value, "length", f"h264_360p_{secs}s.mp4")
    out = subprocess.run([sys.executable, "-c", _LENGTH_CHILD, path], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": REPO})
    print(f"  {secs:2d} s video: peak RSS {float(out.stdout.strip()):6.0f} MiB")
  if "4" not in _PARTS.value:
    return
  print("\n4. train step vs loader")
  from layerlock_jax.config import loading as config_loading  # pylint: disable=g-import-not-at-top
  tiny_rate = step_rate(config_loading.load_config(os.path.join(REPO, "configs", "tiny.py")), 10)
  print(f"  tiny step: {tiny_rate:7.1f} clips/s  [{load()}]")
  for (name, w), rate in rates.items():
    print(f"  loader/step tiny  {name:9s} num_workers={w:4s}: {rate / tiny_rate:6.2f}")
  if _VIT_S.value:
    import vit_s  # pylint: disable=g-import-not-at-top
    config = vit_s.get_config()
    config.batch_size = 2
    vit_rate = step_rate(config, 2)
    print(f"  ViT-S step (16x224^2, batch 2): {vit_rate:7.2f} clips/s  [{load()}]")
    # The loader side at 224^2 from its CPU cost per clip (a short wall-clock run at this size
    # would mostly time prefetched batches): clips/s that one core sustains.
    spec224 = augment.spec_from_config(tiny_data_cfg("video_folder", folder, image_size=224))
    for name, src in (("folder", video_files.VideoFolderSource(folder, "train", spec224)),
                      (f"shards{_SHORT_SIDE.value}",
                       records.ArrayRecordSource(shards, "train", spec224))):
      r = floor_and_cost(src, 8)
      per_core = 1e3 / r["loader_ms"]
      print(f"  loader {name:9s} at 16x224^2: {r['loader_ms']:6.1f} CPU ms/clip = "
            f"{per_core:5.1f} clips/s per core, loader(1 core)/step {per_core / vit_rate:6.1f}")


if __name__ == "__main__":
  app.run(main)
