"""Blockwise SSL's plan: the encoder cut into groups of blocks, and the sequential regime's stages.

The encoder's L blocks are cut into n contiguous groups at cumulative `boundaries`
b_1 < ... < b_n = L (b_0 = 0); group j is blocks b_{j-1}+1 .. b_j, with its own decoder and loss
(blockwise.py). ``concurrent`` and ``e2e`` train every group in one stage, (0, 0, "pixels").
``sequential`` has one stage per group: group j starts at the sum of the budgets of groups
1..j-1 (``blockwise.sequential_steps``, default an even split of total_steps, the remainder to
the last group) with ``frozen_layers`` = b_{j-1}, the number of blocks before it, and target
``"block_{j}_pixels"``. Group j < n trains exactly its budget; the last one trains to the end of
the run (the budgets may sum to less than total_steps).
"""
from __future__ import annotations

from typing import Any

from layerlock_jax.plan import options
from layerlock_jax.plan.fields import choice, fail, get, integer, is_int, is_seq
from layerlock_jax.plan.stages import PIXELS, Stage, block_name, encoder_depth, method_enabled


def enabled(config: Any) -> bool:
  return method_enabled(config, "blockwise")


def boundaries(config: Any, depth: int | None = None) -> tuple[int, ...]:
  """Cumulative group ends (b_1, ..., b_n = encoder depth).

  `blockwise.boundaries` when given (uneven groups, e.g. (2, 6, 12)), else num_blocks equal ones.
  """
  enc = encoder_depth(config) if depth is None else depth
  bounds = get(config, "blockwise.boundaries")
  if not is_seq(bounds):
    raise fail("blockwise.boundaries", bounds, "is not a sequence of cumulative block ends",
               f"pass e.g. --config.blockwise.boundaries='(2, 6, {enc})'")
  if len(bounds):
    if (not all(is_int(b) for b in bounds) or bounds[0] < 1 or bounds[-1] != enc
        or any(b <= a for a, b in zip(bounds, bounds[1:]))):
      raise fail("blockwise.boundaries", tuple(bounds), "must be strictly increasing integers "
                 f">= 1 ending at the encoder depth {enc}",
                 f"pass e.g. --config.blockwise.boundaries='({enc // 2}, {enc})'")
    return tuple(int(b) for b in bounds)
  n = integer(config, "blockwise.num_blocks", lo=1, hi=enc)
  if enc % n:
    raise fail("blockwise.num_blocks", n, f"does not divide the encoder depth {enc}",
               f"use one of {[d for d in range(1, enc + 1) if enc % d == 0]} or give uneven "
               "blocks with --config.blockwise.boundaries")
  return tuple(enc * j // n for j in range(1, n + 1))


def sequential_budgets(config: Any, num_blocks: int) -> tuple[int, ...]:
  """Steps per group in the sequential regime (see the module docstring)."""
  total = get(config, "total_steps")
  steps = get(config, "blockwise.sequential_steps")
  if not is_seq(steps):
    raise fail("blockwise.sequential_steps", steps, "is not a sequence of steps per block",
               "pass e.g. --config.blockwise.sequential_steps='(100, 100)'")
  if not len(steps):
    if total < num_blocks:
      raise fail("total_steps", total, f"cannot give each of {num_blocks} blocks a step in the "
                 "sequential regime", f"pass --config.total_steps >= {num_blocks}")
    even = (total // num_blocks,) * (num_blocks - 1)
    return even + (total - sum(even),)
  if (len(steps) != num_blocks or not all(is_int(s) and s >= 1 for s in steps)
      or sum(steps) > total):
    raise fail("blockwise.sequential_steps", tuple(steps), f"must be {num_blocks} budgets (one "
               f"per block), each >= 1, summing to <= total_steps={total}",
               "pass e.g. --config.blockwise.sequential_steps="
               f"'{tuple([max(total // num_blocks, 1)] * num_blocks)}' or () for an even split")
  return tuple(int(s) for s in steps)


def sequential_starts(config: Any, num_blocks: int) -> tuple[int, ...]:
  """First step of each group's stage in the sequential regime (group 1 starts at 0)."""
  starts, step = [], 0
  for budget in sequential_budgets(config, num_blocks):
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
  return tuple(Stage(start, lo, f"{block_name(j)}_pixels")
               for j, (start, lo) in enumerate(zip(starts, (0,) + bounds[:-1]), start=1))


def check_blockwise(config: Any) -> None:
  """Everything a blockwise config must satisfy before a run starts, first problem raised."""
  if not enabled(config):
    return
  for other in ("layerlock", "naive_latent"):
    if get(config, f"{other}.enabled"):
      raise fail("blockwise.enabled", True, f"together with {other}.enabled=True mixes two "
                 "training methods (blockwise trains each block by its own pixel loss)",
                 f"enable only one of --config.blockwise.enabled / --config.{other}.enabled")
  regime = choice(config, "blockwise.regime", options.BLOCKWISE_REGIMES)
  if get(config, "model.decoder.type") != "light":
    raise fail("model.decoder.type", get(config, "model.decoder.type"),
               "cannot be a per-block decoder: the query decoder borrows the last encoder blocks",
               "use --config.model.decoder.type=light with blockwise.enabled")
  if get(config, "model.final_norm"):
    raise fail("model.final_norm", True, "has no place in blockwise training (every block feeds "
               "its own decoder directly)", "use --config.model.final_norm=False")
  bounds = boundaries(config)
  if regime == "sequential":
    sequential_budgets(config, len(bounds))
