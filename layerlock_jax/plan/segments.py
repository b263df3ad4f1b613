"""Blockwise SSL's plan: the encoder cut into segments, and the sequential regime's stages.

A *segment* is a contiguous run of encoder blocks (layers) with its own decoder, pixel head and
loss (blockwise.py). The encoder's L blocks are cut into n segments at cumulative `boundaries`
b_1 < ... < b_n = L (b_0 = 0); segment j is blocks b_{j-1}+1 .. b_j. ``concurrent`` and ``e2e``
train every segment in one stage, (0, 0, "pixels"). ``sequential`` has one stage per segment:
segment j starts at the sum of the budgets of segments 1..j-1 (``blockwise.sequential_steps``,
default an even split of total_steps, the remainder to the last segment) with ``frozen_layers`` =
b_{j-1}, the number of blocks before it, and target ``"segment_{j}_pixels"``. Segment j < n trains
exactly its budget; the last one trains to the end of the run (the budgets may sum to less than
total_steps).
"""
from __future__ import annotations

from typing import Any

from layerlock_jax.plan.fields import choice, fail, get, integer, is_int, is_seq
from layerlock_jax.plan import options
from layerlock_jax.plan.stages import PIXELS, Stage, segment_name, encoder_depth, method_enabled


def enabled(config: Any) -> bool:
  return method_enabled(config, "blockwise")


def boundaries(config: Any, depth: int | None = None) -> tuple[int, ...]:
  """Cumulative segment ends (b_1, ..., b_n = encoder depth).

  `blockwise.boundaries` when given (uneven segments, e.g. (2, 6, 12)), else num_segments equal
  ones.
  """
  enc = encoder_depth(config) if depth is None else depth
  bounds = get(config, "blockwise.boundaries")
  if not is_seq(bounds):
    raise fail("blockwise.boundaries", bounds, "is not a sequence of cumulative segment ends",
               f"pass e.g. --config.blockwise.boundaries='(2, 6, {enc})'")
  if len(bounds):
    if (not all(is_int(b) for b in bounds) or bounds[0] < 1 or bounds[-1] != enc
        or any(b <= a for a, b in zip(bounds, bounds[1:]))):
      raise fail("blockwise.boundaries", tuple(bounds), "must be strictly increasing integers "
                 f">= 1 ending at the encoder depth {enc}",
                 f"pass e.g. --config.blockwise.boundaries='({enc // 2}, {enc})'")
    return tuple(int(b) for b in bounds)
  n = integer(config, "blockwise.num_segments", lo=1, hi=enc)
  if enc % n:
    raise fail("blockwise.num_segments", n, f"does not divide the encoder depth {enc}",
               f"use one of {[d for d in range(1, enc + 1) if enc % d == 0]} or give uneven "
               "segments with --config.blockwise.boundaries")
  return tuple(enc * j // n for j in range(1, n + 1))


def sequential_budgets(config: Any, num_segments: int) -> tuple[int, ...]:
  """Steps per segment in the sequential regime (see the module docstring)."""
  total = get(config, "total_steps")
  steps = get(config, "blockwise.sequential_steps")
  if not is_seq(steps):
    raise fail("blockwise.sequential_steps", steps, "is not a sequence of steps per segment",
               "pass e.g. --config.blockwise.sequential_steps='(100, 100)'")
  if not len(steps):
    if total < num_segments:
      raise fail("total_steps", total, f"cannot give each of {num_segments} segments a step in the "
                 "sequential regime", f"pass --config.total_steps >= {num_segments}")
    even = (total // num_segments,) * (num_segments - 1)
    return even + (total - sum(even),)
  if (len(steps) != num_segments or not all(is_int(s) and s >= 1 for s in steps)
      or sum(steps) > total):
    raise fail("blockwise.sequential_steps", tuple(steps), f"must be {num_segments} budgets (one "
               f"per segment), each >= 1, summing to <= total_steps={total}",
               "pass e.g. --config.blockwise.sequential_steps="
               f"'{tuple([max(total // num_segments, 1)] * num_segments)}' or () for an even split")
  return tuple(int(s) for s in steps)


def sequential_starts(config: Any, num_segments: int) -> tuple[int, ...]:
  """First step of each segment's stage in the sequential regime (segment 1 starts at 0)."""
  starts, step = [], 0
  for budget in sequential_budgets(config, num_segments):
    starts.append(step)
    step += budget
  return tuple(starts)


def blockwise_table(config: Any, depth: int | None = None) -> tuple[Stage, ...]:
  """Stages of a blockwise run (see the module docstring)."""
  regime = choice(config, "blockwise.regime", options.BLOCKWISE_REGIMES)
  if regime != "sequential":
    return (Stage(start_step=0, frozen_layers=0, target=PIXELS),)
  bounds = boundaries(config, depth)
  starts = sequential_starts(config, len(bounds))
  return tuple(Stage(start, lo, f"{segment_name(j)}_pixels")
               for j, (start, lo) in enumerate(zip(starts, (0,) + bounds[:-1]), start=1))


def check_blockwise(config: Any) -> None:
  """Everything a blockwise config must satisfy before a run starts, first problem raised."""
  if not enabled(config):
    return
  for other in ("layerlock", "naive_latent"):
    if get(config, f"{other}.enabled"):
      raise fail("blockwise.enabled", True, f"together with {other}.enabled=True mixes two "
                 "training methods (blockwise trains each segment by its own pixel loss)",
                 f"enable only one of --config.blockwise.enabled / --config.{other}.enabled")
  regime = choice(config, "blockwise.regime", options.BLOCKWISE_REGIMES)
  if get(config, "model.decoder.type") != "light":
    raise fail("model.decoder.type", get(config, "model.decoder.type"),
               "cannot be a per-segment decoder: the query decoder borrows the last encoder blocks",
               "use --config.model.decoder.type=light with blockwise.enabled")
  if get(config, "model.final_norm"):
    raise fail("model.final_norm", True, "has no place in blockwise training (every segment "
               "feeds its own decoder directly)", "use --config.model.final_norm=False")
  bounds = boundaries(config)
  if regime == "sequential":
    sequential_budgets(config, len(bounds))
