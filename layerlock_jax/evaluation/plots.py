"""PNG figures of a run and of its depth-wise evaluation.

Figures are built with matplotlib's object API on an Agg canvas (`Figure` + `FigureCanvasAgg`),
never pyplot: pyplot keeps global state and picks a GUI backend, which breaks on headless hosts and
when several figures are made from threads. Every function takes plain dicts (as written to JSON),
writes one PNG and returns its path.
"""
import json
import math
import os
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 110


def save(fig: Figure, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  FigureCanvasAgg(fig)
  fig.tight_layout()
  fig.savefig(path, dpi=_DPI)
  return path


def finite(values) -> np.ndarray:
  """Floats with None / non-numbers (how JSON writes NaN here) as NaN, so lines just break."""
  return np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                   for v in values], dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# Loss curve with freeze-stage boundaries.
# ------------------------------------------------------------------------------------------------


def read_metrics(path: str) -> list[dict[str, Any]]:
  """Rows of a metrics.jsonl; torn or non-JSON lines (a killed run) are skipped."""
  rows = []
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue
      if isinstance(row, dict) and "step" in row:
        rows.append(row)
  return rows


def stages_from_metrics(rows: Sequence[dict]) -> list[tuple[int, int, str]]:
  """(start step, frozen blocks, target) per stage, inferred from logged rows.

  Rows are only logged every log_every steps, so a switch is placed at the first logged step of
  the new stage (up to log_every late). Pass the exact table (plan.freeze_table) when the
  config is at hand.
  """
  stages = []
  for row in rows:
    if "frozen_layers" not in row:
      continue
    key = (int(row["frozen_layers"]), str(row.get("target", "")))
    if not stages or (stages[-1][1], stages[-1][2]) != key:
      stages.append((int(row["step"]), *key))
  if stages:
    stages[0] = (0, stages[0][1], stages[0][2])
  return stages


def plot_loss_curve(rows: Sequence[dict], path: str, *,
                    stages: Sequence[tuple[int, int, str]] | None = None,
                    title: str = "training loss") -> str:
  """Loss (and its pixel / latent parts when logged) against step, one vertical line per stage
  switch labelled with the number of frozen blocks and the target."""
  rows = [r for r in rows if isinstance(r.get("loss"), (int, float))]
  if not rows:
    raise ValueError("no rows with a numeric 'loss'")
  steps = np.array([r["step"] for r in rows])
  fig = Figure(figsize=(8, 4.5))
  ax = fig.add_subplot(1, 1, 1)
  for key, style in (("loss", "-"), ("pixel_loss", "--"), ("latent_loss", ":")):
    values = finite([r.get(key) for r in rows])
    if key != "loss" and (np.all(np.isnan(values)) or np.allclose(values, finite(
        [r["loss"] for r in rows]), equal_nan=True)):
      continue  # absent, or identical to the total (pure pixel stages): no second line
    ax.plot(steps, values, style, label=key)
  if stages is None:
    stages = stages_from_metrics(rows)
  ymax = ax.get_ylim()[1]
  for start, frozen, target in stages[1:]:
    ax.axvline(start, color="grey", lw=0.8, ls="--")
    ax.text(start, ymax, f" k={frozen}\n {target}", fontsize=7, va="top", color="dimgrey")
  # Loss spans an order of magnitude early on; log scale keeps the late (interesting) part legible.
  if np.nanmin(finite([r["loss"] for r in rows])) > 0:
    ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.set_title(title + (f" ({len(stages)} freeze stages)" if len(stages) > 1 else ""))
  ax.legend(loc="upper right", fontsize=8)
  ax.grid(alpha=0.3)
  return save(fig, path)


# ------------------------------------------------------------------------------------------------
# Depth-wise results (the dict of depthwise.depthwise_analysis).
# ------------------------------------------------------------------------------------------------


def _depth_axis(ax, result):
  ax.set_xticks(result["blocks"])
  ax.set_xticklabels([n.replace("block_", "b") for n in result["block_names"]], fontsize=8)
  ax.set_xlabel("depth (embed = patch embedding, bj = output of block j)")
  ax.grid(alpha=0.3)


def plot_probe_accuracy(result: dict, path: str, *, reference: dict | None = None,
                        reference_label: str = "random init",
                        title: str = "decodability per block") -> str:
  """Linear-probe accuracy (left) and kNN top-1 (right) per depth, one colour per task; dotted
  horizontal lines are each task's chance level; stars are attentive-probe accuracies; a
  `reference` result (e.g. the same model at random initialisation) is drawn thin and dashed."""
  fig = Figure(figsize=(12, 4.5))
  panels = (("linear", "linear probe (mean-pooled tokens)"), ("knn_top1", "kNN retrieval top-1"))
  for p, (key, name) in enumerate(panels):
    ax = fig.add_subplot(1, 2, p + 1)
    for i, (task, t) in enumerate(result["tasks"].items()):
      colour = f"C{i}"
      ax.plot(result["blocks"], finite(t[key]), "o-", color=colour, label=task)
      ax.axhline(t["chance"], color=colour, ls=":", lw=1)
      if reference is not None and task in reference.get("tasks", {}):
        ax.plot(reference["blocks"], finite(reference["tasks"][task][key]), "--", color=colour,
                lw=1, alpha=0.7, label=f"{task} ({reference_label})")
      if key == "linear":
        for block, acc in t.get("attentive", {}).items():
          ax.plot([int(block)], [acc], "*", color=colour, ms=12,
                  label=f"{task} attentive" if int(block) == max(map(int, t["attentive"])) else None)
    _depth_axis(ax, result)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("test accuracy")
    ax.set_title(name)
    if p == 0:
      ax.legend(fontsize=7, ncol=2)
  fig.suptitle(title + " (dotted: chance)")
  return save(fig, path)


def plot_cka(result: dict, path: str, *, title: str = "CKA between depths") -> str:
  """Heatmaps of the linear and RBF CKA matrices, every cell annotated."""
  keys = [k for k in ("linear_cka", "rbf_cka") if k in result]
  if not keys:
    raise ValueError("result has no CKA matrices")
  names = [n.replace("block_", "b") for n in result["block_names"]]
  fig = Figure(figsize=(5.5 * len(keys), 4.8))
  for p, key in enumerate(keys):
    ax = fig.add_subplot(1, len(keys), p + 1)
    mat = np.array([finite(r) for r in result[key]])
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)))
    ax.set_yticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    if len(names) <= 16:
      for i in range(len(names)):
        for j in range(len(names)):
          if not math.isnan(mat[i, j]):
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if mat[i, j] > 0.6 else "white")
    ax.set_title(key.replace("_", " "))
    fig.colorbar(im, ax=ax, fraction=0.046)
  fig.suptitle(title)
  return save(fig, path)


def plot_collapse(result: dict, path: str, *, reference: dict | None = None,
                  reference_label: str = "random init",
                  title: str = "collapse statistics per block") -> str:
  """Effective rank, normalised per-dimension std and token cosine similarity per depth. Red
  crosses mark depths that `collapse_statistics` flags; dashed horizontal lines are the flag's
  thresholds (effective rank 2, normalised std 0.05)."""
  panels = (("effective_rank", "effective rank (pooled)", 2.0),
            ("pooled_normalized_std", "normalised std (pooled, ~1 healthy)", 0.05),
            ("token_cosine_similarity", "mean token cosine similarity", None))
  fig = Figure(figsize=(13, 4))
  collapsed = [j for j, s in zip(result["blocks"], result["collapse"]) if s.get("collapsed")]
  for p, (key, name, threshold) in enumerate(panels):
    ax = fig.add_subplot(1, 3, p + 1)
    values = finite([s.get(key) for s in result["collapse"]])
    ax.plot(result["blocks"], values, "o-", color="C0", label="model")
    if reference is not None:
      ref = finite([s.get(key) for s in reference["collapse"]])
      ax.plot(reference["blocks"], ref, "--", color="C7", label=reference_label)
    if threshold is not None:
      ax.axhline(threshold, color="red", ls="--", lw=0.8, label="collapse threshold")
    if collapsed:
      ax.plot(collapsed, values[collapsed], "x", color="red", ms=10, mew=2, label="collapsed")
    _depth_axis(ax, result)
    ax.set_title(name, fontsize=10)
    ax.set_ylim(bottom=0)
    if p == 0:
      ax.legend(fontsize=7)
  verdict = (f"COLLAPSED at {len(collapsed)} of {len(result['blocks'])} depths" if collapsed
             else "no depth flagged as collapsed")
  fig.suptitle(f"{title} - {verdict}\n(flag: normalised std < 0.05 or effective rank < 2)",
               fontsize=11)
  return save(fig, path)


def plot_convergence(result: dict, path: str,
                     title: str = "final loss after freezing blocks <= L at step T") -> str:
  """LayerLock's convergence-order grid: relative final-loss increase over the unfrozen baseline,
  (final - baseline) / baseline, for each (L, T) cell (rows L, columns T)."""
  layers, steps = result["layers"], result["steps"]
  base = result["baseline"]["final_loss"]
  mat = np.full((len(layers), len(steps)), np.nan)
  for cell in result["cells"]:
    if cell.get("final_loss") is not None:
      mat[layers.index(cell["layers"]), steps.index(cell["step"])] = (
          (cell["final_loss"] - base) / base)
  fig = Figure(figsize=(1.3 * len(steps) + 3, 0.9 * len(layers) + 2.2))
  ax = fig.add_subplot(1, 1, 1)
  bound = max(1e-3, float(np.nanmax(np.abs(mat)))) if np.isfinite(mat).any() else 1.0
  im = ax.imshow(mat, cmap="RdYlGn_r", vmin=-bound, vmax=bound, aspect="auto")
  for i in range(len(layers)):
    for j in range(len(steps)):
      if not math.isnan(mat[i, j]):
        ax.text(j, i, f"{100 * mat[i, j]:+.1f}%", ha="center", va="center", fontsize=8)
  ax.set_xticks(range(len(steps)))
  ax.set_xticklabels([str(s) for s in steps])
  ax.set_yticks(range(len(layers)))
  ax.set_yticklabels([str(l) for l in layers])
  ax.set_xlabel("freeze step T")
  ax.set_ylabel("frozen blocks L")
  ax.set_title(f"{title}\n(baseline final loss {base:.4g}; green: freezing was free)", fontsize=10)
  fig.colorbar(im, ax=ax, label="relative final-loss increase")
  return save(fig, path)
