"""The grain input pipeline: shuffled, repeated, process-sharded, checkpointable batches.

Order of operations in `make_train_iterator` (and why):

  source -> shuffle(seed) -> repeat forever (reshuffled each epoch) -> [process_index::process_count]
         -> to_iter_dataset (read threads) -> batch(local) -> [mp_prefetch(worker processes)]

* Shuffling and repeating happen BEFORE the process split, on the global index stream. The stream is
  then dealt round-robin to processes, so the processes read disjoint clips whose union is the whole
  stream (each epoch covered exactly once), and the clips of global step k are stream positions
  [k * global_batch_size, (k + 1) * global_batch_size) whatever the process count. Every epoch is a new
  permutation, derived deterministically from the seed.
* Everything is a lazy `grain.MapDataset` up to `to_iter_dataset`, so the iterator's checkpoint state
  is a tiny dict (a position), `get_state()` / `set_state()` resume at exactly the next batch, and the
  state can be saved with orbax (`grain.checkpoint.CheckpointSave(iterator)`) or as JSON.
* Batching after `to_iter_dataset` lets the read threads render single clips in parallel.

Worker processes (data_cfg.num_workers > 0) use `IterDataset.mp_prefetch`. Caveats:
* grain's workers read absl flags, so flags must be parsed before the first `next()`: run the program
  with `absl.app.run` (or call `absl.flags.FLAGS.mark_as_parsed()`); `make_train_iterator` marks them
  parsed itself when nobody has, which is harmless for programs that do not use absl flags.
* Workers are started with the spawn method, so the main module needs an `if __name__ == "__main__":`
  guard and the sources must be picklable (ours hold only a few ints).
* Each worker renders every num_workers-th batch and batches are interleaved round-robin: the order is
  deterministic for a given num_workers but differs from the num_workers=0 order, and a checkpoint
  should be restored with the same num_workers it was saved with.
* Call `iterator.close()` and drop the last reference before the program exits; otherwise grain's
  finalizers run during interpreter shutdown and print harmless "Exception ignored" tracebacks.
"""
from __future__ import annotations

from typing import Any, Mapping

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from layerlock_jax.data import synthetic


def _train_dataset(data_cfg, *, seed: int, global_batch_size: int, process_index: int,
                   process_count: int) -> grain.IterDataset:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"bad process_index/process_count: {process_index}/{process_count}")
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                     f"process_count={process_count}")
  local_batch_size = global_batch_size // process_count
  source = synthetic.make_source(data_cfg, "train", seed)
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None, reseed_each_epoch=True)
  ds = ds[process_index::process_count]
  prefetch = max(1, int(data_cfg.get("prefetch", 2)))
  # Read threads render clips concurrently (numpy releases the GIL in its heavy kernels). The
  # buffer is in clips: `prefetch` batches ahead.
  read_options = grain.ReadOptions(num_threads=int(data_cfg.get("read_threads", 4)),
                                   prefetch_buffer_size=prefetch * local_batch_size)
  it_ds = ds.to_iter_dataset(read_options).batch(local_batch_size, drop_remainder=True)
  num_workers = int(data_cfg.get("num_workers", 0))
  if num_workers > 0:
    _ensure_absl_flags_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=prefetch))
  return it_ds


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
  """The first `num_clips` clips of `split`, in index order, as numpy (for evaluation probes).

  Returns (videos uint8 [N, T, H, W, 3], {label: int32 [N]}). Not shuffled and not sharded: every
  process gets the same arrays.
  """
  source = synthetic.make_source(data_cfg, split, seed)
  if not 0 < num_clips <= len(source):
    raise ValueError(f"num_clips={num_clips} must be in [1, {len(source)}] (config.data.num_clips)")
  first = source[0]
  videos = np.empty((num_clips,) + first["video"].shape, np.uint8)
  labels = {k: np.empty((num_clips,), np.int32) for k in first if k != "video"}
  for i in range(num_clips):
    item = first if i == 0 else source[i]
    videos[i] = item["video"]
    for k in labels:
      labels[k][i] = item[k]
  return videos, labels
