"""LayerLock's "layers converge in depth order" experiment (arXiv 2509.10156, Fig. 1).

  python -m experiments.convergence --config=configs/tiny.py --workdir=DIR \
      [--layers=1,2,4] [--steps=60,150,300]

Protocol: train an unfrozen MAE baseline; for every (L, T) in a grid, train the same run but freeze
blocks 1..L (and the patch embedding) at step T, keep training with the pixel target to the end,
and record the final loss. If it stays close to the baseline's, blocks <= L had converged by step
T. The expected picture is a staircase: the earliest "free" T grows with L.

How a cell is run: `train.run` on a copy of the config with an explicit one-event freeze schedule,
config.layerlock = (enabled, target="pixel", explicit=((T, L),)). Training is deterministic from
the seed (data order, masks = fold_in(seed, step), and the pixel-target schedule has no LR
re-warmup at a freeze), so the first T steps of a cell are the baseline's first T steps: training
from scratch is equivalent to restarting from a baseline checkpoint at T, and needs no checkpoint
plumbing. Each cell has its own workdir, and train.run resumes from a workdir's checkpoints, so an
interrupted experiment continues where it stopped.

"Final loss" is the mean logged loss over the last `tail_fraction` of training, not the single
last log line: one minibatch is noisy, while every cell sees the same batches and masks as the
baseline, so differences of tail means are comparable.
"""
import json
import logging
import os
from typing import Any, Callable, Sequence
from layerlock_jax.config.variants import baseline_config, frozen_config
from layerlock_jax.evaluation import plots
from layerlock_jax import plan

# A small CPU grid: for configs/tiny.py (6 blocks, 600 steps) this is 3 x 3 cells + the baseline,
# i.e. 10 runs of ~2.5 minutes on two cores.
DEFAULT_LAYERS = (1, 2, 4)
DEFAULT_STEP_FRACTIONS = (0.1, 0.25, 0.5)


def default_steps(total_steps: int, fractions: Sequence[float] = DEFAULT_STEP_FRACTIONS
                  ) -> tuple[int, ...]:
  """Freeze steps T as fractions of the run, rounded, at least 1, de-duplicated."""
  return tuple(sorted({max(1, int(round(f * total_steps))) for f in fractions}))


def grid_cells(layers: Sequence[int], steps: Sequence[int], *, total_steps: int,
               encoder_depth: int) -> tuple[list[tuple[int, int]], list[dict[str, Any]]]:
  """(runnable (L, T) cells in row-major order, skipped cells with the reason).

  A cell runs iff 1 <= L <= encoder_depth - 1 (at least one block must stay trainable, the same
  cap as the freeze schedule's) and 1 <= T < total_steps (step 0 is before any training; a freeze
  at or after the end never happens).
  """
  cells, skipped = [], []
  for l in sorted(set(int(x) for x in layers)):
    for t in sorted(set(int(x) for x in steps)):
      reason = None
      if not 1 <= l <= encoder_depth - 1:
        reason = f"L must be in [1, {encoder_depth - 1}]"
      elif not 1 <= t < total_steps:
        reason = f"T must be in [1, {total_steps})"
      if reason:
        skipped.append({"layers": l, "step": t, "reason": reason})
      else:
        cells.append((l, t))
  return cells, skipped


def final_loss(rows: Sequence[dict], total_steps: int, tail_fraction: float) -> float | None:
  """Mean 'loss' of the rows logged in the last `tail_fraction` of the run (at least the last)."""
  rows = [r for r in rows if isinstance(r.get("loss"), (int, float))]
  if not rows:
    return None
  start = total_steps * (1.0 - tail_fraction)
  tail = [r["loss"] for r in rows if r["step"] > start] or [rows[-1]["loss"]]
  return float(sum(tail) / len(tail))


def summarize_grid(baseline: dict[str, Any], cells: Sequence[dict[str, Any]], *,
                   skipped: Sequence[dict] = (), tail_fraction: float, free_tolerance: float,
                   total_steps: int, encoder_depth: int) -> dict[str, Any]:
  """The grid's result from the baseline's and the cells' `{"final_loss", ...}` records (cells
  also carry "layers" and "step"): relative increases, free flags, earliest free T per L."""
  base = baseline["final_loss"]
  results = []
  for cell in cells:
    cell = dict(cell)
    if cell.get("final_loss") is not None and base:
      cell["relative_increase"] = (cell["final_loss"] - base) / base
      cell["free"] = bool(cell["relative_increase"] <= free_tolerance)
    results.append(cell)
  used_layers = sorted({c["layers"] for c in results})
  used_steps = sorted({c["step"] for c in results})
  earliest = {}
  for l in used_layers:
    free = [c["step"] for c in results if c["layers"] == l and c.get("free")]
    earliest[str(l)] = min(free) if free else None
  return {"baseline": baseline, "layers": used_layers, "steps": used_steps, "cells": results,
          "skipped": list(skipped), "tail_fraction": tail_fraction,
          "free_tolerance": free_tolerance, "total_steps": int(total_steps),
          "encoder_depth": encoder_depth, "earliest_free_step": earliest}


def read_run(workdir: str, total_steps: int, tail_fraction: float) -> dict[str, Any]:
  """{"final_loss", "last_loss", "workdir"} of a finished run's metrics.jsonl."""
  path = os.path.join(workdir, "metrics.jsonl")
  rows = plots.read_metrics(path) if os.path.exists(path) else []
  loss = final_loss(rows, total_steps, tail_fraction)
  last = rows[-1]["loss"] if rows and isinstance(rows[-1].get("loss"), (int, float)) else None
  return {"final_loss": loss, "last_loss": last, "workdir": workdir}


def run_convergence_experiment(config, workdir: str, *, layers: Sequence[int] | None = None,
                               steps: Sequence[int] | None = None, tail_fraction: float = 0.1,
                               free_tolerance: float = 0.01,
                               run_fn: Callable[[Any, str], Any] | None = None) -> dict[str, Any]:
  """Runs the baseline and every (L, T) cell; writes workdir/convergence.json and .png.

  layers: L values (default DEFAULT_LAYERS); steps: T values (default: DEFAULT_STEP_FRACTIONS of
  config.total_steps). A cell counts as "free" when its final loss is within `free_tolerance`
  (relative) of the baseline's. `run_fn(config, workdir)` trains one run (default train.run; tests
  pass a stand-in). Returns the JSON-able result (`summarize_grid`):
    {"baseline": {...}, "layers": [...], "steps": [...], "cells": [{"layers", "step",
     "final_loss", "relative_increase", "free", ...}], "skipped": [...], "earliest_free_step":
     {L: smallest free T or None}}
  """
  if not 0.0 < tail_fraction <= 1.0:
    raise ValueError(f"tail_fraction must be in (0, 1], got {tail_fraction}")
  if run_fn is None:
    from layerlock_jax import train  # pylint: disable=g-import-not-at-top
    run_fn = train.run
  depth = plan.encoder_depth(config)
  layers = tuple(DEFAULT_LAYERS if layers is None else layers)
  steps = tuple(default_steps(config.total_steps) if steps is None else steps)
  cells, skipped = grid_cells(layers, steps, total_steps=config.total_steps, encoder_depth=depth)
  os.makedirs(workdir, exist_ok=True)

  def train_and_read(cfg, name):
    run_fn(cfg, os.path.join(workdir, name))
    return read_run(os.path.join(workdir, name), cfg.total_steps, tail_fraction)

  logging.info("convergence experiment: baseline + %d cells in %s", len(cells), workdir)
  baseline = train_and_read(baseline_config(config), "baseline")
  results = []
  for l, t in cells:
    logging.info("convergence cell: freeze blocks <= %d at step %d", l, t)
    cell = train_and_read(frozen_config(config, l, t), f"L{l}_T{t}")
    cell.update(layers=l, step=t)
    results.append(cell)
  result = summarize_grid(baseline, results, skipped=skipped, tail_fraction=tail_fraction,
                          free_tolerance=free_tolerance, total_steps=config.total_steps,
                          encoder_depth=depth)
  with open(os.path.join(workdir, "convergence.json"), "w") as f:
    json.dump(result, f, indent=2)
  if results and baseline["final_loss"] is not None:
    plots.plot_convergence(result, os.path.join(workdir, "convergence.png"))
  return result


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  f = flags.FLAGS
  out = run_convergence_experiment(
      f.config, f.workdir, layers=[int(x) for x in f.layers] or None,
      steps=[int(x) for x in f.steps] or None, tail_fraction=f.tail_fraction)
  print(f"baseline final loss {out['baseline']['final_loss']:.5g}")
  for cell in out["cells"]:
    print(f"L={cell['layers']} T={cell['step']}: final loss {cell['final_loss']:.5g} "
          f"({100 * cell.get('relative_increase', float('nan')):+.2f}%)")
  print("earliest free step per L:", out["earliest_free_step"])


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  # Flags only when run as a program (importing must not redefine --config next to main.py's).
  config_flags.DEFINE_config_file("config", None, "Config of the runs.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Experiment directory (one sub-directory per run).")
  flags.DEFINE_list("layers", [], f"L values (default {DEFAULT_LAYERS}).")
  flags.DEFINE_list("steps", [], f"T values (default {DEFAULT_STEP_FRACTIONS} of total_steps).")
  flags.DEFINE_float("tail_fraction", 0.1, "Final loss = mean over this last part of the run.")
  flags.mark_flags_as_required(["config", "workdir"])
  from layerlock_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
