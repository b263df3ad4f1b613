"""The grain input pipeline: shuffled, repeated, process-sharded, checkpointable batches.

Order of operations in `make_train_iterator` (and why):

  source -> shuffle(seed) -> repeat forever (reshuffled each epoch) -> this process's rows
         -> batch(local) -> to_iter_dataset (read threads) -> [mp_prefetch(worker processes)]

* Shuffling and repeating happen BEFORE the process split, on the global index stream. Each process
  then reads a contiguous block of every global batch (rows [p * local, (p + 1) * local)), so the
  processes read disjoint clips whose union is the whole stream (each epoch covered exactly once),
  and global step k is stream positions [k * global_batch_size, (k + 1) * global_batch_size) IN THE
  SAME ORDER whatever the process count — masks are drawn per batch row, so that order is what makes
  a 2-process run give the 1-process losses. Every epoch is a new permutation, derived
  deterministically from the seed.
* Everything is a lazy `grain.MapDataset` up to `to_iter_dataset`, so the iterator's checkpoint state
  is a tiny dict (a position), `get_state()` / `set_state()` resume at exactly the next batch, and the
  state can be saved with orbax (`grain.checkpoint.CheckpointSave(iterator)`) or as JSON.
* File-backed sources (video_folder, array_record, tfds; see video_files.py) shuffle record
  indices and decode in a `map_with_index` placed before the process split, so augmentation draws
  depend on (seed, global stream position) only. A record that fails to decode is replaced by the
  next good record inside the source (never dropped: dropping would shift every later position and
  make batches depend on which files broke where). `bad_input_metrics()` reports the skips.

Worker processes (data_cfg.num_workers > 0) use `IterDataset.mp_prefetch`. Caveats:
* grain's workers read absl flags, so flags must be parsed before the first `next()`: run the program
  with `absl.app.run` (or call `absl.flags.FLAGS.mark_as_parsed()`); `make_train_iterator` marks them
  parsed itself when nobody has, which is harmless for programs that do not use absl flags.
* Workers are started with the spawn method, so the main module needs an `if __name__ == "__main__":`
  guard and the sources must be picklable (the synthetic ones hold a few ints, the file sources
  their file list or shard paths).
* Each worker renders every num_workers-th batch and batches are interleaved round-robin; batches
  are cut before the worker split, so the batches are the same for any num_workers (0 included).
  The iterator STATE differs (one position per worker): restore a checkpoint with the same
  resolved worker count it was saved with ("auto" resolves from the machine's core count).
* Call `iterator.close()` and drop the last reference before the program exits; otherwise grain's
  finalizers run during interpreter shutdown and print harmless "Exception ignored" tracebacks.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, Mapping

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from layerlock_jax.data import mixture
from layerlock_jax.data import subsets
from layerlock_jax.data import synthetic


def _train_dataset(data_cfg, *, seed: int, global_batch_size: int, process_index: int,
                   process_count: int) -> grain.IterDataset:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"bad process_index/process_count: {process_index}/{process_count}")
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                     f"process_count={process_count}")
  local_batch_size = global_batch_size // process_count
  # File-backed sources (video_files.ClipSource) yield several clips per decoded video: a record
  # becomes `clips_per_video` stacked clips, batches are built from local_batch / k records and
  # then flattened, so the clips of one video sit next to each other in one batch (VideoMAEv2's
  # repeated augmentation).
  if data_cfg.get("sources"):  # a weighted mixture of sources (mixture.py)
    ds, clips_per_record = mixture.mixed_stream(data_cfg, seed, _source_stream)
    file_backed = mixture.has_file_source(data_cfg)
  else:
    source = synthetic.make_source(data_cfg, "train", seed)
    ds, clips_per_record = _source_stream(source, seed), int(getattr(source, "clips_per_video", 1))
    file_backed = hasattr(source, "training_item")
  if local_batch_size % clips_per_record:
    raise ValueError(f"data.clips_per_video={clips_per_record} must divide the per-process batch "
                     f"{local_batch_size} (batch_size={global_batch_size} over {process_count} "
                     "process(es))")
  records_per_batch = local_batch_size // clips_per_record
  if process_count > 1:
    # Each process reads a contiguous block of every global batch, so the global batch is the
    # same clips in the same order whatever the process count (masks are drawn per batch row:
    # a different order would give different losses).
    ds = grain.MapDataset.range(len(ds) // process_count).map(
        _ContiguousBlock(ds, records_per_batch, process_index, process_count))
  prefetch = max(1, int(data_cfg.get("prefetch", 2)))
  num_workers = resolve_num_workers(data_cfg.get("num_workers", 0), file_backed)
  threads = resolve_read_threads(data_cfg.get("read_threads", "auto"), num_workers)
  # Batches are formed on the index stream, before any worker split: worker w of n renders whole
  # batches w, w + n, ... and grain interleaves them round-robin, so the batches (and a resumed
  # run's) are the same for every worker count. Read threads render or decode batches
  # concurrently (numpy and FFmpeg do most of their work outside the GIL).
  ds = ds.batch(records_per_batch, drop_remainder=True)
  read_options = grain.ReadOptions(num_threads=threads,
                                   prefetch_buffer_size=max(prefetch, threads))
  it_ds = ds.to_iter_dataset(read_options)
  if data_cfg.get("sources") or file_backed:
    it_ds = it_ds.map(_merge_clip_axis)
  if num_workers > 0:
    _ensure_absl_flags_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=prefetch))
  return it_ds


def resolve_num_workers(value: Any, file_backed: bool) -> int:
  """data.num_workers: an int, or "auto": 0 for the embedded sources (a clip renders in well
  under a millisecond in the read threads), else one worker process per core left over after
  the main process (which runs the train step), at least 1 and at most 16."""
  if value == "auto":
    if not file_backed:
      return 0
    return max(1, min(16, (os.cpu_count() or 2) - 1))
  return int(value)


def resolve_read_threads(value: Any, num_workers: int) -> int:
  """data.read_threads: an int, or "auto": 4 where the main process renders or decodes itself,
  1 per worker process (the processes are the parallelism; threads there contend for the GIL)."""
  if value == "auto":
    return 1 if num_workers > 0 else 4
  return int(value)


def _source_stream(source, seed: int) -> grain.MapDataset:
  """One source's records, shuffled and repeated forever (reshuffled each epoch)."""
  if hasattr(source, "training_item"):
    # Indices, not items, are shuffled; the record is decoded and augmented with draws derived
    # from (seed, stream position), so every epoch sees new crops/offsets of a video, identical
    # on any process count and after a resume. The order is an explicit permutation per epoch,
    # not grain's index shuffle, whose cost per index grows as the dataset shrinks (on a few dozen
    # records it rivals decoding a small converted clip; docs/data.md).
    ds = grain.MapDataset.range(len(source)).repeat(None)
    return ds.map_with_index(_EpochOrder(len(source), seed)).map_with_index(
        _TrainingClips(source, seed))
  return grain.MapDataset.source(source).shuffle(seed=seed).repeat(None, reseed_each_epoch=True)


class _ContiguousBlock:
  """Local stream position j -> global position (j // R) * R * P + p * R + j % R.

  R records per process per step, P processes, p this process: process p holds rows
  [p * R, (p + 1) * R) of every global batch.
  """

  def __init__(self, ds, records_per_step: int, process_index: int, process_count: int):
    self.ds, self.r = ds, records_per_step
    self.p, self.n = process_index, process_count

  def __call__(self, j: int):
    return self.ds[(j // self.r) * self.r * self.n + self.p * self.r + j % self.r]


class _EpochOrder:
  """map_with_index transform: stream position -> record index, a new permutation each epoch.

  Epoch e = position // n is np.random.default_rng((seed, e)).permutation(n): a pure function of
  (seed, position), the same in every process, worker and resumed run. The last two epochs'
  permutations are kept (4 bytes per record each), so a batch that straddles an epoch boundary
  does not recompute them.
  """

  def __init__(self, num_records: int, seed: int):
    self.n, self.seed = int(num_records), int(seed)
    self._kept: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()  # read threads share this object

  def _order(self, epoch: int) -> np.ndarray:
    with self._lock:
      order = self._kept.get(epoch)
      if order is None:
        order = np.random.default_rng((self.seed, epoch)).permutation(self.n)
        order = order.astype(np.uint32 if self.n < 2**32 else np.int64)
        if len(self._kept) >= 2:
          del self._kept[min(self._kept)]
        self._kept[epoch] = order
      return order

  def __call__(self, position: int, _) -> int:
    epoch, i = divmod(int(position), self.n)
    return int(self._order(epoch)[i])

  def __getstate__(self):
    return {"n": self.n, "seed": self.seed}

  def __setstate__(self, state):
    self.__init__(state["n"], state["seed"])


class _TrainingClips:
  """map_with_index transform: (stream position, record index) -> the record's training clips.

  A class rather than a closure so grain can pickle it into worker processes.
  """

  def __init__(self, source, seed: int):
    self.source, self.seed = source, int(seed)

  def __call__(self, position: int, record: int) -> dict[str, np.ndarray]:
    return self.source.training_item(position, record, self.seed)


def _merge_clip_axis(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """(records, clips_per_record, ...) -> (records * clips_per_record, ...)."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


def bad_input_metrics() -> dict[str, int]:
  """Skipped-input counts of the file sources of this process, for metrics (see video_files).

  {"data_skipped_files": n, "data_replaced_clips": m}, or {} for the synthetic sources. Also logs
  every bad file first seen at decode time (in a reader thread or worker process) since the last
  call, with its reason; files skipped when the source was built are logged then.
  """
  # No file source was built in this process unless video_files was imported: the synthetic
  # sources then need neither the module nor PyAV.
  video_files = sys.modules.get("layerlock_jax.data.video_files")
  return video_files.bad_input_metrics() if video_files else {}


def _ensure_absl_flags_parsed() -> None:
  """grain workers read absl flags; unparsed flags raise there (see the module docstring)."""
  from absl import flags  # grain depends on absl, so this is always importable
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_train_iterator(data_cfg, *, seed: int, global_batch_size: int, process_index: int,
                        process_count: int) -> grain.DatasetIterator:
  """An endless iterator of this process's LOCAL training batches.

  Each batch is {"video": uint8 (global_batch_size // process_count, T, H, W, 3), <label>: int32
  (local,)}. The same (data_cfg, seed, global_batch_size, process_count) always gives the same
  batches. Supports `get_state()` / `set_state()` for exact resumption.
  """
  return iter(_train_dataset(data_cfg, seed=seed, global_batch_size=global_batch_size,
                             process_index=process_index, process_count=process_count))


def global_batch(local_batch: Mapping[str, Any], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Assembles each process's local batch into global jax.Arrays split along the batch axis.

  `sharding` is the video's NamedSharding (first axis = batch). Arrays of lower rank than its
  PartitionSpec (the labels) get a sharding on the same mesh that keeps only the batch part of the
  spec, so every entry is split over the same devices along axis 0 and stays aligned with the video.
  """
  spec = tuple(sharding.spec)
  batch_only = NamedSharding(sharding.mesh, PartitionSpec(spec[0] if spec else None),
                             memory_kind=sharding.memory_kind)
  out = {}
  for name, value in local_batch.items():
    value = np.asarray(value)
    target = sharding if value.ndim >= len(spec) else batch_only
    out[name] = jax.make_array_from_process_local_data(target, value)
  return out


def load_split_arrays(data_cfg, split: str, num_clips: int,
                      seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """`num_clips` clips of `split` as numpy (for evaluation probes): the whole split, or a subset
  stratified over the classes of its first label and drawn from `seed` (subsets.stratified_subset;
  a class-sorted folder's first clips would cover only its first classes).

  Returns (videos uint8 [N, T, H, W, 3], {label: int32 [N]}), in record order. Not sharded:
  every process gets the same arrays.
  """
  source = synthetic.make_source(data_cfg, split, seed)
  if not 0 < num_clips <= len(source):
    raise ValueError(f"num_clips={num_clips} must be in [1, {len(source)}] (config.data.num_clips)")
  if num_clips == len(source):
    indices = np.arange(num_clips)
  else:
    table = subsets.split_labels(source)
    first = next(iter(table.values()), None)
    indices = subsets.stratified_subset(first, num_clips, seed, total=len(source))
  first = source[int(indices[0])]
  videos = np.empty((num_clips,) + first["video"].shape, np.uint8)
  labels = {k: np.empty((num_clips,), np.int32) for k in first if k != "video"}
  for i, index in enumerate(indices):
    item = first if i == 0 else source[int(index)]
    videos[i] = item["video"]
    for k in labels:
      labels[k][i] = item[k]
  return videos, labels
