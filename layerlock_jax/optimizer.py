"""The optimizer and its learning-rate schedule: AdamW with warmup + cosine (+ LayerLock
mini-warmups), decay mask and global-norm clipping.

The optimizer only ever sees the *trainable* parameter tree (layerlock_jax/state.py): frozen
parameters get no update, no weight decay and no moment state, by construction rather than by
masking, and gradient norms / clipping cover the trainable parameters only.

Learning rate. Linear warmup from 0 (at step 0) to ``optimizer.lr`` (at ``warmup_steps``), then a
cosine decay to ``min_lr`` at ``total_steps`` (held at ``min_lr`` afterwards); this is the same shape
as ``optax.warmup_cosine_decay_schedule``. On top of it, at every stage boundary where the *target*
changes (pixels -> block_1 -> block_2 ...), the LR is warmed up again (LayerLock's "mini-warmup",
arXiv 2509.10156): it is multiplied by min(1, (step - boundary + 1) / mini_warmup_steps) for the
most recent such boundary. The ``+ 1`` makes the first step of a new stage take a small non-zero
step instead of a wasted zero one. The base cosine keeps running underneath: the mini-warmup only
scales it down for a while, it neither pauses nor restarts the decay, so the total LR budget of a
run does not depend on how many switches it has. Boundaries where only freezing happens (target
stays "pixels") get no mini-warmup, since the loss landscape does not change there.
``mini_warmup_steps == 0`` disables it.

Blockwise SSL, sequential regime (plan/segments.py): the learning rate restarts in every stage:
each segment gets a compressed copy of the run's schedule over its own window (warmup of
the same *fraction* of the window as warmup_steps is of total_steps, then cosine to min_lr at the
window's end) [I: the paper's sequential protocol is unknown]. One global cosine would hand the
last segments only the tail of the decay, so depth and learning rate would be confounded.

The freeze table the schedule reads (which blocks are frozen from which step, and what is
predicted then) is planned in pure Python by layerlock_jax/plan.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from layerlock_jax import plan
from layerlock_jax.plan import Stage


def decay_mask(params):
  """Weight decay on dense/conv kernels only: not on biases, norms, position tables, mask tokens.

  Decided by leaf name, not rank: stacked layers make biases 2-D, so rank-based rules are wrong.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(opt_cfg, learning_rate_fn) -> optax.GradientTransformation:
  parts = []
  if opt_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(opt_cfg.grad_clip))
  parts.append(optax.adamw(learning_rate_fn, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                           weight_decay=opt_cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts)


def target_switch_steps(table: Sequence[Stage]) -> tuple[int, ...]:
  """Start steps of the stages whose target differs from the previous stage's (mini-warmup points)."""
  return tuple(cur.start_step for prev, cur in zip(table[:-1], table[1:])
               if cur.target != prev.target)


def _base_lr(step, peak: float, end: float, warmup: int, total: int):
  """Linear warmup 0 -> peak over `warmup` steps, then cosine peak -> end at `total` (jnp)."""
  step = jnp.asarray(step, jnp.float32)
  warm = peak * step / max(warmup, 1)
  # max(.., 1) keeps a run with total <= warmup well defined (it then never reaches the decay).
  progress = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
  cosine = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  return jnp.where(step < warmup, warm, cosine)


def learning_rate_fn(config: ml_collections.ConfigDict,
                     table: Sequence[Stage]) -> Callable:
  """Optax-compatible schedule `step -> lr` (jittable): warmup + cosine, times the mini-warmup."""
  opt = config.optimizer
  peak, end = float(opt.lr), float(opt.min_lr)
  warmup = plan.integer(config, "optimizer.warmup_steps", lo=0)
  total = int(config.total_steps)
  if plan.blockwise_enabled(config) and config.blockwise.regime == "sequential":
    return _per_stage_schedule(table, peak, end, warmup, total)
  mini = plan.integer(config, "layerlock.mini_warmup_steps", lo=0)
  switches = target_switch_steps(table)

  if mini == 0 or not switches:
    def schedule(step):
      return _base_lr(step, peak, end, warmup, total)
    return schedule

  switch_arr = np.asarray(switches, np.int32)

  def schedule(step):
    base = _base_lr(step, peak, end, warmup, total)
    step_i = jnp.asarray(step, jnp.int32)
    idx = jnp.searchsorted(switch_arr, step_i, side="right") - 1
    # idx < 0: no switch has happened yet, so no mini-warmup applies (factor 1).
    last = jnp.asarray(switch_arr)[jnp.maximum(idx, 0)]
    ramp = jnp.minimum(1.0, (step_i - last + 1).astype(jnp.float32) / mini)
    return base * jnp.where(idx >= 0, ramp, 1.0)
  return schedule


def _per_stage_schedule(table: Sequence[Stage], peak: float, end: float, warmup: int,
                        total: int) -> Callable:
  """Warmup + cosine restarted in every stage, each a copy of the whole run's shape squeezed into
  the stage's window (blockwise sequential)."""
  starts = [s.start_step for s in table]
  stops = starts[1:] + [max(total, starts[-1] + 1)]
  lengths = [b - a for a, b in zip(starts, stops)]
  warmups = [int(round(warmup * n / max(total, 1))) for n in lengths]
  starts_arr = np.asarray(starts, np.int32)
  lengths_arr = np.asarray(lengths, np.float32)
  warmups_arr = np.asarray(warmups, np.float32)

  def schedule(step):
    step_i = jnp.asarray(step, jnp.int32)
    idx = jnp.maximum(jnp.searchsorted(starts_arr, step_i, side="right") - 1, 0)
    local = (step_i - jnp.asarray(starts_arr)[idx]).astype(jnp.float32)
    n, w = jnp.asarray(lengths_arr)[idx], jnp.asarray(warmups_arr)[idx]
    warm = peak * local / jnp.maximum(w, 1.0)
    progress = jnp.clip((local - w) / jnp.maximum(n - w, 1.0), 0.0, 1.0)
    cosine = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(local < w, warm, cosine)
  return schedule
