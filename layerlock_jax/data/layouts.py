"""The published layouts of the standard video benchmarks (config.data.layout).

`data.source=video_folder` with `data.layout` other than "folder" takes its videos, splits and
labels from the dataset's own annotation files, read as they are published (`data.annotations`),
instead of from class sub-folders:

* kinetics: the CSV files (`label,youtube_id,time_start,time_end,split`, one header row; extra
  columns such as `is_cc` are ignored) or JSON files (`{youtube_id: {"annotations": {"label",
  "segment": [start, end]}, "subset": ...}}`) of Kinetics-400/600/700. `data.annotations` is the
  folder holding `train.csv` and `val.csv` / `validate.csv` (or .json), or one file whose `split`
  column / `subset` field selects the rows. Class numbers are the sorted label names of the train
  annotations. A row's video is `<youtube_id>_<start:06d>_<end:06d>.<ext>` (a pre-trimmed clip, as
  the downloaders write them, in class folders or not) or else `<youtube_id>.<ext>` (the full video:
  clips are then drawn from the [time_start, time_end) segment only).
* ssv2: Something-Something-v2's `something-something-v2-{train,validation,labels}.json` (or the
  short names `train.json`, `validation.json`, `labels.json`): entries `{"id", "template", "label",
  "placeholders"}`; the class is the template without its brackets, numbered by labels.json.
  Videos are `<id>.webm` (any extension).
* ucf101: `classInd.txt` (`<1-based index> <class>`), `trainlist0N.txt` (`<class>/<file> <index>`)
  and `testlist0N.txt` (`<class>/<file>`), N = data.split_id. Class names are matched without
  regard to case (the published lists spell one class two ways).
* hmdb51: `<class>_test_splitN.txt` per class, lines `<file> <mark>`: 1 = train, 2 = test,
  0 = in neither. Classes are the sorted class names of those files.

Split "train" reads the training list, "test" the validation / test list. Videos are found by
file name anywhere under data.path (so class folders, flat folders and split folders all work);
a listed video with no file is skipped, counted and listed like a broken file.

Problems with the annotations themselves are `AnnotationError`s with one line that names the file
(and line): a missing annotation file, a row that cannot be parsed, a class name the class list
does not know. `check()` raises them from config validation, before any video is opened.
"""
from __future__ import annotations

import csv
import functools
import glob
import json
import math
import os
import re
from typing import NamedTuple, Sequence

from layerlock_jax.plan import options

_KINETICS_SPLITS = {"train": ("train",), "test": ("val", "validate", "validation")}
_SSV2_NAMES = {"train": ("something-something-v2-train.json", "train.json"),
               "test": ("something-something-v2-validation.json", "validation.json"),
               "labels": ("something-something-v2-labels.json", "labels.json")}


class AnnotationError(ValueError):
  """A problem with a dataset's annotation files; the message is one line."""


class Entry(NamedTuple):
  """One annotated video of a split."""
  names: tuple[str, ...]                   # file names without extension to look for, in order
  label: int
  segment: tuple[float, float] | None      # seconds: draw clips only from [start, end)
  trimmed: str | None = None               # a name in `names` that is already the segment


class Annotations(NamedTuple):
  class_names: list[str]
  entries: list[Entry]
  source: str                              # the annotation file(s) read, for messages


def _need_file(folder: str, names: Sequence[str], what: str) -> str:
  for name in names:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  raise AnnotationError(f"data.annotations={folder!r} has no {' or '.join(names)} ({what})")


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path.strip()))[0]


# ------------------------------------------------------------------------------------------------
# Kinetics


def _number(text, path: str, where: str, field: str) -> float:
  try:
    value = float(text)
  except (TypeError, ValueError):
    raise AnnotationError(f"{path}:{where}: {field} {text!r} is not a number") from None
  if not math.isfinite(value) or value < 0:
    raise AnnotationError(f"{path}:{where}: {field} {text!r} is not a time >= 0")
  return value


class _KineticsRow(NamedTuple):
  label: str | None
  youtube_id: str
  start: float
  end: float
  split: str
  where: str


def _kinetics_rows(path: str) -> tuple[_KineticsRow, ...]:
  """The rows of one Kinetics annotation file, parsed once per version of the file (a
  Kinetics-700 train.csv is read by validation, then by both splits' sources)."""
  stat = os.stat(path)
  return _parse_kinetics(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parse_kinetics(path: str, mtime_ns: int, size: int) -> tuple[_KineticsRow, ...]:
  del mtime_ns, size  # the cache key: a changed file is parsed again
  return tuple(_read_kinetics_rows(path))


def _read_kinetics_rows(path: str) -> list[_KineticsRow]:
  rows = []
  if path.endswith(".json"):
    try:
      with open(path, encoding="utf-8-sig") as f:
        table = json.load(f)
    except ValueError as e:
      raise AnnotationError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(table, dict):
      raise AnnotationError(f"{path}: expected an object of youtube_id -> annotation")
    for yid, item in table.items():
      ann = item.get("annotations", {}) if isinstance(item, dict) else None
      segment = ann.get("segment") if isinstance(ann, dict) else None
      if not isinstance(segment, (list, tuple)) or len(segment) != 2:
        raise AnnotationError(f"{path}:{yid}: expected \"annotations\": {{\"label\", "
                              f"\"segment\": [start, end]}}, got {item!r}")
      start = _number(segment[0], path, yid, "segment start")
      end = _number(segment[1], path, yid, "segment end")
      rows.append(_KineticsRow(ann.get("label"), yid, start, end, str(item.get("subset", "")),
                               yid))
    return rows
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.reader(f)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in ("youtube_id", "time_start", "time_end") if c not in header]
    if missing:
      raise AnnotationError(f"{path}:1: header {','.join(header)!r} lacks {missing} (expected "
                            "label,youtube_id,time_start,time_end,split)")
    col = {name: i for i, name in enumerate(header)}
    for line, row in enumerate(reader, start=2):
      if not row:
        continue
      if len(row) != len(header):
        raise AnnotationError(f"{path}:{line}: {len(row)} field(s) where the header has "
                              f"{len(header)}: {','.join(row)!r}")
      where = str(line)
      label = row[col["label"]].strip() if "label" in col else None
      yid = row[col["youtube_id"]].strip()
      if not yid:
        raise AnnotationError(f"{path}:{line}: empty youtube_id: {','.join(row)!r}")
      start = _number(row[col["time_start"]], path, where, "time_start")
      end = _number(row[col["time_end"]], path, where, "time_end")
      split = row[col["split"]].strip() if "split" in col else ""
      rows.append(_KineticsRow(label, yid, start, end, split, where))
  return rows


def _kinetics_file(annotations: str, split: str) -> tuple[str, bool]:
  """(file, filter rows by their split field)."""
  if os.path.isfile(annotations):
    return annotations, True
  if not os.path.isdir(annotations):
    raise AnnotationError(f"data.annotations={annotations!r} does not exist (kinetics needs the "
                          "folder of train.csv / val.csv, or one annotation file)")
  names = [n + ext for n in _KINETICS_SPLITS[split] for ext in (".csv", ".json")]
  return _need_file(annotations, names, f"kinetics split {split!r}"), False


def _read_kinetics(annotations: str, split: str) -> Annotations:
  def rows_of(s):
    path, by_field = _kinetics_file(annotations, s)
    rows = _kinetics_rows(path)
    if by_field:
      rows = [r for r in rows if r.split in _KINETICS_SPLITS[s]]
      if not rows:
        raise AnnotationError(f"{path}: no row whose split is one of {_KINETICS_SPLITS[s]}")
    return path, rows

  train_path, train_rows = rows_of("train")
  path, rows = (train_path, train_rows) if split == "train" else rows_of(split)
  for r in train_rows:
    if not r.label:
      raise AnnotationError(f"{train_path}:{r.where}: no label (training annotations need one)")
  class_names = sorted({r.label for r in train_rows})
  index = {n: i for i, n in enumerate(class_names)}
  entries = []
  for r in rows:
    if r.label not in index:
      raise AnnotationError(f"{path}:{r.where}: unknown class name {r.label!r} (not among the "
                            f"{len(class_names)} classes of {train_path})")
    if r.end <= r.start:
      raise AnnotationError(f"{path}:{r.where}: time_end {r.end:g} is not after time_start "
                            f"{r.start:g}")
    trimmed = f"{r.youtube_id}_{int(r.start):06d}_{int(r.end):06d}"
    entries.append(Entry((trimmed, r.youtube_id), index[r.label], (r.start, r.end), trimmed))
  return Annotations(class_names, entries, path)


# ------------------------------------------------------------------------------------------------
# Something-Something-v2


def _load_json(path: str):
  try:
    with open(path, encoding="utf-8-sig") as f:
      return json.load(f)
  except ValueError as e:
    raise AnnotationError(f"{path}: not valid JSON ({e})") from None


def _read_ssv2(annotations: str, split: str) -> Annotations:
  if not os.path.isdir(annotations):
    raise AnnotationError(f"data.annotations={annotations!r} is not a folder (ssv2 needs the "
                          "folder of something-something-v2-{train,validation,labels}.json)")
  labels_path = _need_file(annotations, _SSV2_NAMES["labels"], "the class list")
  labels = _load_json(labels_path)
  if not isinstance(labels, dict):
    raise AnnotationError(f"{labels_path}: expected an object of template -> class number")
  number = {}
  for template, value in labels.items():
    try:
      number[template] = int(value)
    except (TypeError, ValueError):
      raise AnnotationError(f"{labels_path}: class {template!r} has number {value!r}, not an "
                            "integer") from None
  if sorted(number.values()) != list(range(len(number))):
    raise AnnotationError(f"{labels_path}: class numbers are not 0..{len(number) - 1}")
  class_names = sorted(number, key=number.get)
  path = _need_file(annotations, _SSV2_NAMES[split], f"ssv2 split {split!r}")
  items = _load_json(path)
  if not isinstance(items, list):
    raise AnnotationError(f"{path}: expected a list of {{\"id\", \"template\", ...}} entries")
  entries = []
  for i, item in enumerate(items):
    if not isinstance(item, dict) or not str(item.get("id", "")).strip() or not isinstance(
        item.get("template"), str):
      raise AnnotationError(f"{path}: entry {i} has no \"id\" and \"template\": {item!r}")
    name = item["template"].replace("[", "").replace("]", "")
    if name not in number:
      raise AnnotationError(f"{path}: entry {i} (id {item['id']}): unknown class name {name!r} "
                            f"(not in {labels_path})")
    entries.append(Entry((str(item["id"]).strip(),), number[name], None))
  return Annotations(class_names, entries, path)


# ------------------------------------------------------------------------------------------------
# UCF101 and HMDB51


def _lines(path: str) -> list[tuple[int, str]]:
  with open(path, encoding="utf-8-sig") as f:
    return [(i, line.strip()) for i, line in enumerate(f, start=1) if line.strip()]


def _read_ucf101(annotations: str, split: str, split_id: int) -> Annotations:
  if not os.path.isdir(annotations):
    raise AnnotationError(f"data.annotations={annotations!r} is not a folder (ucf101 needs the "
                          "ucfTrainTestlist folder: classInd.txt, trainlist0N.txt, testlist0N.txt)")
  class_path = _need_file(annotations, ("classInd.txt",), "the class list")
  class_names = []
  for line, text in _lines(class_path):
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(class_names) + 1:
      raise AnnotationError(f"{class_path}:{line}: expected '{len(class_names) + 1} <class>', "
                            f"got {text!r}")
    class_names.append(parts[1])
  by_name = {n.lower(): i for i, n in enumerate(class_names)}
  name = f"{'train' if split == 'train' else 'test'}list{split_id:02d}.txt"
  path = _need_file(annotations, (name,), f"ucf101 split {split_id}")
  entries = []
  for line, text in _lines(path):
    parts = text.split()
    if len(parts) not in (1, 2) or "/" not in parts[0]:
      raise AnnotationError(f"{path}:{line}: expected '<class>/<file> [<index>]', got {text!r}")
    folder = parts[0].split("/")[0]
    if folder.lower() not in by_name:
      raise AnnotationError(f"{path}:{line}: unknown class name {folder!r} (not in {class_path})")
    label = by_name[folder.lower()]
    if len(parts) == 2:
      if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(class_names):
        raise AnnotationError(f"{path}:{line}: class index {parts[1]!r} is not in 1.."
                              f"{len(class_names)}")
      if int(parts[1]) - 1 != label:
        raise AnnotationError(f"{path}:{line}: class index {parts[1]} is "
                              f"{class_names[int(parts[1]) - 1]!r} but the path's class is "
                              f"{folder!r}")
    entries.append(Entry((_stem(parts[0]),), label, None))
  return Annotations(class_names, entries, path)


_HMDB_FILE = re.compile(r"^(.+)_test_split([0-9])\.txt$")


def _read_hmdb51(annotations: str, split: str, split_id: int) -> Annotations:
  if not os.path.isdir(annotations):
    raise AnnotationError(f"data.annotations={annotations!r} is not a folder (hmdb51 needs the "
                          "folder of <class>_test_splitN.txt files)")
  files = {}
  for path in glob.glob(os.path.join(annotations, "*_test_split*.txt")):
    m = _HMDB_FILE.match(os.path.basename(path))
    if m:
      files.setdefault(m.group(1), {})[int(m.group(2))] = path
  if not files:
    raise AnnotationError(f"data.annotations={annotations!r} has no <class>_test_split"
                          f"{split_id}.txt file")
  class_names = sorted(files)
  lacking = [c for c in class_names if split_id not in files[c]]
  if lacking:
    raise AnnotationError(f"data.annotations={annotations!r} has no {lacking[0]}_test_split"
                          f"{split_id}.txt ({len(lacking)} class(es) lack split {split_id})")
  want = "1" if split == "train" else "2"
  entries, first = [], None
  for label, name in enumerate(class_names):
    path = files[name][split_id]
    first = first or path
    for line, text in _lines(path):
      parts = text.split()
      if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
        raise AnnotationError(f"{path}:{line}: expected '<file> <0|1|2>', got {text!r}")
      if parts[1] == want:
        entries.append(Entry((_stem(parts[0]),), label, None))
  return Annotations(class_names, entries,
                     os.path.join(annotations, f"*_test_split{split_id}.txt"))


# ------------------------------------------------------------------------------------------------
# Entry points


def read(layout: str, annotations: str, split: str, split_id: int = 1) -> Annotations:
  """The class list and the entries of `split` ("train" or "test"); AnnotationError if bad."""
  if layout not in options.DATA_LAYOUTS or layout == "folder":
    raise ValueError(f"layout={layout!r}: use one of {options.DATA_LAYOUTS[1:]}")
  if split not in ("train", "test"):
    raise ValueError(f"split={split!r}: the benchmark layouts have 'train' and 'test'")
  if not annotations:
    raise AnnotationError(f"data.layout={layout} needs data.annotations (the dataset's "
                          "annotation folder or file)")
  if not os.path.exists(annotations):
    raise AnnotationError(f"data.annotations={annotations!r} does not exist")
  try:
    if layout == "kinetics":
      return _read_kinetics(annotations, split)
    if layout == "ssv2":
      return _read_ssv2(annotations, split)
    if layout == "ucf101":
      return _read_ucf101(annotations, split, split_id)
    return _read_hmdb51(annotations, split, split_id)
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise AnnotationError(f"data.annotations={annotations!r}: cannot read ({e})") from None


def check(data_cfg) -> None:
  """Reads the annotations of both splits (no video is opened); AnnotationError if bad."""
  layout = str(data_cfg.get("layout", "folder"))
  if layout == "folder":
    return
  for split in ("train", "test"):
    read(layout, str(data_cfg.get("annotations", "")), split, int(data_cfg.get("split_id", 1)))


class Matched(NamedTuple):
  files: list[str]                             # relative to the video folder
  labels: list[int]
  segments: list[tuple[float, float] | None]   # None: use the whole file
  class_names: list[str]
  missing: list[str]                           # listed names without a video file
  source: str


def index_videos(files: Sequence[str]) -> dict[str, str]:
  """File name without extension -> relative path (the first in sorted order)."""
  out: dict[str, str] = {}
  for rel in sorted(files):
    out.setdefault(_stem(rel), rel)
  return out


def match(annotations: Annotations, files: Sequence[str]) -> Matched:
  """The annotated videos of a split that exist among `files` (paths under the video folder)."""
  by_name = index_videos(files)
  out = Matched([], [], [], annotations.class_names, [], annotations.source)
  for entry in annotations.entries:
    found = next((n for n in entry.names if n in by_name), None)
    if found is None:
      out.missing.append(entry.names[0])
      continue
    out.files.append(by_name[found])
    out.labels.append(entry.label)
    out.segments.append(None if found == entry.trimmed else entry.segment)
  return out


def main(argv: Sequence[str] | None = None) -> int:
  """python -m layerlock_jax.data.layouts --layout=L --path=VIDEOS --annotations=A [--split_id=N]

  Reads the annotations of both splits and finds their videos (no video is opened): one line per
  split with the listed, found and missing counts, or one error line and exit status 2.
  """
  import argparse  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m layerlock_jax.data.layouts",
                                   description=main.__doc__.split("\n\n")[1])
  parser.add_argument("--layout", required=True, choices=options.DATA_LAYOUTS[1:])
  parser.add_argument("--path", required=True, help="the folder of videos (data.path)")
  parser.add_argument("--annotations", required=True, help="data.annotations")
  parser.add_argument("--split_id", type=int, default=1, help="ucf101 / hmdb51: 1, 2 or 3")
  args = parser.parse_args(argv)
  if not os.path.isdir(args.path):
    print(f"error: --path={args.path} is not a folder of videos", file=sys.stderr)
    return 2
  from layerlock_jax.data import video_files  # pylint: disable=g-import-not-at-top
  files = [os.path.relpath(os.path.join(d, f), args.path)
           for d, _, names in os.walk(args.path, followlinks=True) for f in names
           if os.path.splitext(f)[1].lower() in video_files.VIDEO_EXTENSIONS]
  for split in ("train", "test"):
    try:
      table = match(read(args.layout, args.annotations, split, args.split_id), files)
    except AnnotationError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    segments = sum(s is not None for s in table.segments)
    missing = f" (e.g. {', '.join(table.missing[:3])})" if table.missing else ""
    print(f"{split}: {len(table.files) + len(table.missing)} listed in {table.source}, "
          f"{len(table.files)} found ({segments} as segments of full videos), "
          f"{len(table.missing)} missing{missing}; {len(table.class_names)} classes")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
