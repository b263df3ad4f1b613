"""The converter's stages as units of work that any executor runs, and the state a rerun resumes.

data.convert runs them on a local process pool; data.convert_beam runs the same functions as an
Apache Beam pipeline (DirectRunner on all cores, or a cluster runner). Per split:

1. Inspection, in chunks of listed files (`chunk_size`: at least CHUNKS_PER_SPLIT chunks where
   the split has that many files, so every worker of a runner gets work, and at most CHUNK_FILES
   files each): `inspect_chunk` verifies (or re-encodes) each file of a chunk and writes the
   chunk's results to OUTPUT/.convert-state/<split>/ as JSON, atomically. A finished chunk is
   never inspected again; a rerun whose listing differs from the interrupted run's is refused.
2. Planning, in one place: `plan_shards` reads every chunk's results and assigns the good files
   to shards exactly as the converter always has (contiguous runs of about equal size, from the
   verified sizes): a pure function of the results, so the plan is the same on every run.
3. Writing: `write_shard` writes one shard under a temporary name and renames it when complete;
   a shard whose final file exists is skipped. Records are the same bytes in the same order
   whichever executor wrote them and however often the run was interrupted. (With --short_side
   the re-encoded streams of finished chunks are kept in OUTPUT/.reencoded-<split>/ and reused;
   x264 itself does not always encode a file to the same bytes twice, so two separate
   re-encoding runs may differ in a few records' bytes.)

OUTPUT/.convert-state/args.json holds the settings that shape the output; a rerun with other
settings is refused (one line) unless --overwrite starts afresh. The state folder and re-encoded
scratch files are removed once metadata.json is written. Every process must see OUTPUT as the
same folder (a local disk for one machine, a shared file system for a cluster).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import shutil
from typing import Any, Callable

from layerlock_jax.data import records
from layerlock_jax.data import video_files

STATE_DIR = ".convert-state"
CHUNK_FILES = 64
CHUNKS_PER_SPLIT = 256


def chunk_size(num_files: int) -> int:
  """Files per inspection chunk of a split of `num_files` files (a function of the count only,
  so a rerun cuts the same chunks)."""
  return max(1, min(CHUNK_FILES, -(-num_files // CHUNKS_PER_SPLIT)))


@dataclasses.dataclass(frozen=True)
class Options:
  """Per-file settings of the inspection (see data.convert's flags)."""
  min_frames: int = 1
  verify: bool = True
  short_side: int = 0
  keyframe_interval: int = 16
  crf: float = 23.0


@dataclasses.dataclass
class SplitListing:
  """One split's files (listing order: the order of the records) and where re-encodes go."""
  split: str
  listing: Any                    # video_files.Listing
  paths: list[str]
  scratch: str

  @property
  def chunks(self) -> list[tuple[int, int, int]]:
    """(chunk id, first file, end) over the listed files."""
    n = len(self.paths)
    size = chunk_size(n)
    return [(c, s, min(s + size, n)) for c, s in enumerate(range(0, n, size))]


def state_dir(output_dir: str, split: str | None = None) -> str:
  root = os.path.join(output_dir, STATE_DIR)
  return root if split is None else os.path.join(root, split)


def _atomic_json(path: str, value: Any) -> None:
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f)
  os.replace(tmp, path)


def prepare_output(output_dir: str, settings: dict[str, Any], overwrite: bool,
                   log: Callable[[str], None]) -> bool:
  """Makes OUTPUT ready; True when a previous interrupted run with the same settings resumes.

  A finished conversion, or shards without a state folder, need --overwrite (as always); a
  state folder with other settings is refused with the settings that differ.
  """
  os.makedirs(output_dir, exist_ok=True)
  args_file = os.path.join(state_dir(output_dir), "args.json")
  existing = [f for f in os.listdir(output_dir)
              if ".array_record" in f or f in (records.METADATA_FILE, "conversion_report.json")]
  if overwrite:
    for f in existing:
      os.remove(os.path.join(output_dir, f))
    shutil.rmtree(state_dir(output_dir), ignore_errors=True)
    for f in os.listdir(output_dir):
      if f.startswith(".reencoded-"):
        shutil.rmtree(os.path.join(output_dir, f), ignore_errors=True)
  elif os.path.exists(args_file) and records.METADATA_FILE not in existing:
    with open(args_file) as f:
      before = json.load(f)
    if before != json.loads(json.dumps(settings)):
      changed = sorted(k for k in set(before) | set(settings)
                       if before.get(k) != json.loads(json.dumps(settings.get(k))))
      raise FileExistsError(f"--output={output_dir!r} holds an interrupted conversion with other "
                            f"settings ({', '.join(changed)}); rerun with the same settings to "
                            "resume it, or pass --overwrite to start again")
    done = sum(".array_record" in f and not f.endswith(".tmp") for f in existing)
    log(f"resuming the interrupted conversion in {output_dir} ({done} shard(s) already written)")
    return True
  elif existing:
    raise FileExistsError(f"--output={output_dir!r} already holds {sorted(existing)[:3]}...; "
                          "pass --overwrite to replace them")
  os.makedirs(state_dir(output_dir), exist_ok=True)
  _atomic_json(args_file, settings)
  return False


def list_split(input_dir: str, output_dir: str, split: str, labels_csv: str) -> SplitListing:
  listing = video_files.list_videos(input_dir, split, labels_csv)
  paths = [os.path.join(listing.root, rel) for rel in listing.files]
  return SplitListing(split, listing, paths, os.path.join(output_dir, f".reencoded-{split}"))


def chunk_path(output_dir: str, split: str, chunk: int) -> str:
  return os.path.join(state_dir(output_dir, split), f"chunk-{chunk:06d}.json")


def chunk_jobs(output_dir: str, plan: SplitListing, opts: Options) -> list[tuple]:
  """The inspection jobs of `plan` still to do: (output_dir, split, chunk, [(i, path, out)],
  opts) for every chunk without results on disk."""
  os.makedirs(state_dir(output_dir, plan.split), exist_ok=True)
  listing_file = os.path.join(state_dir(output_dir, plan.split), "listing.json")
  listing = {"files": list(plan.listing.files), "labels": list(plan.listing.labels)}
  if os.path.exists(listing_file):
    with open(listing_file) as f:
      before = json.load(f)
    if before != json.loads(json.dumps(listing)):
      raise FileExistsError(f"[{plan.split}] the input's files or labels changed since the "
                            "interrupted conversion; pass --overwrite to start again")
  else:
    _atomic_json(listing_file, listing)
  if opts.short_side:
    os.makedirs(plan.scratch, exist_ok=True)
  jobs = []
  for chunk, start, end in plan.chunks:
    if os.path.exists(chunk_path(output_dir, plan.split, chunk)):
      continue
    files = [(i, plan.paths[i], os.path.join(plan.scratch, f"{i:08d}.mp4"))
             for i in range(start, end)]
    jobs.append((output_dir, plan.split, chunk, files, opts))
  return jobs


def inspect_one(path: str, out_path: str, opts: Options) -> dict[str, Any]:
  from layerlock_jax.data import convert  # pylint: disable=g-import-not-at-top
  return convert.inspect_video(path, opts.min_frames, opts.verify, opts.short_side,
                               opts.keyframe_interval, out_path, opts.crf)


def save_chunk(output_dir: str, split: str, chunk: int, results: list[dict[str, Any]]) -> str:
  path = chunk_path(output_dir, split, chunk)
  _atomic_json(path, results)
  return path


def inspect_chunk(job: tuple) -> str:
  """Runs one inspection job (see chunk_jobs) and saves its results; returns the results file."""
  output_dir, split, chunk, files, opts = job
  results = [inspect_one(path, out, opts) for _, path, out in files]
  return save_chunk(output_dir, split, chunk, results)


def load_results(output_dir: str, plan: SplitListing) -> list[dict[str, Any]]:
  """Every file's inspection result, in listing order (all chunks must be done)."""
  out = []
  for chunk, start, end in plan.chunks:
    with open(chunk_path(output_dir, plan.split, chunk)) as f:
      results = json.load(f)
    if len(results) != end - start:
      raise ValueError(f"{chunk_path(output_dir, plan.split, chunk)}: {len(results)} results for "
                       f"{end - start} files; pass --overwrite to start again")
    out.extend(results)
  return out


def assign_shards(sizes: list[int], num_shards: int) -> list[int]:
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


def plan_shards(output_dir: str, plan: SplitListing, results: list[dict[str, Any]],
                shard_mb: float, num_shards: int) -> tuple[list[int], list[int], list[tuple]]:
  """(kept file indices, their sizes, write jobs). A write job is (output_dir, shard name,
  [(stored path, name, label, result)]) in record order."""
  kept = [i for i, r in enumerate(results) if r["ok"]]
  stored = [results[i].get("path") or plan.paths[i] for i in range(len(plan.paths))]
  sizes = [os.path.getsize(stored[i]) for i in kept]
  if not kept:
    return kept, sizes, []
  count = num_shards or max(1, math.ceil(sum(sizes) / (shard_mb * 2**20)))
  count = min(count, len(kept))
  names = [records.shard_name(plan.split, s, count) for s in range(count)]
  by_shard = collections.defaultdict(list)
  for k, shard in zip(kept, assign_shards(sizes, count)):
    by_shard[shard].append((stored[k], plan.listing.files[k], plan.listing.labels[k], results[k]))
  return kept, sizes, [(output_dir, name, by_shard[s]) for s, name in enumerate(names)]


def write_shard(job: tuple) -> dict[str, Any]:
  """Writes one shard (skipped when its final file exists); returns {"name", "num_frames",
  "written"}."""
  output_dir, name, items = job
  final = os.path.join(output_dir, name)
  frames = [res.get("num_frames") for _, _, _, res in items]
  if os.path.exists(final):
    return {"name": name, "num_frames": frames, "written": False}
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  # group_size:1 makes every record its own chunk: random access without reading neighbours,
  # which is what a shuffled loader does. Uncompressed: encoded video does not compress, and
  # decompressing it on every read only costs time (docs/data.md).
  tmp = f"{final}.tmp"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1,uncompressed")
  for path, rel, label, res in items:
    with open(path, "rb") as f:
      data = f.read()
    writer.write(records.encode_record(
        data, name=rel, label=label, num_frames=res.get("num_frames"), width=res.get("width"),
        height=res.get("height"), codec=res.get("codec"), index=res.get("index")))
  writer.close()
  os.replace(tmp, final)
  return {"name": name, "num_frames": frames, "written": True}


def finish(output_dir: str, meta: dict[str, Any]) -> None:
  """metadata.json (the conversion is complete), then the state and scratch folders go."""
  _atomic_json(os.path.join(output_dir, records.METADATA_FILE), meta)
  finish_without_records(output_dir)


def finish_without_records(output_dir: str) -> None:
  """The state and scratch folders go (a finished run, or one that found nothing to write)."""
  shutil.rmtree(state_dir(output_dir), ignore_errors=True)
  for f in os.listdir(output_dir):
    if f.startswith(".reencoded-"):
      shutil.rmtree(os.path.join(output_dir, f), ignore_errors=True)
