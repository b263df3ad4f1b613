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
leaves files that look finished; rerun the same command and it resumes: inspected chunks and
written shards are kept (convert_stages.py), and the shards come out byte-identical to an
uninterrupted run's.

Runners (--runner): with Apache Beam installed (pip install -e .[beam]) the stages run as Beam
pipelines, DirectRunner by default (every core of this machine), or FlinkRunner / SparkRunner /
DataflowRunner with Beam's own pipeline options on the same command line (convert_beam.py);
without Beam, or with --runner=processes, on a local process pool (--workers). Exit status: 0 on success, 1 if no usable video was found,
2 for bad arguments.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

from layerlock_jax.data import convert_stages
from layerlock_jax.data import records
from layerlock_jax.data import reencode
from layerlock_jax.data import video_files

DEFAULT_KEYFRAME_INTERVAL = reencode.DEFAULT_KEYFRAME_INTERVAL
DEFAULT_CRF = reencode.DEFAULT_CRF


def _inspect_star(args):
  return reencode.inspect_video(*args)


def _assign_shards(sizes: list[int], num_shards: int) -> list[int]:
  return convert_stages.assign_shards(sizes, num_shards)


def _splits(input_dir: str) -> list[str]:
  present = [d for names in video_files.SPLIT_FOLDERS.values() for d in names
             if os.path.isdir(os.path.join(input_dir, d))]
  return present or ["train"]


def convert_folder(input_dir: str, output_dir: str, *, labels_csv: str = "", shard_mb: float = 256,
                   num_shards: int = 0, workers: int = 0, min_frames: int = 1, verify: bool = True,
                   overwrite: bool = False, short_side: int = 0,
                   keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL, crf: float = DEFAULT_CRF,
                   log: Callable[[str], None] = print, runner: Any = None) -> dict[str, Any]:
  """The conversion behind the CLI; returns the report it also writes. See the module docstring.

  runner: None runs the stages (convert_stages) on a local process pool; an object with
  `inspect(jobs)` and `write(jobs)` (convert_beam.BeamRunner) runs them elsewhere. Either way a
  rerun after an interruption resumes: finished inspection chunks and shards are kept.
  """
  if not os.path.isdir(input_dir):
    raise NotADirectoryError(f"--input={input_dir!r} is not a folder")
  if short_side < 0 or (short_side and short_side < 8):
    raise ValueError(f"--short_side={short_side}: use 0 (keep the original bytes) or >= 8")
  if keyframe_interval < 1:
    raise ValueError(f"--keyframe_interval={keyframe_interval} must be >= 1")
  if not 0 <= crf <= 51:
    raise ValueError(f"--crf={crf} must be in [0, 51] (x264's quality scale; lower is better)")
  opts = convert_stages.Options(min_frames=int(min_frames), verify=bool(verify),
                                short_side=int(short_side),
                                keyframe_interval=int(keyframe_interval), crf=float(crf))
  settings = {"input": os.path.abspath(input_dir), "labels_csv": labels_csv,
              "shard_mb": float(shard_mb), "num_shards": int(num_shards),
              "chunk_files": [convert_stages.CHUNK_FILES, convert_stages.CHUNKS_PER_SPLIT], **dataclasses.asdict(opts)}
  convert_stages.prepare_output(output_dir, settings, overwrite, log)
  workers = workers or os.cpu_count() or 1
  meta: dict[str, Any] = {"format": records.METADATA_FORMAT, "class_names": None, "splits": {},
                          "shards": {}}
  report: dict[str, Any] = {"input": os.path.abspath(input_dir), "splits": {}}
  any_kept = False
  for split in _splits(input_dir):
    plan = convert_stages.list_split(input_dir, output_dir, split, labels_csv)
    listing, paths = plan.listing, plan.paths
    meta["class_names"] = listing.class_names
    log(f"[{split}] {len(paths)} video file(s) under {listing.root}"
        + (f" in {len(listing.class_names)} class(es)" if listing.class_names else " (unlabelled)")
        + (f"; {len(listing.ignored)} other file(s) ignored" if listing.ignored else ""))
    jobs = convert_stages.chunk_jobs(output_dir, plan, opts)
    if len(jobs) < len(plan.chunks):
      log(f"[{split}] {len(plan.chunks) - len(jobs)} of {len(plan.chunks)} inspection chunk(s) "
          "already done")
    if runner is None:
      _inspect_on_pool(jobs, len(paths), workers, split, log)
    elif jobs:
      # A Beam pipeline reports nothing until it ends: one line when it has.
      start = time.time()
      runner.inspect(jobs)
      done = sum(len(job[3]) for job in jobs)
      log(f"[{split}] inspected {done} file(s) on {runner.runner} in {time.time() - start:.0f}s")
    results = convert_stages.load_results(output_dir, plan)
    skipped = [(rel, "no label in labels_csv") for rel in listing.missing_label]
    skipped += [(listing.files[i], r["reason"]) for i, r in enumerate(results) if not r["ok"]]
    kept, sizes, write_jobs = convert_stages.plan_shards(output_dir, plan, results, shard_mb,
                                                         num_shards)
    names = [job[1] for job in write_jobs]
    if kept:
      any_kept = True
      todo = [job for job in write_jobs if not os.path.exists(os.path.join(output_dir, job[1]))]
      if len(todo) < len(write_jobs):
        log(f"[{split}] {len(write_jobs) - len(todo)} of {len(write_jobs)} shard(s) already "
            "written")
      if runner is None:
        for job in todo:
          out = convert_stages.write_shard(job)
          log(f"[{split}] wrote {out['name']}: {len(out['num_frames'])} record(s)")
      elif todo:
        runner.write(todo)
      for job in write_jobs:
        frames = [res.get("num_frames") for _, _, _, res in job[2]]
        meta["shards"][job[1]] = {"split": split, "num_records": len(frames), "num_frames": frames}
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
    convert_stages.finish_without_records(output_dir)
    raise video_files.NoUsableVideoError(
        f"no usable video under {input_dir}; see {output_dir}/conversion_report.json")
  convert_stages.finish(output_dir, meta)
  return report


def _inspect_on_pool(jobs, total: int, workers: int, split: str, log) -> None:
  """Inspects the files of `jobs` on a process pool, saving each chunk's results as it
  completes (in order), with a progress line every 2 s."""
  files = [(job, f) for job in jobs for f in job[3]]
  if not files:
    return
  start, last, bad = time.time(), 0.0, 0
  pending: list[dict[str, Any]] = []
  job_iter = iter(jobs)
  job = next(job_iter)
  # spawn, not fork: forking a process whose JAX / FFmpeg threads hold locks can deadlock.
  with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
    args = ((path, o.min_frames, o.verify, o.short_side, o.keyframe_interval, out, o.crf)
            for j in jobs for (_, path, out) in j[3] for o in [j[4]])
    for i, res in enumerate(pool.map(_inspect_star, args, chunksize=4)):
      pending.append(res)
      bad += not res["ok"]
      if len(pending) == len(job[3]):
        convert_stages.save_chunk(job[0], job[1], job[2], pending)
        pending = []
        job = next(job_iter, None)
      now = time.time()
      if now - last > 2 or i + 1 == len(files):
        rate = (i + 1) / max(now - start, 1e-9)
        log(f"[{split}] inspected {total - len(files) + i + 1}/{total} ({bad} failed this run) "
            f"{rate:.1f} files/s, ETA {(len(files) - i - 1) / rate:.0f}s")
        last = now


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
  flags.DEFINE_string("runner", "", "Where the stages run: DirectRunner (the default when Apache "
                      "Beam is installed: this machine's cores), FlinkRunner, SparkRunner, "
                      "DataflowRunner, ... (Beam's own pipeline options pass through), or "
                      "processes (a local process pool; the default without Beam).",
                      flag_values=flag_values)
  argv = list(sys.argv if argv is None else argv)
  if any(a in ("--help", "-h", "--helpfull", "-?") for a in argv[1:]):
    print(__doc__.strip() + "\n\nflags:\n" + flag_values.get_help())
    return 0
  # Flags this command does not define are Beam's pipeline options.
  ours = {name for name in flag_values}
  ours |= {f"no{name}" for name in ours}
  own = [argv[0]] + [a for a in argv[1:] if a.split("=")[0].lstrip("-") in ours]
  beam_args = [a for a in argv[1:] if a.split("=")[0].lstrip("-") not in ours]
  try:
    flag_values(own)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  fv = flag_values
  if not fv.input or not fv.output:
    print("error: --input and --output are required", file=sys.stderr)
    return 2
  from layerlock_jax.data import convert_beam  # pylint: disable=g-import-not-at-top
  runner_name = fv.runner or ("DirectRunner" if convert_beam.available() else "processes")
  if runner_name == "processes" and beam_args:
    print(f"error: unknown flag(s) {beam_args} (Beam pipeline options need a Beam --runner)",
          file=sys.stderr)
    return 2
  try:
    runner = None if runner_name == "processes" else convert_beam.BeamRunner(
        runner_name, beam_args, workers=fv.workers)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"runner: {runner_name}" + (f" {' '.join(beam_args)}" if beam_args else ""))
  try:
    report = convert_folder(fv.input, fv.output, labels_csv=fv.labels_csv, shard_mb=fv.shard_mb,
                            num_shards=fv.num_shards, workers=fv.workers,
                            min_frames=fv.min_frames, verify=fv.verify, overwrite=fv.overwrite,
                            short_side=fv.short_side, keyframe_interval=fv.keyframe_interval,
                            crf=fv.crf, runner=runner)
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
