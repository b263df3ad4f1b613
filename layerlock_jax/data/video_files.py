"""Video files as a grain source: folders, splits, labels, and bad-input handling.

`VideoFolderSource` (data.source=video_folder) serves every video under a folder, in any container
and codec PyAV decodes (mp4, avi, webm, mkv, mov, ...), at any resolution and frame rate.
`ClipSource` is the shared base of this and of the ArrayRecord / TFDS sources in records.py.

Splits and labels
* With split sub-folders (train/; test/, val/ or validation/) split "train" reads train/ and "test"
  the first of the others; without them every split reads the whole folder (with a warning).
* Labels ("label", int32) come from data.labels_csv if set (rows `path,label`, optional header,
  paths relative to data.path or the split folder; class names sorted, or used as-is when all are
  integers; videos without a row are skipped and counted), else from the first-level sub-folder
  (sorted, the union over all splits so train and test agree). If not ALL videos lie in class
  sub-folders the source is unlabelled: items hold only "video".
* data.layout=kinetics|ssv2|ucf101|hmdb51 instead takes splits, labels and (Kinetics) time
  segments from the dataset's published annotation files (layouts.py); a video they list that is
  not on disk is skipped and counted like a broken file.

Bad input never crashes training and never becomes a black clip:
* At construction every file is probed once (open + stream info, no decoding): empty, unreadable
  (not media, or a cut-off container), no video stream (audio only) and, where the container states
  an exact frame count, too short, are skipped; counts by reason and the names are logged.
  data.probe_files=False skips probing (huge folders); failures then surface at decode time.
* A file whose stream ends before the frame count its container lists is "short", not broken:
  its clips come from the frames that are there; `bad_input_metrics()` counts such files
  ("data_short_files") and logs their names once.
* At decode time (grain reader threads / worker processes) a failing video - the stream raises,
  fewer frames than a clip - is replaced by the next record (wrapping around) that decodes, with
  the same random draws: the replacement is deterministic. A failure of the whole file (too
  short, unreadable) is remembered in that process; one that concerns only the frames a clip
  needed is not, so what other stream positions read never depends on which draws a process saw
  first.
* Every skip goes to a `BadInputLog`: one small JSON file per process in a directory shared with
  the grain workers, so skips inside workers reach the main process. `bad_input_metrics()` merges
  them into counts for the metrics and logs each newly seen bad file once.
* A folder with no usable video raises `NoUsableVideoError` saying why each file was rejected.

Opening, probing and decoding a video (PyAV) live in decode.py.
"""
from __future__ import annotations

import atexit
import collections
import csv
import glob
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from layerlock_jax.data import augment
from layerlock_jax.data import decode
from layerlock_jax.data import layouts

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv", ".mpg", ".mpeg", ".ts", ".m2ts", ".flv",
    ".wmv", ".ogv", ".3gp", ".vob"})
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val", "validation")}
_LOG_NAMES_SHOWN = 50  # names listed in one log message; the counts always cover everything


class NoUsableVideoError(ValueError):
  """A source in which not a single video survived probing."""


# ------------------------------------------------------------------------------------------------
# Bad-input bookkeeping shared across grain worker processes.

_LOGS: list["BadInputLog"] = []   # logs created in this process, read by bad_input_metrics()
_REPORTED: set[tuple[str, str]] = set()
_REPORT_LOCK = threading.Lock()


class BadInputLog:
  """Skipped inputs of one source: {name: (stage, reason)} plus a count of replaced records.

  Each process (the creator and every grain worker that unpickles a copy) writes its own JSON file
  into one directory; `summary()` merges them. Writes happen only when something goes wrong, so
  the cost is nil on clean data. The creating process deletes the directory at exit.
  """

  def __init__(self, source_name: str, directory: str | None = None):
    self.source_name = source_name
    self.directory = directory or tempfile.mkdtemp(prefix="layerlock_bad_input_")
    self._init_process_state()
    if directory is None:
      atexit.register(shutil.rmtree, self.directory, True)
    _LOGS.append(self)

  def _init_process_state(self):
    self._lock = threading.Lock()
    self._bad: dict[str, tuple[str, str]] = {}
    self._short: dict[str, list[int]] = {}
    self._replaced = 0
    self._file = os.path.join(self.directory, f"{os.getpid()}-{uuid.uuid4().hex}.json")

  def __getstate__(self):
    return {"source_name": self.source_name, "directory": self.directory}

  def __setstate__(self, state):
    # A copy in a worker process starts empty and writes its own file: nothing is double counted.
    self.__dict__.update(state)
    self._init_process_state()

  def record(self, name: str, stage: str, reason: str, flush: bool = True) -> bool:
    """Notes that `name` was skipped at `stage` ("scan" or "decode"); False if already known."""
    with self._lock:
      if name in self._bad:
        return False
      self._bad[name] = (stage, reason)
      if flush:
        self._flush()
    if stage == "decode":
      logging.warning("%s: skipping %s at decode time: %s", self.source_name, name, reason)
    return True

  def record_scan(self, skipped: Sequence[tuple[str, str]]):
    """Many construction-time skips at once (one file write)."""
    for name, reason in skipped:
      self.record(name, "scan", reason, flush=False)
    with self._lock:
      self._flush()

  def short(self, name: str, frames: int, listed: int) -> None:
    """Notes a file used with fewer frames than its container lists (not a skip)."""
    with self._lock:
      if name in self._short:
        return
      self._short[name] = [int(frames), int(listed)]
      self._flush()

  def replaced(self):
    """Counts one clip that came from another record because its own record failed."""
    with self._lock:
      self._replaced += 1
      self._flush()

  def _flush(self):
    try:
      with open(self._file + ".tmp", "w") as f:
        json.dump({"bad": self._bad, "short": self._short, "replaced": self._replaced}, f)
      os.replace(self._file + ".tmp", self._file)  # atomic: a reader never sees half a file
    except OSError as e:  # e.g. the main process already exited and removed the directory
      logging.warning("%s: could not record a skipped input: %s", self.source_name, e)

  def summary(self) -> dict[str, Any]:
    """{"bad": {name: (stage, reason)}, "short": {name: (frames, listed)}, "replaced": int}
    over all processes of this source."""
    bad, short, replaced = {}, {}, 0
    for path in glob.glob(os.path.join(self.directory, "*.json")):
      try:
        with open(path) as f:
          part = json.load(f)
      except (OSError, ValueError):
        continue  # a file being replaced right now; the next call reads it
      for name, (stage, reason) in part["bad"].items():
        bad.setdefault(name, (stage, reason))
      for name, (frames, listed) in part.get("short", {}).items():
        short.setdefault(name, (frames, listed))
      replaced += int(part["replaced"])
    return {"bad": bad, "short": short, "replaced": replaced}


def bad_input_metrics() -> dict[str, int]:
  """Counts over every file-backed source built in this process (and its grain workers).

  Returns {"data_skipped_files": distinct bad files/records, "data_short_files": files used with
  fewer frames than their container lists, "data_replaced_clips": records that were served by a
  neighbour because they failed to decode}; {} when no file source exists (the
  synthetic sources cannot fail). Each newly seen bad file is logged once at WARNING with its
  reason. Counts are per JAX process (each process scans and decodes its own share).
  """
  if not _LOGS:
    return {}
  bad, short, replaced, fresh, fresh_short = set(), set(), 0, [], []
  for log in list(_LOGS):
    summary = log.summary()
    replaced += summary["replaced"]
    with _REPORT_LOCK:
      for name, (frames, listed) in sorted(summary["short"].items()):
        key = (log.source_name, name)
        short.add(key)
        if ("short",) + key not in _REPORTED:
          _REPORTED.add(("short",) + key)
          fresh_short.append(f"{log.source_name}: {name}: {frames} of {listed} listed frames")
      for name, (stage, reason) in sorted(summary["bad"].items()):
        # Keyed by source name, not by log: the same folder opened twice counts its files once.
        key = (log.source_name, name)
        bad.add(key)
        if key not in _REPORTED:
          _REPORTED.add(key)
          if stage == "decode":  # scan-time skips were logged when the source was built
            fresh.append(f"{log.source_name}: {name}: {reason}")
  for line in fresh:
    logging.warning("skipped bad input (decode time): %s", line)
  if fresh_short:
    logging.warning("%d file(s) so far hold fewer frames than their container lists; clips use "
                    "the frames that are there (new: %s)", len(short),
                    "; ".join(fresh_short[:_LOG_NAMES_SHOWN]))
  return {"data_skipped_files": len(bad), "data_short_files": len(short),
          "data_replaced_clips": replaced}


# ------------------------------------------------------------------------------------------------
# The shared source base.


class Record(NamedTuple):
  src: Any                     # path, encoded bytes, or a uint8 frames array
  label: int | None
  name: str
  known_frames: int | None = None
  index: Any = None            # decode.VideoIndex stored with the record (converted shards)
  segment: tuple[float, float] | None = None  # seconds: clips come from [start, end) only


class _Labels:
  """`LABELS`: label name -> number of classes, as the synthetic sources publish it (a class
  attribute there). Read on an instance it is the source's own table; read on the class, where
  the count is not known before the files are listed, it is empty."""

  def __get__(self, source, owner=None) -> dict[str, int]:
    if source is None or source.num_classes is None:
      return {}
    return {"label": source.num_classes}


class ClipSource:
  """Random-access clip source over records that may turn out to be bad.

  Subclasses set `spec`, `max_decode_frames`, `_num_records`, `num_classes` (None: unlabelled),
  `bad_input` (a BadInputLog) and implement `_read(record) -> Record` (BadVideoError if unreadable).

  * `source[i]` is the evaluation clip of record i (centred window and crop): what
    pipeline.load_split_arrays and the probes read.
  * `training_item(position, record, seed)` is what the training pipeline reads: the spec's
    `clips_per_video` augmented clips, drawn from clip_rng(seed, position), stacked as
    {"video": (k, T, S, S, 3), "label": (k,)}.
  Both replace a bad record by the next good one (see the module docstring).
  """

  def __len__(self) -> int:
    return self._num_records

  LABELS = _Labels()  # pylint: disable=invalid-name

  @property
  def clips_per_video(self) -> int:
    return self.spec.clips_per_video

  def _read(self, record: int) -> Record:
    raise NotImplementedError

  def labels(self, index: int) -> dict[str, np.int32]:
    """The labels of record `index` without decoding its video ({} when unlabelled)."""
    if self.num_classes is None:
      return {}
    return {"label": np.int32(self._read(int(index)).label)}

  def _fallback_name(self, record: int) -> str:
    """How a record is named when even reading it failed."""
    return f"record {record}"

  def _load(self, record: int, spec: augment.ClipSpec, seed: int, position: int
            ) -> tuple[np.ndarray, int | None]:
    n = self._num_records
    if not 0 <= record < n:
      raise IndexError(f"record {record} out of range for {n} records")
    bad = self.__dict__.setdefault("_known_bad", set())  # per process, never pickled
    last_reason = ""
    for attempt in range(n):
      r = (record + attempt) % n
      if r in bad:
        continue
      name = self._fallback_name(r)
      try:
        item = self._read(r)
        name = item.name
        notes = {}
        clips = decode.load_clips(item.src, spec, augment.clip_rng(seed, position),
                                  max_frames=self.max_decode_frames, known_frames=item.known_frames,
                                  index=item.index, segment=item.segment, notes=notes)
        if "short" in notes:
          self.bad_input.short(name, *notes["short"])
      except decode.BadVideoError as e:
        if e.whole_file:
          # Only failures that do not depend on the draw mark the record bad in this process:
          # a failure within one clip's span must not change what OTHER positions read, or
          # the stream would depend on which process saw which draw first.
          bad.add(r)
        last_reason = e.reason
        self.bad_input.record(name, "decode", e.reason)
        continue
      if attempt:
        self.bad_input.replaced()
      return clips, item.label
    raise NoUsableVideoError(f"{self.bad_input.source_name}: none of the {n} records could be "
                             f"decoded (last error: {last_reason}); see the warnings above")

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    clips, label = self._load(index, self.spec.for_eval(), seed=0, position=index)
    item = {"video": clips[0]}
    if self.num_classes is not None:
      item["label"] = np.int32(label)
    return item

  def training_item(self, position: int, record: int, seed: int) -> dict[str, np.ndarray]:
    clips, label = self._load(int(record), self.spec, seed, int(position))
    item = {"video": clips}
    if self.num_classes is not None:
      item["label"] = np.full((len(clips),), label, np.int32)
    return item

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_known_bad"}


def log_scan_summary(source_name: str, usable: int, skipped: Sequence[tuple[str, str]],
                     extra: str = "") -> None:
  """One INFO line with the totals, then a WARNING listing the skipped names and reasons."""
  logging.info("%s: %d usable video(s)%s; %d skipped", source_name, usable, extra, len(skipped))
  if skipped:
    by_reason = collections.Counter(r.split(" (")[0].split(":")[0] for _, r in skipped)
    lines = [f"  {name}: {reason}" for name, reason in skipped[:_LOG_NAMES_SHOWN]]
    if len(skipped) > _LOG_NAMES_SHOWN:
      lines.append(f"  ... and {len(skipped) - _LOG_NAMES_SHOWN} more")
    logging.warning("%s: skipped %d input(s) (%s):\n%s", source_name, len(skipped),
                    ", ".join(f"{n} {r}" for r, n in by_reason.most_common()), "\n".join(lines))


# ------------------------------------------------------------------------------------------------
# Folders.


class Listing(NamedTuple):
  root: str                          # the split folder
  files: list[str]                   # video paths relative to root, sorted
  labels: list[int | None]           # per file; all None when unlabelled
  class_names: list[str] | None      # None: unlabelled
  missing_label: list[str]           # files a labels_csv does not name
  ignored: list[str]                 # files without a video extension


def split_root(path: str, split: str) -> str:
  present = [d for names in SPLIT_FOLDERS.values() for d in names
             if os.path.isdir(os.path.join(path, d))]
  if not present:
    if split != "train":
      logging.warning("%s has no split sub-folders: split %r reads the same videos as 'train'",
                      path, split)
    return path
  for name in SPLIT_FOLDERS.get(split, (split,)):
    if name in present:
      return os.path.join(path, name)
  raise ValueError(f"{path} has split folders {present} but none for split {split!r} "
                   f"(looked for {SPLIT_FOLDERS.get(split, (split,))})")


def _walk(root: str) -> tuple[list[str], list[str]]:
  videos, ignored = [], []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    for f in sorted(filenames):
      rel = os.path.relpath(os.path.join(dirpath, f), root)
      (videos if os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS else ignored).append(rel)
  return videos, ignored


def _read_labels_csv(csv_path: str) -> dict[str, str]:
  out = {}
  with open(csv_path, newline="") as f:
    for i, row in enumerate(csv.reader(f)):
      if not row or row[0].startswith("#"):
        continue
      if len(row) < 2:
        raise ValueError(f"{csv_path}:{i + 1}: expected 'path,label', got {row!r}")
      if i == 0 and row[1].strip().lower() in ("label", "class", "labels"):
        continue  # header
      out[os.path.normpath(row[0].strip())] = row[1].strip()
  if not out:
    raise ValueError(f"labels_csv {csv_path} has no rows")
  return out


def _class_index(names: Iterable[str]) -> tuple[list[str], dict[str, int]]:
  names = sorted(set(names))
  if all(n.isdigit() for n in names):  # integer labels are used as they are
    top = max(int(n) for n in names)
    return [str(i) for i in range(top + 1)], {n: int(n) for n in names}
  return names, {n: i for i, n in enumerate(names)}


def list_videos(path: str, split: str, labels_csv: str = "") -> Listing:
  """The video files of one split and their labels (see the module docstring for the rules)."""
  if not os.path.isdir(path):
    raise NotADirectoryError(f"data.path={path!r} is not a folder of videos")
  root = split_root(path, split)
  files, ignored = _walk(root)
  if labels_csv:
    table = _read_labels_csv(labels_csv)
    class_names, index = _class_index(table.values())
    labels, keep, missing = [], [], []
    for rel in files:
      key = next((k for k in (os.path.normpath(rel), os.path.relpath(os.path.join(root, rel), path))
                  if k in table), None)
      if key is None:
        missing.append(rel)
      else:
        keep.append(rel)
        labels.append(index[table[key]])
    return Listing(root, keep, labels, class_names, missing, ignored)
  if files and all(os.sep in rel for rel in files):
    # Class names from every split folder, so that train and test share one numbering.
    roots = {root} | {os.path.join(path, d) for d in sum(SPLIT_FOLDERS.values(), ())}
    class_names = sorted({rel.split(os.sep, 1)[0] for r in roots if os.path.isdir(r)
                          for rel in _walk(r)[0] if os.sep in rel})
    index = {n: i for i, n in enumerate(class_names)}
    return Listing(root, files, [index[rel.split(os.sep, 1)[0]] for rel in files], class_names,
                   [], ignored)
  if files and any(os.sep in rel for rel in files):
    logging.warning("%s: some videos lie directly in the folder and some in sub-folders: the "
                    "source is unlabelled (put every video in a class folder, or pass "
                    "data.labels_csv, to get labels)", root)
  return Listing(root, files, [None] * len(files), None, [], ignored)


class VideoFolderSource(ClipSource):
  """Every video under a folder (config.data.source=video_folder); see the module docstring."""

  def __init__(self, path: str, split: str, spec: augment.ClipSpec, *, labels_csv: str = "",
               probe: bool = True, max_decode_frames: int = decode.DEFAULT_MAX_DECODE_FRAMES,
               probe_threads: int = 8, layout: str = "folder", annotations: str = "",
               split_id: int = 1):
    self.spec, self.max_decode_frames = spec, int(max_decode_frames)
    if self.max_decode_frames < spec.num_frames:
      raise ValueError(f"max_decode_frames={max_decode_frames} < num_frames={spec.num_frames}")
    segments = None
    if layout != "folder":  # a benchmark's published annotation files (layouts.py)
      if not os.path.isdir(path):
        raise NotADirectoryError(f"data.path={path!r} is not a folder of videos")
      # Files the annotations do not name (other splits, annotation files) are not this split's.
      table = layouts.match(layouts.read(layout, annotations, split, split_id), _walk(path)[0])
      listing = Listing(path, table.files, table.labels, table.class_names, [], [])
      segments = table.segments
      missing = [(n, f"listed in {table.source} but no video file") for n in table.missing]
    else:
      listing = list_videos(path, split, labels_csv)
      missing = [(rel, "no label in labels_csv") for rel in listing.missing_label]
    self.root = listing.root
    name = f"video_folder {self.root}" + (f" ({layout} {split})" if layout != "folder" else "")
    self.bad_input = BadInputLog(name)
    skipped = missing
    files, labels = listing.files, listing.labels
    segments = segments or [None] * len(files)
    results = [decode.ProbeResult(None, None)] * len(files)
    if probe and files:  # threads: opening files on network storage is mostly waiting
      with ThreadPoolExecutor(max(1, probe_threads)) as pool:
        results = list(pool.map(
            lambda rel: decode.probe_file(os.path.join(self.root, rel), spec.num_frames), files))
    self._files, self._labels, self._segments = [], [], []
    for rel, label, segment, result in zip(files, labels, segments, results):
      if result.reason is None:
        self._files.append(rel)
        self._labels.append(label)
        self._segments.append(segment)
      else:
        skipped.append((rel, result.reason))
    self.bad_input.record_scan(skipped)
    self._num_records = len(self._files)
    self.num_classes = None if listing.class_names is None else len(listing.class_names)
    self.class_names = listing.class_names
    extra = f" in {self.num_classes} class(es)" if self.num_classes else " (unlabelled)"
    if listing.ignored:
      extra += (f"; ignored {len(listing.ignored)} file(s) without a video extension, e.g. "
                f"{listing.ignored[:3]}")
    if not self._files:
      details = "; ".join(f"{n}: {r}" for n, r in skipped[:20]) or (
          f"no file with a video extension ({', '.join(sorted(VIDEO_EXTENSIONS))})")
      raise NoUsableVideoError(f"{name}: no usable video ({len(skipped)} skipped, "
                               f"{len(listing.ignored)} ignored): {details}")
    log_scan_summary(name, self._num_records, skipped, extra)

  def _read(self, record: int) -> Record:
    rel = self._files[record]
    return Record(os.path.join(self.root, rel), self._labels[record], rel,
                  segment=self._segments[record])


def source_from_config(data_cfg, split: str, seed: int) -> VideoFolderSource:
  """config.data.source=video_folder (registered in synthetic.SOURCE_FACTORIES)."""
  del seed  # the files are the data; the seed only drives sampling, in the pipeline
  return VideoFolderSource(
      data_cfg.path, split, augment.spec_from_config(data_cfg),
      labels_csv=str(data_cfg.get("labels_csv", "") or ""),
      layout=str(data_cfg.get("layout", "folder")),
      annotations=str(data_cfg.get("annotations", "") or ""),
      split_id=int(data_cfg.get("split_id", 1)),
      probe=bool(data_cfg.get("probe_files", True)),
      max_decode_frames=int(data_cfg.get("max_decode_frames", decode.DEFAULT_MAX_DECODE_FRAMES)))
