"""LayerLock freeze schedule, learning-rate schedule and naive-latent loss weight.

Everything here is a pure function of the config (plus the encoder depth), computed once at start-up
into a small immutable table. The train loop uses the table in two ways: in Python, to decide when to
switch to a new `jit` specialisation (the number of frozen blocks is static, see
../shared/research/papers.md §1.3), and under `jit`, where the LR schedule looks up the current stage
from a traced step.

Semantics
---------
Stages. A stage is identified by k, the number of frozen *leading* encoder blocks. Stage 0 is the
pixel stage: nothing is frozen and the target is pixels. For k >= 1 the target is the output of the
k-th block (1-based), named ``"block_{k}"``, when ``config.layerlock.target == "latent"`` (LayerLock).
With ``target == "pixel"`` (progressive freezing with the MAE pixel target only, the accelerated-MAE
baseline) the target stays ``"pixels"`` in every stage.

Cap. K_max = ``config.layerlock.max_frozen`` when it is >= 0, else
floor(``max_frozen_fraction`` * encoder_depth). It is clipped to encoder_depth - 1, because at least
one block has to remain trainable for there to be anything left to learn. ``encoder_depth`` is an
argument, not ``config.model.depth``: a decoder that borrows the last backbone blocks (4DS "query"
decoder) shortens the encoder that can be frozen.

Rule-based schedule (``config.layerlock.explicit`` empty). The first freeze event happens at
``pixel_steps`` (``first_freeze == "end_of_pixel"``) or at ``pixel_steps + interval``
(``"one_interval_later"``); the paper is ambiguous between the two (papers.md §5.2). Every further
``interval`` steps another event follows. Each event freezes ``jump`` more blocks, clipped to K_max,
and the events stop once K_max is reached. For ViT-G (pixel 160K, interval 10K, jump 1, 32 of 48)
that gives 32 events, the last at 470K (end_of_pixel) or 480K (one_interval_later).

Explicit schedule (``config.layerlock.explicit`` non-empty). A sequence of (step, k) pairs used as
given, without applying any rule: steps strictly increasing and >= 1 (step 0 belongs to the pixel
stage), k strictly increasing with 1 <= k <= K_max. Anything else is a ValueError naming the field.

In both cases, stages starting at or after ``config.total_steps`` are dropped: they would never run,
and dropping them keeps a run shortened with ``--config.total_steps`` valid. With
``config.layerlock.enabled == False`` the table is the single pixel stage.

Learning rate. Linear warmup from 0 (at step 0) to ``optimizer.lr`` (at ``warmup_steps``), then a
cosine decay to ``min_lr`` at ``total_steps`` (held at ``min_lr`` afterwards); this is the same shape
as ``optax.warmup_cosine_decay_schedule``. On top of it, at every stage boundary where the *target*
changes (pixels -> block_1 -> block_2 ...), the LR is warmed up again ("mini-warmup", papers.md §1.3
item 6): it is multiplied by min(1, (step - boundary + 1) / mini_warmup_steps) for the most recent
such boundary. The ``+ 1`` makes the first step of a new stage take a small non-zero step instead of a
wasted zero one. The base cosine keeps running underneath: the mini-warmup only scales it down for a
while, it neither pauses nor restarts the decay, so the total LR budget of a run does not depend on
how many switches it has. Boundaries where only freezing happens (target stays "pixels") get no
mini-warmup, since the loss landscape does not change there. ``mini_warmup_steps == 0`` disables it.

Blockwise SSL (``config.blockwise.enabled``, layerlock_jax/blockwise.py). ``concurrent`` and ``e2e``
are one stage, (0, 0, "pixels"). ``sequential`` has one stage per block: block j starts at the sum
of the budgets of blocks 1..j-1 (``blockwise.sequential_steps``, default an even split of
total_steps) with ``frozen_layers`` = b_{j-1}, the number of layers before it, and target
``"block_{j}_pixels"``. Its learning rate restarts in every stage: each block gets a compressed
copy of the run's schedule over its own window (warmup of the same *fraction* of the window as
warmup_steps is of total_steps, then cosine to min_lr at the window's end) [I: the paper's
sequential protocol is unknown]. One global cosine would hand the last blocks only the tail of
the decay, so block depth and learning rate would be confounded.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Callable, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from layerlock_jax import blockwise

PIXELS = "pixels"
_FIRST_FREEZE = ("end_of_pixel", "one_interval_later")
_TARGETS = ("latent", "pixel")
_WEIGHT_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One row of the freeze table: from `start_step` on, `frozen_layers` leading blocks are frozen."""
  start_step: int
  frozen_layers: int
  target: str


def block_target(k: int) -> str:
  """Name of the latent target taken from the output of block k (1-based)."""
  return f"block_{k}"


def frozen_cap(config: ml_collections.ConfigDict, encoder_depth: int) -> int:
  """K_max: the most blocks that may ever be frozen (see module docstring)."""
  if encoder_depth < 1:
    raise ValueError(f"encoder_depth must be >= 1, got {encoder_depth}")
  ll = config.layerlock
  if ll.max_frozen >= 0:
    cap = int(ll.max_frozen)
  else:
    frac = float(ll.max_frozen_fraction)
    if not 0.0 <= frac <= 1.0:
      raise ValueError(f"config.layerlock.max_frozen_fraction must be in [0, 1], got {frac}")
    # The epsilon protects against products such as 0.29 * 100 = 28.999999999999996, which a plain
    # floor would turn into 28 although the user meant 29.
    cap = math.floor(frac * encoder_depth + 1e-9)
  return min(cap, encoder_depth - 1)


def _target_for(k: int, target_mode: str) -> str:
  if k == 0 or target_mode == "pixel":
    return PIXELS
  return block_target(k)


def _rule_events(ll: ml_collections.ConfigDict, cap: int) -> list[tuple[int, int]]:
  """(step, k) freeze events from the pixel_steps / interval / jump rule, not yet cut at total."""
  if ll.first_freeze not in _FIRST_FREEZE:
    raise ValueError(
        f"config.layerlock.first_freeze must be one of {_FIRST_FREEZE}, got {ll.first_freeze!r}")
  if ll.interval < 1:
    raise ValueError(f"config.layerlock.interval must be >= 1, got {ll.interval}")
  if ll.jump < 1:
    raise ValueError(f"config.layerlock.jump must be >= 1, got {ll.jump}")
  if ll.pixel_steps < 0:
    raise ValueError(f"config.layerlock.pixel_steps must be >= 0, got {ll.pixel_steps}")
  first = ll.pixel_steps + (ll.interval if ll.first_freeze == "one_interval_later" else 0)
  if cap > 0 and first < 1:
    # A freeze at step 0 would leave the pixel stage empty, and the target of the first latent
    # stage would be the output of an untrained block.
    raise ValueError("the first freeze event must be at step >= 1: set config.layerlock.pixel_steps "
                     "> 0 or first_freeze='one_interval_later'")
  events, k, step = [], 0, first
  while k < cap:
    k = min(k + ll.jump, cap)
    events.append((int(step), int(k)))
    step += ll.interval
  return events


def _explicit_events(explicit: Sequence, cap: int,
                     name: str = "config.layerlock.explicit") -> list[tuple[int, int]]:
  """Validated (step, k) pairs from config.layerlock.explicit (or decided by the trigger)."""
  events = []
  for entry in explicit:
    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
      raise ValueError(f"{name}: every entry must be a (step, k) pair, got {entry!r}")
    step, k = entry
    if isinstance(step, bool) or isinstance(k, bool) or not (
        isinstance(step, (int, np.integer)) and isinstance(k, (int, np.integer))):
      raise ValueError(f"{name}: step and k must be integers, got {entry!r}")
    events.append((int(step), int(k)))
  for i, (step, k) in enumerate(events):
    if step < 1:
      raise ValueError(f"{name}: steps must be >= 1 (step 0 is the pixel stage), got {step}")
    if not 1 <= k <= cap:
      raise ValueError(f"{name}: k must be in [1, {cap}] (the frozen-block cap), got {k}")
    if i > 0 and step <= events[i - 1][0]:
      raise ValueError(f"{name}: steps must be strictly increasing, got {step} after "
                       f"{events[i - 1][0]}")
    if i > 0 and k <= events[i - 1][1]:
      raise ValueError(f"{name}: k must be strictly increasing, got {k} after {events[i - 1][1]}")
  return events


def freeze_table(config: ml_collections.ConfigDict, encoder_depth: int,
                 decided: Sequence = ()) -> tuple[Stage, ...]:
  """All stages of the run, ordered by start step; the first is (0, 0, "pixels").

  With ``config.layerlock.trigger == "convergence"`` the events are not known in advance: `decided`
  holds the (step, k) events the convergence trigger (freeze_trigger.py) has decided so far, and the
  table is the one an explicit schedule with those events would give.
  """
  pixel_stage = Stage(start_step=0, frozen_layers=0, target=PIXELS)
  if blockwise.enabled(config):
    return blockwise_table(config, encoder_depth)
  ll = config.layerlock
  if not ll.enabled:
    return (pixel_stage,)
  if ll.target not in _TARGETS:
    raise ValueError(f"config.layerlock.target must be one of {_TARGETS}, got {ll.target!r}")
  cap = frozen_cap(config, encoder_depth)
  if ll.get("trigger", "schedule") == "convergence":
    events = _explicit_events(decided, cap, name="decided freeze events")
  elif len(ll.explicit) > 0:
    events = _explicit_events(ll.explicit, cap)
  else:
    events = _rule_events(ll, cap)
  stages = [pixel_stage]
  stages += [Stage(step, k, _target_for(k, ll.target))
             for step, k in events if step < config.total_steps]
  return tuple(stages)


def blockwise_table(config: ml_collections.ConfigDict, encoder_depth: int) -> tuple[Stage, ...]:
  """Stages of a blockwise run (see the module docstring)."""
  regime = config.blockwise.regime
  if regime not in blockwise.REGIMES:
    raise ValueError(f"config.blockwise.regime must be one of {blockwise.REGIMES}, got {regime!r}")
  if regime != "sequential":
    return (Stage(start_step=0, frozen_layers=0, target=PIXELS),)
  bounds = blockwise.block_boundaries(config, encoder_depth)
  starts = blockwise.sequential_starts(config, len(bounds))
  return tuple(Stage(start, lo, f"{blockwise.block_name(j)}_pixels")
               for j, (start, lo) in enumerate(zip(starts, (0,) + bounds[:-1]), start=1))


def stage_boundaries(table: Sequence[Stage]) -> frozenset[int]:
  """Steps at which a new stage starts (and the train step has to be re-specialised)."""
  return frozenset(s.start_step for s in table[1:])


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


def frozen_layers_at(table: Sequence[Stage], step):
  """Number of frozen blocks at `step`: Python int for a Python int step, else jnp int32."""
  idx = stage_index_at(table, step)
  if _is_python_int(step):
    return table[idx].frozen_layers
  return jnp.asarray([s.frozen_layers for s in table], jnp.int32)[idx]


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
  warmup, total = int(opt.warmup_steps), int(config.total_steps)
  if warmup < 0:
    raise ValueError(f"config.optimizer.warmup_steps must be >= 0, got {warmup}")
  if blockwise.enabled(config) and config.blockwise.regime == "sequential":
    return _per_stage_schedule(table, peak, end, warmup, total)
  mini = int(config.layerlock.mini_warmup_steps)
  if mini < 0:
    raise ValueError(f"config.layerlock.mini_warmup_steps must be >= 0, got {mini}")
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
  if nl.weight_schedule not in _WEIGHT_SCHEDULES:
    raise ValueError(f"config.naive_latent.weight_schedule must be one of {_WEIGHT_SCHEDULES}, "
                     f"got {nl.weight_schedule!r}")
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
