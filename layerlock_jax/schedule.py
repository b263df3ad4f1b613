"""Learning-rate schedule, stage lookup under `jit`, and the naive-latent loss weight.

The freeze table itself (which blocks are frozen from which step, and what is predicted then) is
planned in pure Python by layerlock_jax/plan and re-exported here. The train loop uses the table
in two ways: in Python, to decide when to switch to a new `jit` specialisation (the number of
frozen blocks is static: it decides which blocks run forward only), and under `jit`, where the LR
schedule looks up the current stage from a traced step.

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
"""
from __future__ import annotations

import bisect
from typing import Callable, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from layerlock_jax import plan
# The freeze table's public names, planned in plan/layerlock.py and plan/segments.py.
from layerlock_jax.plan import (PIXELS, Stage, block_target,  # pylint: disable=unused-import
                                freeze_table, frozen_cap)


def target_switch_steps(table: Sequence[Stage]) -> tuple[int, ...]:
  """Start steps of the stages whose target differs from the previous stage's (mini-warmup points)."""
  return tuple(cur.start_step for prev, cur in zip(table[:-1], table[1:])
               if cur.target != prev.target)


def _is_python_int(step) -> bool:
  return isinstance(step, (int, np.integer)) and not isinstance(step, bool)


def stage_index_at(table: Sequence[Stage], step):
  """Index of the stage active at `step`.

  A Python int step gives a Python int (for host-side control flow); anything else (a traced or
  concrete jax value) gives a jnp int32, so the lookup also works inside `jit`. Steps before 0 map
  to stage 0 in both paths, because a jitted lookup cannot raise.
  """
  starts = [s.start_step for s in table]
  if _is_python_int(step):
    return max(bisect.bisect_right(starts, int(step)) - 1, 0)
  idx = jnp.searchsorted(jnp.asarray(starts, jnp.int32), jnp.asarray(step, jnp.int32),
                         side="right") - 1
  return jnp.maximum(idx, 0).astype(jnp.int32)


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


def naive_latent_weight_fn(config: ml_collections.ConfigDict) -> Callable:
  """Jittable `step -> weight` for the naive-latent loss (collapse ablation).

  "constant": always `weight`. "cosine": 0.5 * (1 - cos(pi * step / total_steps)) * weight, rising
  from 0 at step 0 to `weight` at total_steps and held there afterwards, so the latent loss only
  takes over once the pixel loss has shaped the encoder.
  """
  nl = config.naive_latent
  weight, total = float(nl.weight), int(config.total_steps)
  plan.fields.choice(config, "naive_latent.weight_schedule", plan.options.WEIGHT_SCHEDULES)
  if nl.weight_schedule == "constant":
    def constant(step):
      del step
      return jnp.asarray(weight, jnp.float32)
    return constant

  def cosine(step):
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total, 1), 0.0, 1.0)
    return weight * 0.5 * (1.0 - jnp.cos(jnp.pi * progress))
  return cosine


def format_table(table: Sequence[Stage], total_steps: int) -> str:
  """Human-readable freeze table, printed at the start of training.

  "to step" is exclusive: a stage runs for steps [from, to). The last stage ends at total_steps.
  """
  if not table:
    raise ValueError("empty freeze table")
  header = ("stage", "from step", "to step", "frozen blocks", "target", "steps")
  rows = []
  for i, stage in enumerate(table):
    stop = table[i + 1].start_step if i + 1 < len(table) else total_steps
    rows.append((str(i), str(stage.start_step), str(stop), str(stage.frozen_layers),
                 stage.target, str(stop - stage.start_step)))
  widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header))]

  def fmt(row):
    # Numbers right-aligned, the target name left-aligned, as usual for tables of numbers.
    cells = [cell.ljust(w) if c == 4 else cell.rjust(w)
             for c, (cell, w) in enumerate(zip(row, widths))]
    return "  ".join(cells).rstrip()
  return "\n".join([fmt(header)] + [fmt(r) for r in rows])
