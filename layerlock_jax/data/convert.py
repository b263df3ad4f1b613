"""Folder of videos -> ArrayRecord shards of encoded clips (read with data.source=array_record).

  python -m layerlock_jax.data.convert --input=/data/videos --output=/data/shards \
      [--short_side=N [--keyframe_interval=G] [--crf=Q]] [--labels_csv=labels.csv] \
      [--shard_mb=256 | --num_shards=N] [--workers=N] [--min_frames=16]

What it does, per split (train/, test/, val/, validation/ sub-folders become separate splits; a
folder without them becomes split "train"):
1. Lists videos and labels with the same rules as data.source=video_folder (video_files.py).
2. Verifies every file in parallel worker processes by decoding it completely (--verify, default
   on; --noverify only probes the container): unreadable, empty, truncated, wrong-stream and
   too-short (< --min_frames) files are skipped, with the reason.
3. Writes the original bytes of the good files (no re-encoding: lossless, and as small as the
   input) or, with --short_side=N, the video re-encoded (H.264 in mp4, in the worker processes)
   at short side N with a keyframe every --keyframe_interval frames and x264 quality --crf (23,
   x264's default: decoding cost follows the bitrate) - the usual pre-resizing of a
   large corpus: a 64-pixel, 16-frame-GOP record decodes a clip far faster than a 720p source with
   250-frame GOPs (docs/data.md). Each record carries its label, verified frame count and the index
   the loader plans and seeks with (frame timestamps, keyframe positions; for re-encoded records
   also where each frame's packet lies, so the loader decodes without opening the container), so
   nothing is scanned at training time. Records go into `<split>.array_record-NNNNN-of-MMMMM`,
   balanced by size (--shard_mb per shard, or exactly --num_shards).
4. Writes metadata.json (class names, per-shard frame counts: the loader uses them to skip short
   records without reading them and to stop decoding early) and conversion_report.json (every
   skipped file and why), prints progress while working and a summary at the end.

Shards are written under temporary names and renamed when complete, so an interrupted run never
leaves files that look finished. Exit status: 0 on success, 1 if no usable video was found,
2 for bad arguments.
"""
from __future__ import annotations

import collections
import json
import math
import os
import sys
import time
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

from layerlock_jax.data import decode
from layerlock_jax.data import records
from layerlock_jax.data import reencode
from layerlock_jax.data import video_files

DEFAULT_KEYFRAME_INTERVAL = reencode.DEFAULT_KEYFRAME_INTERVAL
DEFAULT_CRF = reencode.DEFAULT_CRF


def inspect_video(path: str, min_frames: int, verify: bool, short_side: int = 0,
                  keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL,
                  out_path: str = "", crf: float = DEFAULT_CRF) -> dict[str, Any]:
  """{"ok": True, num_frames, width, height, codec, index[, path]} or {"ok": False, "reason"}.

  Runs in a worker process. `verify` decodes every frame (the only way to catch a file that is cut
  off part way); otherwise only the container is probed. With `short_side` the file is decoded,
  scaled and re-encoded into `out_path` (which the result then names).
  """
  try:
    if short_side:
      result = reencode.reencode(path, out_path, short_side, keyframe_interval, crf)
      return _check_length(result, min_frames)
    if verify:
      result = _count_frames(path, min_frames)
    else:
      probe = decode.probe_file(path, min_frames)
      if probe.reason:
        return {"ok": False, "reason": probe.reason}
      result = {"ok": True, "num_frames": probe.exact_frames}
    if result["ok"]:
      result["index"] = reencode.index_file(path)
    return result
  except decode.BadVideoError as e:
    return {"ok": False, "reason": e.reason}
  except Exception as e:  # pylint: disable=broad-except
    # One odd file must not abort a conversion of thousands; it is reported instead.
    return {"ok": False, "reason": f"inspection failed ({type(e).__name__}: {e})"}


def _check_length(result: dict[str, Any], min_frames: int) -> dict[str, Any]:
  if result["ok"] and result["num_frames"] < min_frames:
    return {"ok": False, "reason": f"too short: {result['num_frames']} frame(s) < {min_frames}"}
  return result


def _count_frames(path: str, min_frames: int) -> dict[str, Any]:
  try:
    container = decode._open(path)  # pylint: disable=protected-access
  except decode.BadVideoError as e:
    return {"ok": False, "reason": e.reason}
  count, size = 0, None
  try:
    stream = decode._video_stream(container)  # pylint: disable=protected-access
    codec = stream.codec_context.name
    for frame in container.decode(stream):  # frames are dropped as we go: constant memory
      if size is None:
        size = (frame.width, frame.height)
      count += 1
    decode.check_complete(count, int(stream.frames or 0))
  except decode.BadVideoError as e:
    return {"ok": False, "reason": e.reason}
  except Exception as e:  # pylint: disable=broad-except
    return {"ok": False,
            "reason": f"decode error (after {count} frame(s); {type(e).__name__}: {e})"}
  finally:
    container.close()
  if count == 0:
    return {"ok": False, "reason": "no decodable frames"}
  if count < min_frames:
    return {"ok": False, "reason": f"too short: {count} frame(s) < {min_frames}"}
  return {"ok": True, "num_frames": count, "width": size[0], "height": size[1], "codec": codec}


def _inspect_star(args):
  return inspect_video(*args)


def _assign_shards(sizes: list[int], num_shards: int) -> list[int]:
  """Shard of each file: contiguous runs of about equal total size, none empty (needs
  num_shards <= len(sizes))."""
  total, n = max(1, sum(sizes)), len(sizes)
  out, before, prev = [], 0, 0
  for i, size in enumerate(sizes):
    shard = int((before + size / 2) * num_shards / total)  # where the file's middle byte falls
    # Steps of at most one shard and enough files left for the remaining shards: no empty shard.
    shard = min(shard, prev + 1 if i else 0, num_shards - 1)
    shard = max(shard, prev, num_shards - (n - i))
    out.append(shard)
    prev, before = shard, before + size
  return out


def _splits(input_dir: str) -> list[str]:
  present = [d for names in video_files.SPLIT_FOLDERS.values() for d in names
             if os.path.isdir(os.path.join(input_dir, d))]
  return present or ["train"]


def convert_folder(input_dir: str, output_dir: str, *, labels_csv: str = "", shard_mb: float = 256,
                   num_shards: int = 0, workers: int = 0, min_frames: int = 1, verify: bool = True,
                   overwrite: bool = False, short_side: int = 0,
                   keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL, crf: float = DEFAULT_CRF,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """The conversion behind the CLI; returns the report it also writes. See the module docstring."""
  if not os.path.isdir(input_dir):
    raise NotADirectoryError(f"--input={input_dir!r} is not a folder")
  if short_side < 0 or (short_side and short_side < 8):
    raise ValueError(f"--short_side={short_side}: use 0 (keep the original bytes) or >= 8")
  if keyframe_interval < 1:
    raise ValueError(f"--keyframe_interval={keyframe_interval} must be >= 1")
  if not 0 <= crf <= 51:
    raise ValueError(f"--crf={crf} must be in [0, 51] (x264's quality scale; lower is better)")
  os.makedirs(output_dir, exist_ok=True)
  existing = [f for f in os.listdir(output_dir)
              if ".array_record" in f or f in (records.METADATA_FILE, "conversion_report.json")]
  if existing:
    if not overwrite:
      raise FileExistsError(f"--output={output_dir!r} already holds {sorted(existing)[:3]}...; "
                            "pass --overwrite to replace them")
    for f in existing:
      os.remove(os.path.join(output_dir, f))
  workers = workers or os.cpu_count() or 1
  meta: dict[str, Any] = {"format": records.METADATA_FORMAT, "class_names": None, "splits": {},
                          "shards": {}}
  report: dict[str, Any] = {"input": os.path.abspath(input_dir), "splits": {}}
  any_kept = False
  for split in _splits(input_dir):
    listing = video_files.list_videos(input_dir, split, labels_csv)
    meta["class_names"] = listing.class_names
    paths = [os.path.join(listing.root, rel) for rel in listing.files]
    log(f"[{split}] {len(paths)} video file(s) under {listing.root}"
        + (f" in {len(listing.class_names)} class(es)" if listing.class_names else " (unlabelled)")
        + (f"; {len(listing.ignored)} other file(s) ignored" if listing.ignored else ""))
    results, start, last = [], time.time(), 0.0
    skipped = [(rel, "no label in labels_csv") for rel in listing.missing_label]
    # spawn, not fork: forking a process whose JAX / FFmpeg threads hold locks can deadlock.
    scratch = os.path.join(output_dir, f".reencoded-{split}")  # removed once written
    if short_side:
      os.makedirs(scratch, exist_ok=True)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      jobs = ((p, min_frames, verify, short_side, keyframe_interval,
               os.path.join(scratch, f"{i:08d}.mp4"), crf) for i, p in enumerate(paths))
      for i, res in enumerate(pool.map(_inspect_star, jobs, chunksize=4)):
        results.append(res)
        if not res["ok"]:
          skipped.append((listing.files[i], res["reason"]))
        now = time.time()
        if now - last > 2 or i + 1 == len(paths):
          rate = (i + 1) / max(now - start, 1e-9)
          log(f"[{split}] inspected {i + 1}/{len(paths)} ({len(skipped)} skipped) "
              f"{rate:.1f} files/s, ETA {(len(paths) - i - 1) / rate:.0f}s")
          last = now
    kept = [i for i, r in enumerate(results) if r["ok"]]
    stored = [results[i].get("path") or paths[i] for i in range(len(paths))]
    sizes = [os.path.getsize(stored[i]) for i in kept]
    names = []
    if kept:
      any_kept = True
      count = num_shards or max(1, math.ceil(sum(sizes) / (shard_mb * 2**20)))
      count = min(count, len(kept))
      names = [records.shard_name(split, s, count) for s in range(count)]
      _write_shards(output_dir, names, _assign_shards(sizes, count), kept, stored, listing,
                    results, meta, split, log)
    if short_side:
      shutil.rmtree(scratch, ignore_errors=True)
    meta["splits"][split] = {"num_records": len(kept), "shards": names}
    reasons = collections.Counter(r.split(" (")[0].split(":")[0] for _, r in skipped)
    report["splits"][split] = {"videos": len(paths), "converted": len(kept),
                               "short_side": short_side or None,
                               "crf": crf if short_side else None,
                               "skipped": len(skipped), "skipped_by_reason": dict(reasons),
                               "skipped_files": dict(skipped), "ignored_files": listing.ignored,
                               "bytes": sum(sizes)}
    log(f"[{split}] converted {len(kept)}/{len(paths)} video(s), {sum(sizes) / 2**20:.1f} MiB; "
        f"skipped {len(skipped)}" + (f" ({dict(reasons)})" if skipped else ""))
    for rel, reason in skipped:
      log(f"[{split}]   skipped {rel}: {reason}")
  with open(os.path.join(output_dir, "conversion_report.json"), "w") as f:
    json.dump(report, f, indent=2)
  if not any_kept:
    raise video_files.NoUsableVideoError(
        f"no usable video under {input_dir}; see {output_dir}/conversion_report.json")
  tmp = os.path.join(output_dir, records.METADATA_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(meta, f)
  os.replace(tmp, os.path.join(output_dir, records.METADATA_FILE))
  return report


def _write_shards(output_dir, names, assignment, kept, paths, listing, results, meta, split, log):
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  by_shard = collections.defaultdict(list)
  for k, shard in zip(kept, assignment):
    by_shard[shard].append(k)
  for shard, name in enumerate(names):
    final = os.path.join(output_dir, name)
    # group_size:1 makes every record its own chunk: random access without reading neighbours,
    # which is what a shuffled loader does. Uncompressed: encoded video does not compress, and
    # decompressing it on every read only costs time (docs/data.md).
    writer = array_record_module.ArrayRecordWriter(final + ".tmp", "group_size:1,uncompressed")
    frames = []
    for k in by_shard[shard]:
      with open(paths[k], "rb") as f:
        data = f.read()
      res = results[k]
      writer.write(records.encode_record(
          data, name=listing.files[k], label=listing.labels[k], num_frames=res.get("num_frames"),
          width=res.get("width"), height=res.get("height"), codec=res.get("codec"),
          index=res.get("index")))
      frames.append(res.get("num_frames"))
    writer.close()
    os.replace(final + ".tmp", final)
    meta["shards"][name] = {"split": split, "num_records": len(frames), "num_frames": frames}
    log(f"[{split}] wrote {name}: {len(frames)} record(s)")


def main(argv=None) -> int:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  flags.DEFINE_string("input", None, "Folder of videos (optionally train/ test/ sub-folders).",
                      flag_values=flag_values)
  flags.DEFINE_string("output", None, "Folder for the shards and metadata.json.",
                      flag_values=flag_values)
  flags.DEFINE_string("labels_csv", "", "Optional CSV of path,label rows.", flag_values=flag_values)
  flags.DEFINE_float("shard_mb", 256, "Target shard size in MiB.", flag_values=flag_values)
  flags.DEFINE_integer("num_shards", 0, "Exact shard count per split (0: from --shard_mb).",
                       flag_values=flag_values)
  flags.DEFINE_integer("workers", 0, "Verification processes (0: one per CPU).",
                       flag_values=flag_values)
  flags.DEFINE_integer("min_frames", 1, "Skip videos with fewer frames (use the training "
                       "num_frames to drop clips that could never fill one).",
                       flag_values=flag_values)
  flags.DEFINE_bool("verify", True, "Decode every file completely (catches truncation).",
                    flag_values=flag_values)
  flags.DEFINE_bool("overwrite", False, "Replace shards already in --output.",
                    flag_values=flag_values)
  flags.DEFINE_integer("short_side", 0, "Re-encode every video (H.264) at this short side in "
                       "pixels, never upscaling (0: store the original bytes).",
                       flag_values=flag_values)
  flags.DEFINE_integer("keyframe_interval", DEFAULT_KEYFRAME_INTERVAL, "With --short_side: a "
                       "keyframe every this many frames (a clip's decode starts at the keyframe "
                       "before it).", flag_values=flag_values)
  flags.DEFINE_float("crf", DEFAULT_CRF, "With --short_side: x264 quality (0-51, lower is "
                     "better and larger; 23 is x264's default). Decoding cost grows with the "
                     "bitrate: at short side 64, CRF 18 decodes ~40% slower than 23.",
                     flag_values=flag_values)
  argv = list(sys.argv if argv is None else argv)
  if any(a in ("--help", "-h", "--helpfull", "-?") for a in argv[1:]):
    print(__doc__.strip() + "\n\nflags:\n" + flag_values.get_help())
    return 0
  try:
    flag_values(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  fv = flag_values
  if not fv.input or not fv.output:
    print("error: --input and --output are required", file=sys.stderr)
    return 2
  try:
    report = convert_folder(fv.input, fv.output, labels_csv=fv.labels_csv, shard_mb=fv.shard_mb,
                            num_shards=fv.num_shards, workers=fv.workers,
                            min_frames=fv.min_frames, verify=fv.verify, overwrite=fv.overwrite,
                            short_side=fv.short_side, keyframe_interval=fv.keyframe_interval,
                            crf=fv.crf)
  except video_files.NoUsableVideoError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  total = sum(s["converted"] for s in report["splits"].values())
  bad = sum(s["skipped"] for s in report["splits"].values())
  print(f"done: {total} video(s) in shards under {fv.output}; {bad} skipped "
        f"(details in conversion_report.json)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
