"""Encoded clips in ArrayRecord shards, and TFDS datasets read without TensorFlow.

Shards (config.data.source=array_record) are written by `python -m layerlock_jax.data.convert`.
They hold the ORIGINAL encoded video bytes (no decoded frames: a 10 s clip stays ~1 MB instead of
~200 MB of RGB), so the loader decodes with PyAV exactly as for a folder, with the same sampling,
augmentation and bad-input handling (video_files.ClipSource).

Record layout (little endian), chosen to be readable from any language without a schema compiler:

    b"LLV1" | uint32 header length | header: UTF-8 JSON | encoded video bytes

The header holds {"name", "label" (int or null), "num_frames" (decoded and verified by the
converter, or null), "width", "height", "codec", "index"} where "index" (decode.VideoIndex in JSON:
frame timestamps, keyframe positions, size) lets the loader plan a clip and seek to the keyframe
before it without scanning the record's packets (absent in older shards: then it scans them). Next to the shards, metadata.json holds the class
names and, per shard, every record's frame count: a source skips too-short records up front
(counted and logged like a folder's) without reading them, and stops decoding at the last frame a
clip needs (about 40% less decoding for a 16-frame clip of a 64-frame video).

data.path for array_record: a shard folder (uses `<split>.array_record-*`; a folder without
split-named shards serves all its `*.array_record*` files to every split), a glob pattern (`{split}`
is replaced by the split name), or a single file.

TFDS (config.data.source=tfds): data.path is a dataset name ("name" or "name:1.0.0", found in
data.tfds_data_dir or TFDS's default directory) or a prepared dataset folder (the one holding
dataset_info.json). The dataset must have been prepared with file_format="array_record", which is
what `builder.as_data_source` reads without TensorFlow. The video feature (data.tfds_video_key,
default "video") is either encoded bytes, `tfds.features.Tensor(shape=(), dtype=np.object_)`, or
decoded frames `Tensor(shape=(None, H, W, 3), dtype=np.uint8)`; TFDS's `Video` feature needs
TensorFlow and is rejected with a clear error. A `ClassLabel` feature named data.tfds_label_key
(default "label") gives the labels.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import struct
from typing import Any, Sequence

import numpy as np

from layerlock_jax.data import augment
from layerlock_jax.data import decode
from layerlock_jax.data import video_files

MAGIC = b"LLV1"
METADATA_FILE = "metadata.json"
METADATA_FORMAT = "layerlock_video_shards/1"
_HEADER_LEN = struct.Struct("<I")


def encode_record(video: bytes, *, name: str, label: int | None, num_frames: int | None = None,
                  **extra: Any) -> bytes:
  """One shard record: the encoded video plus a JSON header (see the module docstring)."""
  header = json.dumps({"name": name, "label": label, "num_frames": num_frames, **extra},
                      sort_keys=True).encode("utf-8")
  return MAGIC + _HEADER_LEN.pack(len(header)) + header + bytes(video)


def decode_record(raw: bytes) -> tuple[dict[str, Any], bytes]:
  """(header, encoded video bytes); BadVideoError for anything that is not such a record."""
  raw = bytes(raw)
  if len(raw) < 8 or raw[:4] != MAGIC:
    raise decode.BadVideoError("not a layerlock video record (bad magic)")
  (size,) = _HEADER_LEN.unpack_from(raw, 4)
  if 8 + size > len(raw):
    raise decode.BadVideoError("corrupt record: header runs past the end")
  try:
    header = json.loads(raw[8:8 + size].decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    raise decode.BadVideoError(f"corrupt record header ({e})") from None
  return header, raw[8 + size:]


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}.array_record-{index:05d}-of-{count:05d}"


def _is_shard(path: str) -> bool:
  return ".array_record" in os.path.basename(path) and not path.endswith(".tmp")


def resolve_shards(path: str, split: str) -> list[str]:
  """The shard files of `split` named by data.path (rules in the module docstring)."""
  if os.path.isdir(path):
    everything = sorted(p for p in glob.glob(os.path.join(path, "*.array_record*")) if _is_shard(p))
    if not everything:
      raise FileNotFoundError(f"{path} holds no *.array_record* shard")
    names = video_files.SPLIT_FOLDERS.get(split, (split,))
    split_named = [p for p in everything if os.path.basename(p).split(".array_record")[0]
                   in sum(video_files.SPLIT_FOLDERS.values(), ())]
    for name in names:
      files = [p for p in everything if os.path.basename(p).startswith(name + ".array_record")]
      if files:
        return files
    if split_named:
      raise FileNotFoundError(f"{path} has split shards but none for split {split!r} "
                              f"(looked for {', '.join(n + '.array_record-*' for n in names)})")
    if split != "train":
      logging.warning("%s has no split-named shards: split %r reads the same records as "
                      "'train'", path, split)
    return everything
  pattern = path.replace("{split}", split)
  if any(ch in pattern for ch in "*?["):
    files = sorted(p for p in glob.glob(pattern) if not p.endswith(".tmp"))
    if not files:
      raise FileNotFoundError(f"data.path pattern {pattern!r} matches no file")
    return files
  if os.path.isfile(pattern):
    return [pattern]
  raise FileNotFoundError(f"data.path={path!r} is neither a shard folder, a pattern nor a file")


def read_metadata(shards: Sequence[str]) -> dict[str, Any] | None:
  """metadata.json next to the shards, if the converter wrote one there."""
  meta_path = os.path.join(os.path.dirname(os.path.abspath(shards[0])), METADATA_FILE)
  if not os.path.exists(meta_path):
    return None
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get("format") != METADATA_FORMAT:
    logging.warning("%s has format %r, expected %r: ignored", meta_path, meta.get("format"),
                    METADATA_FORMAT)
    return None
  return meta


class ArrayRecordSource(video_files.ClipSource):
  """Encoded clips in ArrayRecord shards (config.data.source=array_record)."""

  def __init__(self, path: str, split: str, spec: augment.ClipSpec, *,
               max_decode_frames: int = decode.DEFAULT_MAX_DECODE_FRAMES):
    self.spec, self.max_decode_frames = spec, int(max_decode_frames)
    self.shards = resolve_shards(path, split)
    name = f"array_record {path} (split {split})"
    self.bad_input = video_files.BadInputLog(name)
    # grain's source opens files lazily per process and pickles to a list of paths: cheap to ship
    # to worker processes. Imported here because grain imports JAX (~1.5 s), which the converter
    # CLI does not need.
    import grain  # pylint: disable=g-import-not-at-top
    self.raw_records = grain.sources.ArrayRecordDataSource(self.shards)
    total = len(self.raw_records)
    if total == 0:
      raise video_files.NoUsableVideoError(f"{name}: the shards hold no record")
    try:
      first, _ = decode_record(self.raw_records[0])
    except decode.BadVideoError as e:
      raise ValueError(f"{self.shards[0]}: {e.reason}. These shards were not written by "
                       "`python -m layerlock_jax.data.convert`; for a TFDS dataset use "
                       "--config.data.source=tfds") from None
    meta = read_metadata(self.shards)
    frames = self._frame_counts(meta, total)
    skipped = []
    keep = np.ones(total, bool)
    if frames is not None:
      short = np.flatnonzero(frames < spec.num_frames)
      keep[short] = False
      for i in short:
        skipped.append((self._record_name(int(i)),
                        f"too short: {int(frames[i])} frame(s) < {spec.num_frames} per clip"))
    self.bad_input.record_scan(skipped)
    self._records = np.flatnonzero(keep).astype(np.int64)
    self._num_records = len(self._records)
    self._frames = frames
    classes = (meta or {}).get("class_names")
    if classes is not None:
      self.class_names, self.num_classes = list(classes), len(classes)
    elif first.get("label") is not None:
      # No metadata: labels are present but their count is unknown; the largest label of the
      # first record is no bound, so probes that need a class count will say so.
      self.class_names, self.num_classes = None, None
      logging.warning("%s: no %s next to the shards; labels are not served", name,
                      METADATA_FILE)
    else:
      self.class_names, self.num_classes = None, None
    if self._num_records == 0:
      raise video_files.NoUsableVideoError(
          f"{name}: no usable record ({len(skipped)} skipped): "
          + "; ".join(f"{n}: {r}" for n, r in skipped[:20]))
    video_files.log_scan_summary(name, self._num_records, skipped,
                                 f" in {len(self.shards)} shard(s)")

  def _frame_counts(self, meta: dict[str, Any] | None, total: int) -> np.ndarray | None:
    """Per-record verified frame counts in ArrayRecordDataSource order, when metadata has them."""
    if meta is None:
      return None
    per_shard = meta.get("shards", {})
    counts = []
    for shard in self.shards:
      entry = per_shard.get(os.path.basename(shard))
      if entry is None or entry.get("num_frames") is None:
        return None
      counts.extend(entry["num_frames"])
    if len(counts) != total:
      logging.warning("metadata frame counts (%d) disagree with the shards (%d records): ignored",
                      len(counts), total)
      return None
    return np.asarray([-1 if c is None else c for c in counts], np.int64)

  def _record_name(self, underlying: int) -> str:
    return f"record {underlying}"

  def _fallback_name(self, record: int) -> str:
    return self._record_name(int(self._records[record]))

  def read_record(self, record: int) -> video_files.Record:
    underlying = int(self._records[record])
    header, video = decode_record(self.raw_records[underlying])
    name = f"{header.get('name', '?')} ({self._record_name(underlying)})"
    label = header.get("label") if self.num_classes is not None else None
    if self.num_classes is not None and label is None:
      raise decode.BadVideoError("record has no label but the shards are labelled")
    known = header.get("num_frames")
    index = header.get("index")
    try:
      index = decode.VideoIndex.from_json(index) if index else None
    except (KeyError, TypeError, ValueError) as e:
      raise decode.BadVideoError(f"corrupt record index ({type(e).__name__}: {e})") from None
    return video_files.Record(video, label, name, int(known) if known else None, index)


# ------------------------------------------------------------------------------------------------
# TFDS, through the TF-free data_source path.


def _tfds_split(builder, split: str) -> str:
  available = list(builder.info.splits.keys())
  for candidate in video_files.SPLIT_FOLDERS.get(split, (split,)):
    if candidate in available:
      return candidate
  if split in available or "[" in split:
    return split
  raise ValueError(f"TFDS dataset {builder.info.full_name} has splits {available}, none for "
                   f"{split!r}")


class TfdsSource(video_files.ClipSource):
  """A TFDS dataset prepared as array_record, read with `as_data_source` (no TensorFlow)."""

  def __init__(self, name_or_dir: str, split: str, spec: augment.ClipSpec, *,
               data_dir: str | None = None, video_key: str = "video", label_key: str = "label",
               max_decode_frames: int = decode.DEFAULT_MAX_DECODE_FRAMES):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
    self.spec, self.max_decode_frames = spec, int(max_decode_frames)
    if os.path.isdir(name_or_dir) and os.path.exists(
        os.path.join(name_or_dir, "dataset_info.json")):
      builder = tfds.builder_from_directory(name_or_dir)
    else:
      builder = tfds.builder(name_or_dir, data_dir=data_dir or None)
    tf_split = _tfds_split(builder, split)
    features = builder.info.features
    if video_key not in features:
      raise ValueError(f"TFDS dataset {builder.info.full_name} has no feature {video_key!r} "
                       f"(features: {list(features.keys())}); set data.tfds_video_key")
    kind = type(features[video_key]).__name__
    if kind not in ("Tensor",):
      raise ValueError(f"TFDS feature {video_key!r} is a {kind}, which needs TensorFlow to decode; "
                       "store encoded bytes (Tensor(shape=(), dtype=np.object_)) or uint8 frames "
                       "(Tensor(shape=(None, H, W, 3), dtype=np.uint8)) instead")
    self.num_classes, self.class_names = None, None
    if label_key and label_key in features:
      if hasattr(features[label_key], "num_classes"):
        self.num_classes = int(features[label_key].num_classes)
        self.class_names = list(features[label_key].names)
      else:
        logging.warning("TFDS feature %r is not a ClassLabel: labels are not served", label_key)
    self.video_key, self.label_key = video_key, label_key
    self.bad_input = video_files.BadInputLog(f"tfds {builder.info.full_name} [{tf_split}]")
    self._data = builder.as_data_source(split=tf_split)
    self._num_records = len(self._data)
    if self._num_records == 0:
      raise video_files.NoUsableVideoError(f"TFDS {builder.info.full_name} [{tf_split}] is empty")
    self._split = tf_split
    logging.info("tfds %s [%s]: %d record(s)%s", builder.info.full_name, tf_split,
                 self._num_records,
                 f" in {self.num_classes} class(es)" if self.num_classes else " (unlabelled)")

  def read_record(self, record: int) -> video_files.Record:
    example = self._data[record]
    name = f"{self._split}#{record}"
    label = int(example[self.label_key]) if self.num_classes is not None else None
    value = example[self.video_key]
    if not isinstance(value, np.ndarray):
      value = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else \
          np.asarray(value)
    return video_files.Record(value, label, name)


# ------------------------------------------------------------------------------------------------
# Factories registered in synthetic.SOURCE_FACTORIES.


def array_record_from_config(data_cfg, split: str, seed: int) -> ArrayRecordSource:
  del seed  # the seed only drives sampling, in the pipeline
  return ArrayRecordSource(
      data_cfg.path, split, augment.spec_from_config(data_cfg),
      max_decode_frames=int(data_cfg.get("max_decode_frames",
                                         decode.DEFAULT_MAX_DECODE_FRAMES)))


def tfds_from_config(data_cfg, split: str, seed: int) -> TfdsSource:
  del seed
  return TfdsSource(
      data_cfg.path, split, augment.spec_from_config(data_cfg),
      data_dir=str(data_cfg.get("tfds_data_dir", "") or "") or None,
      video_key=str(data_cfg.get("tfds_video_key", "video")),
      label_key=str(data_cfg.get("tfds_label_key", "label")),
      max_decode_frames=int(data_cfg.get("max_decode_frames",
                                         decode.DEFAULT_MAX_DECODE_FRAMES)))
