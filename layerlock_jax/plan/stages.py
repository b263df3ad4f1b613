"""The vocabulary of a run's stages: encoder depth, the stage records, and the names used for them.

Names. A *block* (or layer) is one transformer block of the encoder. LayerLock's latent target
taken from the output of block k is ``"block_{k}"``. Blockwise SSL cuts the encoder into
contiguous *segments* of blocks, each with its own decoder and loss; segment j is keyed
``"segment_{j}"`` in the per-segment parameter trees and metrics (``"segment_{j}_loss"``).
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Any

PIXELS = "pixels"  # the target of every stage that predicts pixels
# Blockwise per-segment parameter trees. Their names sort before "embed" and "encoder", as the
# parameter tree's leaf order (the summation order of the global gradient norm) depends on it.
DECODERS, HEADS = "blockwise_decoders", "blockwise_heads"
PER_SEGMENT_GROUPS = (DECODERS, HEADS)


def encoder_depth(config: Any) -> int:
  """Blocks of the encoder proper: all of model.depth, minus the last decoder.depth blocks that the
  4DS "query" decoder borrows. LayerLock freezes (and naive_latent reads) only encoder blocks.

  Item access, so it works on ConfigDicts and plain dicts alike.
  """
  model = config["model"]
  if model["decoder"]["type"] == "query":
    return model["depth"] - model["decoder"]["depth"]
  return model["depth"]


def query_decoder_depth(config: Any) -> int:
  """Backbone blocks the query decoder borrows after the encoder (0 for the light decoder)."""
  model = config["model"]
  return model["decoder"]["depth"] if model["decoder"]["type"] == "query" else 0


def block_target(k: int) -> str:
  """Name of the latent target taken from the output of encoder block k (1-based)."""
  return f"block_{k}"


def segment_name(j: int) -> str:
  """Key of blockwise segment j (1-based) in the per-segment parameter trees and metric names."""
  return f"segment_{j}"


def method_enabled(config: Any, section: str) -> bool:
  """Whether an optional training method's section exists and is on (older configs lack some)."""
  return bool(config[section]["enabled"]) if section in config else False


@dataclasses.dataclass(frozen=True)
class Stage:
  """A row of the freeze table: from `start_step` on, `frozen_layers` leading blocks are frozen."""
  start_step: int
  frozen_layers: int
  target: str


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """What the compiled train step of one stage must do (hashable: a jit cache key)."""
  frozen_layers: int = 0     # k: encoder blocks 1..k frozen
  latent: bool = False       # a latent loss is active (LayerLock target or naive latent)
  pixel_loss: bool = True    # the pixel loss is active
  target: str = "pixels"     # human-readable target name, for logs
  # Blockwise SSL; the defaults mean "not blockwise" and leave every other path unchanged.
  idle_layers: int = 0       # the last encoder blocks, neither run nor trained (held frozen)
  regime: str = ""           # "" (not blockwise) | concurrent | sequential | e2e
  boundaries: tuple[int, ...] = ()  # cumulative segment ends b_1 < ... < b_n = encoder depth
  active_segment: int = 0    # sequential: the one segment in training (1-based); 0: every one
  # The method whose loss the step computes: "mae" (pixel reconstruction, with LayerLock's or the
  # naive baseline's latent targets: methods/layerlock.py) | "blockwise" | "vjepa".
  method: str = "mae"


def stage_index_at(table, step: int) -> int:
  """Index of the stage of `table` (Stage rows ordered by start step) active at `step`; steps
  before 0 map to stage 0."""
  starts = [s.start_step for s in table]
  return max(bisect.bisect_right(starts, int(step)) - 1, 0)


def format_table(table, total_steps: int) -> str:
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
