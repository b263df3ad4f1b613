"""Frozen-encoder probes trained on batches that stream through the encoder.

`evaluate` fits a linear probe (on the mean-pooled tokens) and a 4DS attentive readout (on the
tokens) of one encoder block, per label, without ever holding a split in memory:

  split -> [stratified seeded subset] -> global batches (a seeded permutation per epoch)
        -> this process's rows, read by grain threads -> one global array, batch split over the
           mesh's batch axes -> frozen encoder -> probe step (gradients averaged over the batch)

* Data-parallel: every process reads only its block of rows of each global batch (the rows its
  devices hold), and the encoder and probe steps run with the batch sharded over the mesh's data
  axes (sharding.batch_sharding). The global batches, their order, the probe initialisation and
  hence the accuracies do not depend on how many processes or devices share the work.
* Memory: clips are read batch by batch (a few batches prefetched), features stay on the devices
  and only the batch's rows ever exist on the host; the split's labels (one int per clip) are the
  only per-clip state. The embedded sources' clip cache is bypassed: a streaming pass reads each
  clip once per epoch.
* Test time uses views (the 4DS / V-JEPA protocol): each test clip is read as a longer and larger
  window, cut into `temporal_clips` evenly spaced clips x `spatial_crops` crops (centre for one
  crop; else evenly spaced along the diagonal, corner to corner), and the probe logits are
  averaged over the views. Top-1 and top-5 (top-k with k = min(5, classes)).
* A subset (`num_train` / `num_test`) is stratified per class of the first label and seeded
  (data.subsets.stratified_subset).
* Cached features (`feature_cache=DIR`): the readout block's pooled features and tokens of the
  probe-training clips are written to DIR during the first epoch (every process writes its rows;
  DIR must be shared by the processes) and later epochs, and later runs with the same encoder,
  data and subset, read them instead of running the encoder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from typing import Any, Callable

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding

from layerlock_jax import config_defaults
from layerlock_jax import sharding as sharding_lib
from layerlock_jax.data import subsets
from layerlock_jax.data import synthetic
from layerlock_jax.evaluation import depthwise
from layerlock_jax.evaluation import features as features_lib
from layerlock_jax.evaluation import probes
from layerlock_jax.models import video_mae


@dataclasses.dataclass(frozen=True)
class Views:
  """Test-time views: `temporal_clips` x `spatial_crops` clips cut from a window of
  `window_frames` frames at `window_size` pixels (0: num_frames x temporal_clips frames; the clip
  size for one crop, else 8/7 of it, the 256 -> 224 ratio of the 4DS / V-JEPA evaluations)."""
  temporal_clips: int = 1
  spatial_crops: int = 1
  window_frames: int = 0
  window_size: int = 0

  @property
  def count(self) -> int:
    return self.temporal_clips * self.spatial_crops

  def window(self, num_frames: int, image_size: int) -> tuple[int, int]:
    frames = self.window_frames or num_frames * self.temporal_clips
    size = self.window_size or (image_size if self.spatial_crops == 1
                                else int(math.ceil(image_size * 8 / 7)))
    return frames, size

  def check(self, num_frames: int, image_size: int) -> None:
    if self.temporal_clips < 1 or self.spatial_crops < 1:
      raise ValueError(f"views need temporal_clips >= 1 and spatial_crops >= 1, got {self}")
    frames, size = self.window(num_frames, image_size)
    if frames < num_frames or size < image_size:
      raise ValueError(f"the view window ({frames} frames, {size} px) must hold a clip of "
                       f"{num_frames} frames at {image_size} px")


def cut_views(window: np.ndarray, num_frames: int, image_size: int, views: Views) -> np.ndarray:
  """[V, T, S, S, C] views of one window [Tw, Hw, Ww, C], temporal clips outermost."""
  tw, hw, ww = window.shape[:3]

  def starts(total, length, count):
    if count == 1:
      return [(total - length) // 2]
    return [int(round(k * (total - length) / (count - 1))) for k in range(count)]

  ts = starts(tw, num_frames, views.temporal_clips)
  ys = starts(hw, image_size, views.spatial_crops)
  xs = starts(ww, image_size, views.spatial_crops)
  return np.stack([window[t:t + num_frames, y:y + image_size, x:x + image_size]
                   for t in ts for y, x in zip(ys, xs)])


@dataclasses.dataclass(frozen=True)
class StreamSettings:
  """What `evaluate` does; see the module docstring. num_train / num_test 0: the whole split.
  block 0: depthwise.readout_block (the 4DS depth-0.95 rule). tasks None: every label."""
  batch_size: int = 32
  epochs: int = 2
  num_train: int = 0
  num_test: int = 0
  views: Views = Views()
  block: int = 0
  tasks: tuple[str, ...] | None = None
  lr: float = 1e-3
  weight_decay: float = 0.05
  width: int = 64
  num_heads: int = 4
  seed: int = 0
  read_threads: int = 4
  feature_cache: str = ""
  progress_every_s: float = 10.0


def _read_item(source, index: int) -> dict[str, Any]:
  """source[index], past the embedded sources' per-process clip cache (see the docstring)."""
  getitem = getattr(type(source).__getitem__, "__wrapped__", None)
  return dict(getitem(source, int(index))) if getitem is not None else source[int(index)]


class _BatchReader:
  """grain map: batch number -> this process's rows of that global batch.

  positions: int64 [num_batches, batch_size] subset positions (-1 pads the last batch; a pad row
  repeats position 0 with weight 0). rows: this process's [start, stop) of each batch.
  """

  def __init__(self, source, indices, positions, rows, tasks, views=None, clip=None):
    self.source, self.indices, self.positions = source, indices, positions
    self.rows, self.tasks, self.views, self.clip = rows, tasks, views, clip

  def __call__(self, b: int) -> dict[str, np.ndarray]:
    pos = self.positions[b, self.rows[0]:self.rows[1]]
    videos, labels = [], {k: np.zeros(len(pos), np.int32) for k in self.tasks}
    for i, p in enumerate(pos):
      item = _read_item(self.source, self.indices[max(int(p), 0)])
      video = item["video"]
      if self.views is not None:
        video = cut_views(video, *self.clip, self.views)
      videos.append(video)
      for k in self.tasks:
        labels[k][i] = item[k]
    return {"video": np.stack(videos), "weight": (pos >= 0).astype(np.float32),
            "position": pos.astype(np.int64), **{f"label/{k}": v for k, v in labels.items()}}


class _Progress:
  """One line every `every_s` seconds and at the end: clips done, rate, ETA."""

  def __init__(self, name: str, total: int, every_s: float, log: Callable[[str], None]):
    self.name, self.total, self.every_s, self.log = name, total, every_s, log
    self.start = self.last = time.perf_counter()
    self.done = 0

  def add(self, n: int) -> None:
    self.done += n
    now = time.perf_counter()
    if now - self.last >= self.every_s or self.done >= self.total:
      rate = self.done / max(now - self.start, 1e-9)
      self.log(f"[{self.name}] {min(self.done, self.total)}/{self.total} clips, "
               f"{rate:.1f} clips/s, ETA {max(self.total - self.done, 0) / max(rate, 1e-9):.0f}s")
      self.last = now


def _batch_axes_size(shard: NamedSharding) -> int:
  axes = shard.spec[0] if len(shard.spec) else None
  names = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return int(np.prod([shard.mesh.shape[a] for a in names])) if names else 1


def _local_rows(shard: NamedSharding, shape: tuple[int, ...]) -> tuple[int, int]:
  """[start, stop) of the batch rows this process's devices hold (a contiguous block)."""
  spans = {(s[0].start or 0, shape[0] if s[0].stop is None else s[0].stop)
           for s in shard.addressable_devices_indices_map(shape).values()}
  start, stop = min(a for a, _ in spans), max(b for _, b in spans)
  if sum(b - a for a, b in spans) != stop - start:
    raise ValueError(f"this process's devices hold batch rows {sorted(spans)}: not one block")
  return start, stop


def _replicate(tree: Any, rep: NamedSharding) -> Any:
  """Host values (equal on every process) -> global arrays replicated over the mesh."""
  def put(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, rep, lambda idx: a[idx])
  return jax.tree.map(put, tree)


def _truncated_encoder(params: Any, block: int) -> tuple[Any, Any]:
  """(embed, one stacked tree of blocks 1..block) on the host."""
  embed, stacks = features_lib.encoder_parts(params)
  stacks = [s for s in stacks if video_mae.stack_depth(s)]
  host = lambda t: jax.tree.map(np.asarray, t)
  stack = host(stacks[0]) if len(stacks) == 1 else jax.tree.map(
      lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *stacks)
  return host(embed), jax.tree.map(lambda a: a[:block], stack)


def _fingerprint(*parts: Any) -> str:
  h = hashlib.sha256()
  for p in parts:
    if isinstance(p, np.ndarray):
      h.update(np.ascontiguousarray(p).tobytes())
    else:
      h.update(json.dumps(p, sort_keys=True, default=str).encode())
  return h.hexdigest()[:24]


class _FeatureCache:
  """The readout block's features of the probe-training subset, in .npy files under `path`."""

  def __init__(self, path: str, key: str, n: int, pooled_shape, token_shape):
    self.dir = os.path.join(path, key)
    self.done_file = os.path.join(self.dir, "complete")
    self.complete = os.path.exists(self.done_file)
    self.shapes = {"pooled": (n,) + tuple(pooled_shape), "tokens": (n,) + tuple(token_shape)}
    self.arrays: dict[str, np.ndarray] = {}

  def open(self, mode: str) -> None:
    os.makedirs(self.dir, exist_ok=True)
    for name, shape in self.shapes.items():
      f = os.path.join(self.dir, f"{name}.npy")
      if mode == "w" and jax.process_index() == 0:
        np.lib.format.open_memmap(f, mode="w+", dtype=np.float32, shape=shape).flush()
    if mode == "w":
      _sync("feature_cache_created")
    for name in self.shapes:
      self.arrays[name] = np.load(os.path.join(self.dir, f"{name}.npy"),
                                  mmap_mode="r+" if mode == "w" else "r")

  def write(self, name: str, array: jax.Array, positions: np.ndarray) -> None:
    """Writes the rows of a batch-sharded global array that this process holds."""
    seen = set()
    for shard in array.addressable_shards:
      start = shard.index[0].start or 0
      if start in seen:
        continue
      seen.add(start)
      data = np.asarray(shard.data)
      pos = positions[start:start + data.shape[0]]
      keep = pos >= 0
      self.arrays[name][pos[keep]] = data[keep]

  def read(self, name: str, positions: np.ndarray) -> np.ndarray:
    return np.asarray(self.arrays[name][np.maximum(positions, 0)])

  def finish(self) -> None:
    for a in self.arrays.values():
      a.flush()
    _sync("feature_cache_written")
    if jax.process_index() == 0:
      with open(self.done_file, "w") as f:
        f.write("ok\n")
    self.complete = True
    self.arrays.clear()
    self.open("r")


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _label_table(source, subset_labels: dict[str, np.ndarray]) -> dict[str, int]:
  table = dict(getattr(source, "LABELS", None) or {})
  return {k: int(table.get(k, int(v.max()) + 1 if v.size else 1))
          for k, v in subset_labels.items()}


def _subset(source, num: int, seed: int, tasks):
  labels = subsets.split_labels(source)
  names = list(labels) if tasks is None else list(tasks)
  unknown = sorted(set(names) - set(labels))
  if unknown:
    raise ValueError(f"unknown tasks {unknown}; the source has labels {sorted(labels)}")
  if not names:
    raise ValueError("streaming evaluation needs a labelled source; this one has no labels")
  num = num or len(source)
  indices = subsets.stratified_subset(labels[names[0]], min(num, len(source)), seed)
  return indices, {k: labels[k][indices] for k in names}


def check_settings(config, s: StreamSettings, mesh=None):
  """(block, mesh) after checking `s` against the model and the mesh: one ValueError naming the
  setting, before any clip is read or any parameter loaded."""
  t_frames, size = int(config.data.num_frames), int(config.data.image_size)
  s.views.check(t_frames, size)
  depth = config_defaults.encoder_depth(config)
  block = s.block or depthwise.readout_block(depth)
  if not 1 <= block <= depth:
    raise ValueError(f"block={block} must lie in [1, {depth}]")
  if s.batch_size < 1 or s.epochs < 1:
    raise ValueError(f"batch_size and epochs must be >= 1, got {s.batch_size}, {s.epochs}")
  if s.num_train < 0 or s.num_test < 0:
    raise ValueError(f"num_train and num_test must be >= 0, got {s.num_train}, {s.num_test}")
  mesh = sharding_lib.make_mesh(config.mesh) if mesh is None else mesh
  split = _batch_axes_size(sharding_lib.batch_sharding(mesh, sharding_lib.axis_rules(config.mesh),
                                                       5))
  if s.batch_size % split:
    raise ValueError(f"batch_size={s.batch_size} must be a multiple of the mesh's batch split "
                     f"({split} ways)")
  return block, mesh


def evaluate(config, params: Any, settings: StreamSettings = StreamSettings(), *,
             data_cfg=None, mesh=None, log: Callable[[str], None] = logging.info
             ) -> dict[str, Any]:
  """Linear and attentive probes of one block, trained and scored streaming; see the module
  docstring. `params`: a full parameter tree or a TrainState (read only). `data_cfg`: the labelled
  data (default config.data; its clip geometry must be the model's). `mesh`: default
  sharding.make_mesh(config.mesh) over every device of every process.

  Returns {"tasks": {name: {"num_classes", "chance", "linear": {"top1", "top5"},
  "attentive": {...}}}, "block", "num_train", "num_test", "train_classes", "test_classes",
  "views", "train_loss", "seconds"}; the same on every process.
  """
  start_time = time.perf_counter()
  s = settings
  data_cfg = config.data if data_cfg is None else data_cfg
  t_frames, size = int(config.data.num_frames), int(config.data.image_size)
  if (int(data_cfg.num_frames), int(data_cfg.image_size)) != (t_frames, size):
    raise ValueError("the evaluation data must have the model's clip shape "
                     f"({t_frames} frames at {size} px)")
  block, mesh = check_settings(config, s, mesh)
  depth = config_defaults.encoder_depth(config)
  rules = sharding_lib.axis_rules(config.mesh)
  video_shard = sharding_lib.batch_sharding(mesh, rules, 5)
  view_shard = sharding_lib.batch_sharding(mesh, rules, 6)
  row_shard = sharding_lib.batch_sharding(mesh, rules, 1)
  rep = sharding_lib.replicated(mesh)

  # Sources and subsets: labels only, no clip is read yet.
  train_source = synthetic.make_source(data_cfg, "train", config.seed)
  wf, ws = s.views.window(t_frames, size)
  test_cfg = data_cfg.copy_and_resolve_references()
  with test_cfg.unlocked():
    test_cfg.num_frames, test_cfg.image_size = wf, ws
  test_source = synthetic.make_source(test_cfg, "test", config.seed)
  train_idx, train_labels = _subset(train_source, s.num_train, s.seed, s.tasks)
  test_idx, test_labels = _subset(test_source, s.num_test, s.seed, s.tasks)
  tasks = list(train_labels)
  num_classes = _label_table(train_source, {k: np.concatenate([train_labels[k], test_labels[k]])
                                            for k in tasks})
  first = tasks[0]
  log(f"streaming evaluation at block {block}/{depth}: {len(train_idx)} train clips "
      f"({len(np.unique(train_labels[first]))} classes of {first}), {len(test_idx)} test clips "
      f"({len(np.unique(test_labels[first]))} classes) x {s.views.count} view(s), "
      f"batch {s.batch_size} over {jax.device_count()} device(s) in {jax.process_count()} "
      f"process(es)")

  # The frozen encoder and the probes, all on the mesh.
  model = video_mae.VideoMAE(config)
  t_grid, h_grid, w_grid = model.grid
  dim = model.width
  embed, stack = _replicate(_truncated_encoder(params, block), rep)
  readouts = {k: probes.AttentiveReadout(num_classes=num_classes[k], width=s.width,
                                         num_heads=s.num_heads) for k in tasks}

  def features(embed, stack, video):
    x = model.block_outputs(embed, [stack], video)[-1].astype(jnp.float32)   # [B, N, D]
    return x.mean(axis=1), x.reshape(x.shape[0], t_grid, h_grid * w_grid, dim)

  encode = jax.jit(features, out_shardings=(sharding_lib.batch_sharding(mesh, rules, 2),
                                            sharding_lib.batch_sharding(mesh, rules, 4)))

  def init(key):
    keys = jax.random.split(key, len(tasks))
    tokens = jnp.zeros((1, t_grid, h_grid * w_grid, dim), jnp.float32)
    return {k: {"linear": {"w": jnp.zeros((dim, num_classes[k])),
                           "b": jnp.zeros((num_classes[k],))},
                "attentive": readouts[k].init(keys[i], tokens)["params"]}
            for i, k in enumerate(tasks)}

  steps_per_epoch = -(-len(train_idx) // s.batch_size)
  total_steps = steps_per_epoch * s.epochs
  schedule = optax.warmup_cosine_decay_schedule(0.0, s.lr, total_steps // 10,
                                                max(total_steps, total_steps // 10 + 1))
  decay = lambda p: jax.tree.map(lambda a: a.ndim >= 2, p)
  tx = optax.adamw(schedule, weight_decay=s.weight_decay, mask=decay)
  probe_params = jax.jit(init, out_shardings=rep)(jax.random.key(s.seed))
  opt_state = jax.jit(tx.init, out_shardings=rep)(probe_params)

  def logits(p, k, pooled, tokens):
    lin = probes.layernorm_tokens(pooled) @ p[k]["linear"]["w"] + p[k]["linear"]["b"]
    att = readouts[k].apply({"params": p[k]["attentive"]}, tokens).mean(axis=1)
    return lin, att

  def loss_fn(p, pooled, tokens, labels, weight):
    total = 0.0
    denom = jnp.maximum(weight.sum(), 1.0)
    for k in tasks:
      for out in logits(p, k, pooled, tokens):
        ce = optax.softmax_cross_entropy_with_integer_labels(out, labels[k])
        total = total + (ce * weight).sum() / denom
    return total

  def train_step(p, opt, pooled, tokens, labels, weight):
    loss, grads = jax.value_and_grad(loss_fn)(p, pooled, tokens, labels, weight)
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt, loss

  train_step = jax.jit(train_step, out_shardings=(rep, rep, rep), donate_argnums=(0, 1))

  def test_step(p, embed, stack, video, labels, weight):
    b, v = video.shape[:2]
    pooled, tokens = features(embed, stack, video.reshape((b * v,) + video.shape[2:]))
    out = {}
    for k in tasks:
      c = num_classes[k]
      topk = min(5, c)
      for name, lg in zip(("linear", "attentive"), logits(p, k, pooled, tokens)):
        mean = lg.reshape(b, v, c).mean(axis=1)                       # logits averaged over views
        ranked = jax.lax.top_k(mean, topk)[1]
        hit5 = (ranked == labels[k][:, None]).any(axis=1)
        hit1 = ranked[:, 0] == labels[k]
        out[f"{k}/{name}/top1"] = (hit1 * weight).sum()
        out[f"{k}/{name}/top5"] = (hit5 * weight).sum()
    return out

  test_step = jax.jit(test_step, out_shardings=rep)

  def place(batch, views: bool):
    shard = view_shard if views else video_shard
    video = jax.make_array_from_process_local_data(shard, batch["video"])
    labels = {k: jax.make_array_from_process_local_data(row_shard, batch[f"label/{k}"])
              for k in tasks}
    weight = jax.make_array_from_process_local_data(row_shard, batch["weight"])
    return video, labels, weight

  def plan(n: int, order: np.ndarray) -> np.ndarray:
    padded = np.full(steps(n) * s.batch_size, -1, np.int64)
    padded[:n] = order
    return padded.reshape(-1, s.batch_size)

  def steps(n: int) -> int:
    return -(-n // s.batch_size)

  def batches(source, indices, positions, views=None):
    rows = _local_rows(video_shard, (s.batch_size,) + model.video_shape)
    reader = _BatchReader(source, indices, positions, rows, tasks, views,
                          (t_frames, size) if views is not None else None)
    ds = grain.MapDataset.range(positions.shape[0]).map(reader)
    threads = max(1, int(s.read_threads))
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                prefetch_buffer_size=threads)), rows

  # Probe training.
  cache = None
  if s.feature_cache:
    key = _fingerprint(json.loads(config.model.to_json_best_effort()),
                       json.loads(data_cfg.to_json_best_effort()), block, train_idx,
                       [np.asarray(jax.device_get(a.addressable_shards[0].data)).sum(dtype=np.float64)
                        for a in jax.tree.leaves((embed, stack))])
    cache = _FeatureCache(s.feature_cache, key, len(train_idx), (dim,),
                          (t_grid, h_grid * w_grid, dim))
    log(f"feature cache {cache.dir}: " + ("reading" if cache.complete else "writing"))
    cache.open("r" if cache.complete else "w")
  losses = []
  for epoch in range(s.epochs):
    order = np.random.default_rng([s.seed, epoch, len(train_idx)]).permutation(len(train_idx))
    positions = plan(len(train_idx), order)
    progress = _Progress(f"probe training, epoch {epoch + 1}/{s.epochs}", len(train_idx),
                         s.progress_every_s, log)
    if cache is not None and cache.complete:
      rows = _local_rows(video_shard, (s.batch_size,) + model.video_shape)
      for b in range(positions.shape[0]):
        pos = positions[b, rows[0]:rows[1]]
        pooled = jax.make_array_from_process_local_data(
            sharding_lib.batch_sharding(mesh, rules, 2), cache.read("pooled", pos))
        tokens = jax.make_array_from_process_local_data(
            sharding_lib.batch_sharding(mesh, rules, 4), cache.read("tokens", pos))
        lab = {k: jax.make_array_from_process_local_data(row_shard, train_labels[k][np.maximum(pos, 0)])
               for k in tasks}
        weight = jax.make_array_from_process_local_data(row_shard, (pos >= 0).astype(np.float32))
        probe_params, opt_state, loss = train_step(probe_params, opt_state, pooled, tokens, lab,
                                                   weight)
        losses.append(loss)
        progress.add(int(np.sum(positions[b] >= 0)))
      continue
    stream, _ = batches(train_source, train_idx, positions)
    for b, batch in enumerate(stream):
      video, lab, weight = place(batch, views=False)
      pooled, tokens = encode(embed, stack, video)
      if cache is not None:
        cache.write("pooled", pooled, positions[b])
        cache.write("tokens", tokens, positions[b])
      probe_params, opt_state, loss = train_step(probe_params, opt_state, pooled, tokens, lab,
                                                 weight)
      losses.append(loss)
      progress.add(int(np.sum(positions[b] >= 0)))
    if cache is not None:
      cache.finish()

  # Test: every view of every test clip.
  positions = plan(len(test_idx), np.arange(len(test_idx)))
  stream, _ = batches(test_source, test_idx, positions, views=s.views)
  progress = _Progress("probe test", len(test_idx), s.progress_every_s, log)
  sums: dict[str, float] = {}
  for b, batch in enumerate(stream):
    video, lab, weight = place(batch, views=True)
    for name, value in test_step(probe_params, embed, stack, video, lab, weight).items():
      sums[name] = sums.get(name, 0.0) + float(value)
    progress.add(int(np.sum(positions[b] >= 0)))

  tail = max(1, len(losses) // 10)
  result: dict[str, Any] = {
      "block": block, "num_train": len(train_idx), "num_test": len(test_idx),
      "train_classes": {k: int(len(np.unique(v))) for k, v in train_labels.items()},
      "test_classes": {k: int(len(np.unique(v))) for k, v in test_labels.items()},
      "views": dataclasses.asdict(s.views) | {"window_frames": wf, "window_size": ws},
      "train_loss": float(np.mean([float(x) for x in losses[-tail:]])),
      "tasks": {}}
  for k in tasks:
    counts = np.bincount(test_labels[k], minlength=num_classes[k])
    result["tasks"][k] = {
        "num_classes": num_classes[k], "chance": float(counts.max() / counts.sum()),
        **{name: {m: sums[f"{k}/{name}/{m}"] / len(test_idx) for m in ("top1", "top5")}
           for name in ("linear", "attentive")}}
  result["seconds"] = time.perf_counter() - start_time
  return result


def format_table(result: dict[str, Any]) -> str:
  """Top-1 / top-5 of both probes per task, one row per task."""
  lines = [f"block {result['block']}, {result['num_train']} train / {result['num_test']} test "
           f"clips, {result['views']['temporal_clips']}x{result['views']['spatial_crops']} views",
           f"{'task':>14} {'classes':>8} {'linear@1':>9} {'linear@5':>9} {'attn@1':>9} "
           f"{'attn@5':>9} {'chance':>7}"]
  for k, t in result["tasks"].items():
    lines.append(f"{k:>14} {t['num_classes']:>8} {t['linear']['top1']:>9.3f} "
                 f"{t['linear']['top5']:>9.3f} {t['attentive']['top1']:>9.3f} "
                 f"{t['attentive']['top5']:>9.3f} {t['chance']:>7.3f}")
  return "\n".join(lines)


def settings_from_flags(values: dict[str, Any]) -> StreamSettings:
  """StreamSettings from the CLI's flag values (names as in StreamSettings / Views)."""
  view_keys = {f.name for f in dataclasses.fields(Views)}
  own = {f.name for f in dataclasses.fields(StreamSettings)} - {"views"}
  views = Views(**{k: int(v) for k, v in values.items() if k in view_keys})
  kwargs = {k: v for k, v in values.items() if k in own}
  if "tasks" in kwargs:
    kwargs["tasks"] = tuple(kwargs["tasks"]) or None
  return StreamSettings(views=views, **kwargs)


def write_result(result: dict[str, Any], path: str) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, path)
  return path


def run(config, workdir: str, settings: StreamSettings, *, step: int | None = None,
        params: Any = None, task_source: str | None = None,
        log: Callable[[str], None] = logging.info) -> dict[str, Any]:
  """The CLI's streaming mode: load the checkpoint's parameters (unless given, with `step`),
  evaluate, write DIR/eval/step_N[_SOURCE]_stream.json (process 0). Returns {"step", "result",
  "path"}."""
  check_settings(config, settings)
  if params is None:
    from layerlock_jax import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
    step, params = evaluate_lib.load_checkpoint_params(config, workdir, step)
  elif step is None:
    raise ValueError("pass `step` together with in-memory `params`")
  data_cfg = depthwise.task_data_config(config, task_source)
  result = evaluate(config, params, settings, data_cfg=data_cfg, log=log)
  result["step"] = int(step)
  name = f"step_{int(step)}"
  if task_source and task_source != config.data.source:
    name += f"_{task_source}"
  path = os.path.join(workdir, "eval", f"{name}_stream.json")
  if jax.process_index() == 0:
    write_result(result, path)
  return {"step": int(step), "result": result, "path": path}
