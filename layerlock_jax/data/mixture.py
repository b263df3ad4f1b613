"""Data mixtures: several weighted sources as one deterministic record stream (config.data.sources).

Each entry of `data.sources` is a dict of data-field overrides plus a "weight" (and an optional
"name"), e.g. an embedded set, a video folder and ArrayRecord shards:

  data.sources = ({"source": "moving_mnist", "weight": 0.5},
                  {"source": "video_folder", "path": "/data/videos", "weight": 0.3},
                  {"source": "array_record", "path": "/data/shards-*", "weight": 0.2})

Every source becomes its own shuffled, endlessly repeated grain MapDataset (as in the one-source
pipeline, with its own seed), and `grain.MapDataset.select_from_datasets` interleaves them with
`WeightedSelection`: a fixed pattern that repeats every P stream positions and gives source i
exactly w_i of each P (integer weights proportional to the given ones, to 0.1%), spread evenly
(smooth weighted round robin), so every batch holds close to the weighted share of every source.

The pattern depends on the stream position only, so:
* the mixture is the same on any process count (the process split comes after it) and resumes
  exactly from the iterator position the checkpoint already holds;
* the clips read per source are a closed-form function of the clips consumed (`clip_counts`), which
  the train loop logs as `clips_seen_<name>` without reading or counting anything per step.

Elements of a mixture are {"video": ..., "source": int32 source index}: labels differ between
sources (and training uses none), so they are dropped.
"""
from __future__ import annotations

import math
import sys
from typing import Callable

import grain
import numpy as np

from layerlock_jax.data import synthetic
from layerlock_jax import plan

_FILE_SOURCES = plan.options.FILE_SOURCES + ("tfds",)  # sources that decode files
_RESOLUTION = 1000  # weights are rounded to multiples of 1/_RESOLUTION of the total


class WeightedSelection(grain.transforms.DatasetSelectionMap):
  """Stream position -> (source, position in that source), periodic with period P = sum(w)."""

  def __init__(self, weights):
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 1 or not len(weights) or not np.all(weights > 0):
      raise ValueError(f"mixture weights must be positive, got {weights.tolist()}")
    ints = np.maximum(1, np.round(weights / weights.sum() * _RESOLUTION)).astype(np.int64)
    self.weights = ints // math.gcd(*ints.tolist())
    self.period = int(self.weights.sum())
    # Smooth weighted round robin over one period: each position goes to the source furthest
    # behind its share; after P positions every source had exactly w_i.
    credit, order = np.zeros(len(ints), np.int64), []
    for _ in range(self.period):
      credit += self.weights
      pick = int(np.argmax(credit))
      credit[pick] -= self.period
      order.append(pick)
    self.order = np.asarray(order, np.int64)
    onehot = np.eye(len(ints), dtype=np.int64)[self.order]
    self.prefix = np.concatenate([np.zeros((1, len(ints)), np.int64), np.cumsum(onehot, 0)])

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, index: int) -> tuple[int, int]:
    cycles, rest = divmod(int(index), self.period)
    source = int(self.order[rest])
    return source, cycles * int(self.weights[source]) + int(self.prefix[rest, source])

  def counts(self, n: int) -> np.ndarray:
    """Records of each source among stream positions [0, n)."""
    cycles, rest = divmod(int(n), self.period)
    return cycles * self.weights + self.prefix[rest]


class _Tag:
  """A record as stacked clips (k, T, H, W, 3), each tagged with its source; labels dropped. A
  class rather than a closure so that grain can pickle it into worker processes."""

  def __init__(self, index: int):
    self.index = index

  def __call__(self, element):
    video = element["video"]
    video = video if video.ndim == 5 else video[None]  # embedded sources yield single clips
    return {"video": video, "source": np.full(video.shape[:1], self.index, np.int32)}


def source_configs(data_cfg) -> list:
  """The data config of each source: config.data with the entry's fields (not weight/name)."""
  out = []
  for entry in data_cfg.sources:
    cfg = data_cfg.copy_and_resolve_references()
    cfg.unlock()
    cfg.sources = ()
    for key, value in entry.items():
      if key not in ("weight", "name"):
        cfg[key] = value
    out.append(cfg)
  return out


def source_seed(seed: int, index: int) -> int:
  """Each source's own shuffle / augmentation seed, derived from the run's seed."""
  return int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])


def mixed_stream(data_cfg, seed: int,
                 stream_of: Callable[[object, int], grain.MapDataset]) -> tuple[grain.MapDataset,
                                                                                int]:
  """(the mixed record stream, clips per record). `stream_of(source, seed)` is the one-source
  pipeline's shuffled, repeated record stream of a source."""
  streams, per_record = [], set()
  for i, cfg in enumerate(source_configs(data_cfg)):
    source = synthetic.make_source(cfg, "train", source_seed(seed, i))
    per_record.add(int(getattr(source, "clips_per_video", 1)))
    streams.append(stream_of(source, source_seed(seed, i)).map(_Tag(i)))
  if len(per_record) != 1:
    raise ValueError(f"data.sources give {sorted(per_record)} clips per record; they must agree")
  selection = WeightedSelection([e["weight"] for e in data_cfg.sources])
  return grain.MapDataset.select_from_datasets(streams, selection), per_record.pop()


def has_file_source(data_cfg) -> bool:
  """Whether any source of the mixture decodes files (and so wants worker processes)."""
  return any(e.get("source", data_cfg.source) in _FILE_SOURCES for e in data_cfg.sources)


def clip_counts(data_cfg, clips_seen: int) -> dict[str, int]:
  """{"clips_seen_<name>": clips of that source among the first `clips_seen` global clips}; {}
  without a mixture. Exact, because the mixture pattern depends on the stream position only."""
  sources = data_cfg.get("sources") or ()
  if not sources:
    return {}
  # File-backed sources yield clips_per_video clips per record, embedded ones one (mixed_stream
  # refuses a mixture where they disagree).
  kinds = {e.get("source", data_cfg.source) in _FILE_SOURCES for e in sources}
  per_record = int(data_cfg.get("clips_per_video", 1)) if kinds == {True} else 1
  counts = WeightedSelection([e["weight"] for e in sources]).counts(clips_seen // per_record)
  return {f"clips_seen_{name}": int(n) * per_record
          for name, n in zip(plan.source_names(data_cfg), counts)}
