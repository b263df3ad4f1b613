"""The papers' claims as numbers and verdicts, computed from finished runs (experiments.reproduce).

Pure functions over plain dicts: a run's record (`run_record`: its final-encoder evaluation, its
metrics.jsonl and summary.json), in, a JSON-able claim out:
  {"claim": the paper's statement and number, "rule": how the verdict is decided,
   "verdict": "reproduced" | "partly reproduced" | "not reproduced" + the deciding numbers, ...}
Nothing here trains or evaluates; nothing is typed in by hand but the papers' reference numbers.

The headline probe is the 4DS evaluation's protocol: the attentive readout (learned-query
cross-attention, LayerNorm on each raw token) on the frozen block the 4DS evaluation code reads, at
0.95 of the depth (depthwise.readout_block: block 4 of 6), mean top-1 over the labelled tasks that
the random-init floor leaves (experiments/stats.py). It was not the harness's first headline: the
last block's attentive and linear probes came first, and the 0.95-depth readout replaced them after
their numbers had been seen; the readout table (the attentive readout with LayerNorm and with
per-dimension standardised tokens, and the linear probe on mean-pooled standardised features, each
at that block and at the last block) shows every probe the harness has reported. They can
disagree: a per-token LayerNorm keeps a vector shared by all tokens of a clip, per-dimension
standardisation removes the dataset-wide mean instead, and the linear probe rescales whatever
variance a representation has left.

Verdicts come from experiments/stats.py, rules fixed before the runs: paired per-seed differences
(arms of one seed share its data, initialisation and, for the forked arms, its MAE prefix), a
Student t-interval over >= stats.MIN_SEEDS seeds, each seed's number the mean over its probe seeds;
superiority for claims 4, 4b and 6, equivalence within +-stats.EQUIVALENCE_MARGIN for claims 2, 2b
and 5; a random-init floor at >= stats.MIN_INIT_SEEDS init seeds that makes an arm below it
"uninformative"; "inconclusive" where the interval, or the design, cannot decide.
"""
import json
import os
from typing import Any, Sequence

import numpy as np

from experiments import stats
from layerlock_jax import config_defaults
from layerlock_jax import flops
from layerlock_jax import schedule
from layerlock_jax.evaluation import depthwise
from layerlock_jax.evaluation import plots

# A probe "near chance": mean accuracy over tasks at most this far above the majority-class rate.
NEAR_CHANCE = 0.05
# The readout table: (probe key in probe_summary, label), each at two depths.
READOUTS = (("attentive", "attentive (LayerNorm)"),
            ("attentive_standardize", "attentive (standardised)"), ("linear", "linear"))
READOUT_DEPTHS = ("0.95", "last")
PROBE_KEYS = ("linear", "knn_top1", "attentive", "attentive_standardize")


# ------------------------------------------------------------------------------------------------
# Per-run records.
# ------------------------------------------------------------------------------------------------


def analytic_train_flops(config) -> float:
  """Model FLOPs of the whole run from its freeze table: sum over stages of steps x step FLOPs."""
  depth = config_defaults.encoder_depth(config)
  table = schedule.freeze_table(config, depth)
  ends = [s.start_step for s in table[1:]] + [config.total_steps]
  total = 0.0
  for stage, end in zip(table, ends):
    steps = max(0, min(end, config.total_steps) - stage.start_step)
    total += steps * flops.step_flops(config, stage.frozen_layers)["model_flops"]
  return total


def probe_summary(evaluation: dict[str, Any], block: int | None = None) -> dict[str, Any]:
  """Headline numbers of an evaluation (depthwise.evaluate_params result) at `block` (default:
  the last): per-task attentive / linear / kNN accuracy, their means, chance, margins over
  chance, and the collapse statistics of the last block."""
  block = evaluation["blocks"][-1] if block is None else block
  out: dict[str, Any] = {"block": block, "tasks": {}}
  # The headline readout, where the evaluation has it at this block: the mean over probe seeds.
  headline = evaluation.get("headline", {})
  seeds_mean = ({t: float(np.mean(v["accuracy"])) for t, v in headline["tasks"].items()}
                if headline.get("block") == block else {})
  for name, task in evaluation["tasks"].items():
    out["tasks"][name] = {"chance": task["chance"], "linear": task["linear"][block],
                          "knn_top1": task["knn_top1"][block],
                          "attentive": seeds_mean.get(name,
                                                      task.get("attentive", {}).get(str(block))),
                          "attentive_standardize":
                              task.get("attentive_standardize", {}).get(str(block))}
  for key in PROBE_KEYS:
    values = [t[key] for t in out["tasks"].values() if t[key] is not None]
    out[key] = float(np.mean(values)) if values else None
    margins = [t[key] - t["chance"] for t in out["tasks"].values() if t[key] is not None]
    out[f"{key}_over_chance"] = float(np.mean(margins)) if margins else None
  # Collapse is judged on the encoder's output (the last block), whichever block is probed.
  stats = evaluation["collapse"][evaluation["blocks"][-1]]
  out.update(effective_rank=stats.get("effective_rank"),
             normalized_std=stats.get("pooled_normalized_std"),
             collapsed=bool(stats.get("collapsed")))
  return out


def headline_block(evaluation: dict[str, Any], depth: int) -> int:
  """The headline readout's block; without one, the 0.95-depth block when the evaluation has an
  attentive probe there, else the last block (evaluations cached by older versions of the
  harness probed the last block only)."""
  if "headline" in evaluation:
    return int(evaluation["headline"]["block"])
  block = depthwise.readout_block(depth)
  tasks = evaluation["tasks"].values()
  return block if any(str(block) in t.get("attentive", {}) for t in tasks) else depth


def readouts(evaluation: dict[str, Any], depth: int) -> dict[str, dict[str, Any]]:
  """{"0.95": {probe: mean over tasks}, "last": {...}} for the probes of READOUTS."""
  blocks = {"0.95": depthwise.readout_block(depth), "last": depth}
  out = {}
  for label, block in blocks.items():
    summary = probe_summary(evaluation, block)
    out[label] = {"block": block, **{key: summary[key] for key, _ in READOUTS}}
  return out


def readout_table(arms: dict[str, Sequence[dict]]) -> dict[str, dict[str, Any]]:
  """arm -> {"<probe>@<depth>": seed mean (None where not measured)} over its records."""
  table = {}
  for arm, records in arms.items():
    if not records:
      continue
    row = {}
    for depth in READOUT_DEPTHS:
      for key, _ in READOUTS:
        values = [r["readouts"][depth][key] for r in records
                  if r["readouts"][depth][key] is not None]
        row[f"{key}@{depth}"] = float(np.mean(values)) if values else None
    table[arm] = row
  return table


def run_record(name: str, arm: str, seed: int, command: str, config, workdir: str,
               evaluation: dict[str, Any]) -> dict[str, Any]:
  """Everything the claims read about one finished run."""
  rows = plots.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  summary_path = os.path.join(workdir, "summary.json")
  summary = {}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
  depth = config_defaults.encoder_depth(config)
  train_rows = [r for r in rows if isinstance(r.get("loss"), (int, float))]
  eval_rows = [r for r in rows if any(k.startswith("eval/") for k in r)]
  return {
      "name": name, "arm": arm, "seed": seed, "command": command, "workdir": workdir,
      "eval_data_seed": evaluation.get("data_seed"),
      "encoder_depth": depth, "total_steps": int(config.total_steps),
      "probe": probe_summary(evaluation, headline_block(evaluation, depth)),
      "readouts": readouts(evaluation, depth), "evaluation": evaluation,
      "loss_curve": [[r["step"], r["loss"], r.get("frozen_layers", 0)] for r in train_rows],
      "spread_curve": [[r["step"], r["feature_spread"]] for r in train_rows
                       if isinstance(r.get("feature_spread"), (int, float))],
      "first_freeze": first_freeze_step(config),
      "freeze_stages": [[s.start_step, s.frozen_layers]
                        for s in schedule.freeze_table(config, depth)],
      "eval_curve": eval_rows,
      "train_seconds": (summary.get("final") or {}).get("train_seconds"),
      "programs": summary.get("programs", []),
      "analytic_train_flops": analytic_train_flops(config),
  }


def first_freeze_step(config) -> int | None:
  """The step of the freeze table's first freeze (None: the run never freezes)."""
  if not config.layerlock.enabled:
    return None
  table = schedule.freeze_table(config, config_defaults.encoder_depth(config))
  return next((s.start_step for s in table if s.frozen_layers > 0), None)


# A representation has "formed" once MAE's feature spread first reaches this fraction of its mean
# over the last third of training: the LayerLock paper freezes once the first layers have
# converged, and freezing blocks whose tokens are still one vector per clip hands every later
# block that vector as its target.
FORMED_FRACTION = 0.9


def formation_step(record: dict[str, Any]) -> dict[str, Any] | None:
  """When `record`'s feature spread first reached FORMED_FRACTION of its final-third mean."""
  curve = record.get("spread_curve") or []
  if not curve:
    return None
  tail = [v for step, v in curve if step > record["total_steps"] * 2 / 3]
  plateau = float(np.mean(tail)) if tail else float(curve[-1][1])
  step = next((s for s, v in curve if v >= FORMED_FRACTION * plateau), None)
  return {"plateau": plateau, "step": step}


def formation(mae: Sequence[dict], frozen: Sequence[dict]) -> dict[str, Any]:
  """When each MAE run's representation formed, beside the freezing arm's first freeze."""
  return {"fraction": FORMED_FRACTION, "mae": [formation_step(r) for r in mae],
          "first_freeze": sorted({r.get("first_freeze") for r in frozen
                                  if r.get("first_freeze") is not None})}


def run_summary(record: dict[str, Any]) -> dict[str, Any]:
  """The one-line view of a run for the report's run table."""
  probe = record["probe"]
  final = record["loss_curve"][-1][1] if record["loss_curve"] else None
  return {"name": record["name"], "command": record["command"], "final_loss": final,
          "attentive": probe["attentive"], "linear": probe["linear"]}


def _arm(records: Sequence[dict], key: str) -> dict[str, Any]:
  values = [r["probe"][key] for r in records if r["probe"][key] is not None]
  if not values:
    return {"per_seed": [], "mean": None, "range": None}
  return {"per_seed": values, "mean": float(np.mean(values)),
          "range": float(np.max(values) - np.min(values)) if len(values) > 1 else None}


# ------------------------------------------------------------------------------------------------
# Evidence: per-seed, per-task numbers of each arm and of the random-init encoders.
# ------------------------------------------------------------------------------------------------

# The probes a verdict can read: "attentive" (the headline readout, averaged over its probe seeds)
# and "linear_last" (the linear probe at the last block, claim 5's measure).
HEADLINE = "attentive"
LINEAR_LAST = "linear_last"


def task_values(evaluation: dict[str, Any], key: str = HEADLINE) -> dict[str, float]:
  """task -> the probe's accuracy on this evaluation. The headline readout is the mean over its
  probe seeds where the evaluation has them (`evaluation["headline"]`), else the attentive probe
  at the headline block (one probe seed)."""
  tasks = evaluation["tasks"]
  if key == LINEAR_LAST:
    return {t: float(v["linear"][-1]) for t, v in tasks.items()}
  if "headline" in evaluation:
    return {t: float(np.mean(v["accuracy"])) for t, v in evaluation["headline"]["tasks"].items()}
  block = headline_block(evaluation, evaluation["blocks"][-1])
  return {t: v.get("attentive", {}).get(str(block)) for t, v in tasks.items()}


def _as_list(reference) -> list[dict]:
  if reference is None:
    return []
  return list(reference) if isinstance(reference, (list, tuple)) else [reference]


def evidence(arms: dict[str, Sequence[dict]], reference, key: str = HEADLINE) -> dict[str, Any]:
  """What stats.judge reads (and what results.json keeps, so that anyone can judge again): per arm
  its seeds and per-task values per seed (records sorted by seed), random init's per-task values
  per init seed, the majority-class rate per task, the test clips per task, and whether every seed
  was scored on its own test clips."""
  inits = _as_list(reference)
  out: dict[str, Any] = {"probe": key, "arms": {}}
  first = None
  data_seeds = set()
  for name, records in arms.items():
    records = sorted(records, key=lambda r: r["seed"])
    if not records:
      continue
    first = first or records[0]
    per_seed = [task_values(r["evaluation"], key) for r in records]
    out["arms"][name] = {"seeds": [r["seed"] for r in records],
                         "tasks": {t: [v[t] for v in per_seed] for t in per_seed[0]},
                         "probe_seeds": [len(r["evaluation"].get("headline", {}).get(
                             "probe_seeds", [0])) for r in records]}
    data_seeds.update(r.get("eval_data_seed") for r in records)
  init_values = [task_values(e, key) for e in inits]
  out["random_init"] = {"seeds": [e.get("init_seed", i) for i, e in enumerate(inits)],
                        "tasks": {t: [v[t] for v in init_values] for t in
                                  (init_values[0] if init_values else {})}}
  ev = first["evaluation"] if first else (inits[0] if inits else {"tasks": {}})
  out["chance"] = {t: float(v["chance"]) for t, v in ev["tasks"].items()}
  out["num_test"] = int(ev.get("num_test") or 0)
  per_seed_sets = None not in data_seeds and len(data_seeds) > 1
  out["test_sets"] = "per_seed" if per_seed_sets else "shared"
  return out


def _judge(test: str, ev: dict[str, Any], base: str, new: str) -> dict[str, Any]:
  """stats.judge, or "not measured" when an arm has no runs."""
  if base not in ev["arms"] or new not in ev["arms"]:
    return {"base": base, "new": new, "verdict": "not measured", "why": "an arm has no runs"}
  return stats.judge(test, ev, base, new)


def describe(j: dict[str, Any], labels: dict[str, str] | None = None) -> str:
  """One line: the verdict, why, and the deciding numbers."""
  labels = labels or {}
  why = j["why"]
  for arm in sorted((j["base"], j["new"]), key=len, reverse=True):
    why = why.replace(f"{arm} on ", f"{labels.get(arm, arm)} on ")
  if "test" not in j:
    return f"{j['verdict']} ({why})"
  iv = j["test"]["interval"]
  side = (f"one-sided {100 * iv['level']:.0f}% bounds" if iv["sided"] == "one"
          else f"{100 * iv['level']:.0f}% interval")
  name = lambda a: labels.get(a, a)
  text = (f"{j['verdict']} ({why}; {name(j['new'])} - {name(j['base'])}: "
          f"{_fmt(iv['mean'], signed=True)}, {side} [{_fmt(iv['lower'], signed=True)}, "
          f"{_fmt(iv['upper'], signed=True)}], {iv['n']} paired seeds")
  if j.get("dropped_tasks"):
    text += "; tasks dropped at chance: " + ", ".join(j["dropped_tasks"])
  return text + ")"


def _difference(a: dict, b: dict) -> dict[str, Any]:
  """Descriptive b - a of two `_arm`s (not a verdict): the mean difference, with the paired 90%
  t-interval where both arms have the same number of seeds (per-seed values in seed order)."""
  if not a["per_seed"] or not b["per_seed"]:
    return {"delta": None, "lower": None, "upper": None, "n": 0}
  if len(a["per_seed"]) == len(b["per_seed"]):
    iv = stats.t_interval(stats.paired_differences(a["per_seed"], b["per_seed"]),
                          stats.EQUIVALENCE_LEVEL, "two")
    finite = np.isfinite(iv["lower"])
    return {"delta": iv["mean"], "lower": iv["lower"] if finite else None,
            "upper": iv["upper"] if finite else None, "n": iv["n"]}
  return {"delta": b["mean"] - a["mean"], "lower": None, "upper": None, "n": 0}


# ------------------------------------------------------------------------------------------------
# Claim 1: convergence order.
# ------------------------------------------------------------------------------------------------


def convergence_claim(grid: dict[str, Any]) -> dict[str, Any]:
  """Shallow blocks converge first: at every freeze step T, freezing more blocks costs at least
  as much final loss (pairs of L ordered), and the earliest free T does not fall with L."""
  inc = {(c["layers"], c["step"]): c.get("relative_increase") for c in grid["cells"]}
  pairs = ordered = 0
  for t in grid["steps"]:
    for i, l1 in enumerate(grid["layers"]):
      for l2 in grid["layers"][i + 1:]:
        a, b = inc.get((l1, t)), inc.get((l2, t))
        if a is None or b is None:
          continue
        pairs += 1
        ordered += int(a <= b)
  inf = float("inf")
  earliest = [grid["earliest_free_step"][str(l)] for l in grid["layers"]]
  steps_up = [((x if x is not None else inf), (y if y is not None else inf))
              for x, y in zip(earliest, earliest[1:])]
  staircase = all(x <= y for x, y in steps_up)
  # A visible staircase: deeper prefixes need a strictly later T somewhere on the grid.
  rises = any(x < y for x, y in steps_up)
  if pairs and ordered == pairs and staircase and rises:
    verdict = "reproduced"
  elif pairs and ordered * 2 > pairs:
    verdict = "partly reproduced"
  else:
    verdict = "not reproduced"
  verdict += f" ({ordered} of {pairs} (T, L < L') pairs ordered; earliest free T per L: " + \
      ", ".join(f"L={l}: {e}" for l, e in zip(grid["layers"], earliest)) + ")"
  return {"claim": "Layers converge in depth order: blocks <= L can be frozen at step T with "
                   "little loss penalty, and the earliest such T grows with L (LayerLock Fig. 1).",
          "rule": "reproduced if at every T the relative final-loss increase is non-decreasing "
                  "in L and the earliest 'free' T (increase <= "
                  f"{100 * grid['free_tolerance']:.0f}%) is non-decreasing in L and strictly "
                  "later for some deeper L; partly if most (T, L < L') pairs are ordered.",
          "grid": grid, "ordered_pairs": ordered, "pairs": pairs, "staircase": staircase,
          "staircase_rises": rises,
          "verdict": verdict}


# ------------------------------------------------------------------------------------------------
# Claim 2: progressive freezing (pixel target) is nearly free.
# ------------------------------------------------------------------------------------------------


def _stage_step_seconds(record: dict[str, Any]) -> dict[int, float]:
  """Measured seconds per step at each frozen-block count, from train_seconds deltas between
  logged rows (compilation excluded by the train loop)."""
  rows = [r for r in plots.read_metrics(os.path.join(record["workdir"], "metrics.jsonl"))
          if isinstance(r.get("train_seconds"), (int, float))]
  sums: dict[int, list[float]] = {}
  for prev, r in zip(rows, rows[1:]):  # the first interval holds the first step's warm-up
    k = int(r.get("frozen_layers", 0))
    steps, secs = r["step"] - prev["step"], r["train_seconds"] - prev["train_seconds"]
    acc = sums.setdefault(k, [0.0, 0.0])
    acc[0] += secs
    acc[1] += steps
  return {k: s / n for k, (s, n) in sorted(sums.items()) if n}


def freezing_claim(mae: Sequence[dict], frozen: Sequence[dict], reference=None,
                   min_saving: float = 0.0) -> dict[str, Any]:
  """Claim 2: freeze_pixel against MAE at equal steps, an equivalence test on the headline
  readout. `min_saving` > 0 is claim 2b: the same comparison where freezing must also save at
  least that fraction of the training FLOPs. `reference`: the random-init evaluations (floor)."""
  probe = {"mae": _arm(mae, "attentive"), "freeze_pixel": _arm(frozen, "attentive")}
  linear = {"mae": _arm(mae, "linear"), "freeze_pixel": _arm(frozen, "linear")}
  ev = evidence({"mae": mae, "freeze_pixel": frozen}, reference)
  judged = _judge("equivalence", ev, "mae", "freeze_pixel")
  flops_saving = 1.0 - frozen[0]["analytic_train_flops"] / mae[0]["analytic_train_flops"]
  base_prog = mae[0]["programs"][0] if mae[0]["programs"] else {}
  per_k = []
  step_secs = _stage_step_seconds(frozen[0])
  base_secs = _stage_step_seconds(mae[0]).get(0)
  # A freezing run forked from MAE at its first freeze compiled only its frozen stages: its
  # unfrozen stage is MAE's program.
  programs = {p["frozen_layers"]: p for p in [base_prog] if p}
  programs.update({p["frozen_layers"]: p for p in frozen[0]["programs"]})
  for k, prog in sorted(programs.items()):
    row = {"frozen_layers": k, "model_flops": prog["model_flops"],
           "flops_ratio": prog["model_flops"] / base_prog["model_flops"] if base_prog else None,
           "temp_bytes": prog["temp_bytes"],
           "temp_ratio": (prog["temp_bytes"] / base_prog["temp_bytes"]
                          if base_prog.get("temp_bytes") and prog["temp_bytes"] else None),
           "step_seconds": step_secs.get(k),
           "step_time_ratio": (step_secs[k] / base_secs if base_secs and k in step_secs
                               else None)}
    per_k.append(row)
  times = [r["train_seconds"] for r in frozen], [r["train_seconds"] for r in mae]
  time_saving = (1.0 - float(np.mean(times[0])) / float(np.mean(times[1]))
                 if all(times[0]) and all(times[1]) else None)
  last_mem = per_k[-1]["temp_ratio"] if per_k else None
  saves = flops_saving >= min_saving if min_saving else flops_saving > 0
  bar = f"at least {100 * min_saving:.0f}%" if min_saving else "some"
  if not saves:
    verdict = (f"not reproduced (saves {100 * flops_saving:.1f}% of the training FLOPs, the claim "
               f"needs {bar}; probe: {describe(judged)})")
  else:
    verdict = f"{describe(judged)}; {100 * flops_saving:.1f}% fewer training FLOPs"
  equivalence_rule = (
      f"equivalence: the {100 * stats.EQUIVALENCE_LEVEL:.0f}% t-interval of the paired per-seed "
      f"difference freeze_pixel - MAE (headline readout) inside +-{stats.EQUIVALENCE_MARGIN:.2f}, "
      f">= {stats.MIN_SEEDS} seeds, both arms above random init (>= {stats.MIN_INIT_SEEDS} init "
      f"seeds) by {stats.FLOOR_MARGIN:.2f} on every headline task")
  if min_saving:
    claim = (f"Progressive freezing with the pixel target saves at least {100 * min_saving:.0f}% "
             "of the training FLOPs at no cost: the paper's 9% grows to \"up to 19%\" with "
             "longer training.")
    rule = (f"reproduced if {equivalence_rule}, and the analytic training FLOPs fall by at least "
            f"{100 * min_saving:.0f}%.")
  else:
    claim = ("Progressive freezing with the pixel target costs almost nothing: SSv2 56.1 -> "
             "56.0 with 9% fewer FLOPs and 16% less peak memory (LayerLock ablation table).")
    rule = f"reproduced if {equivalence_rule}, and the analytic training FLOPs fall."
  return {"claim": claim, "rule": rule, "min_saving": min_saving,
          "total_steps": mae[0]["total_steps"], "freeze_stages": frozen[0]["freeze_stages"],
          "formation": formation(mae, frozen),
          "probe": probe, "linear": linear, "evidence": ev, "judgement": judged,
          "comparison": _difference(probe["mae"], probe["freeze_pixel"]),
          "readouts": readout_table({"mae": mae, "freeze_pixel": frozen}),
          "linear_comparison": _difference(linear["mae"], linear["freeze_pixel"]),
          "analytic_flops_saving": flops_saving, "measured_time_saving": time_saving,
          "last_stage_temp_memory_ratio": last_mem, "per_stage": per_k, "verdict": verdict}


# ------------------------------------------------------------------------------------------------
# Claim 3: naive latent prediction collapses, LayerLock does not.
# ------------------------------------------------------------------------------------------------


def _curve(record: dict[str, Any]) -> dict[str, list]:
  """In-training evaluation at the last block: step, mean linear-probe accuracy over tasks,
  effective rank, normalised std."""
  b = record["encoder_depth"]
  out = {"step": [], "linear": [], "effective_rank": [], "normalized_std": []}
  for r in record["eval_curve"]:
    lin = [v for k, v in r.items() if k.startswith("eval/") and k.endswith(f"/linear_block{b}")
           and not k.startswith("eval/collapse")]
    out["step"].append(r["step"])
    out["linear"].append(float(np.mean(lin)) if lin else None)
    out["effective_rank"].append(r.get(f"eval/collapse/effective_rank_block{b}"))
    out["normalized_std"].append(r.get(f"eval/collapse/normalized_std_block{b}"))
  return out


COLLAPSE_RULE = (
    f"with >= {stats.MIN_SEEDS} seeds per arm: reproduced if the naive-latent encoder is flagged "
    f"collapsed at every one of its seeds and its headline readout is within {NEAR_CHANCE:.2f} "
    "of chance (mean over tasks), while LayerLock is flagged at none of its seeds, is further "
    f"above chance and beats the random-init floor by {stats.FLOOR_MARGIN:.2f}; partly if the "
    "flags and the floor hold but the naive probe is not near chance; inconclusive with fewer "
    "seeds.")


def collapse_claim(mae: Sequence[dict], naive: Sequence[dict], layerlock: Sequence[dict],
                   reference=None) -> dict[str, Any]:
  """Claim 3. Not a two-arm comparison: the naive-latent encoder must be flagged collapsed and sit
  near chance at every one of its seeds, LayerLock's at none of its seeds and above the
  random-init floor; with fewer than stats.MIN_SEEDS seeds per arm the numbers are shown and the
  verdict is inconclusive."""
  arms = {"mae": mae, "naive_latent": naive, "layerlock": layerlock}
  table = {}
  for name, records in arms.items():
    table[name] = {key: _arm(records, key)["mean"] for key in
                   ("attentive", "attentive_over_chance", "linear", "linear_over_chance",
                    "effective_rank", "normalized_std")}
    table[name]["collapsed"] = [r["probe"]["collapsed"] for r in records]
    table[name]["seeds"] = [r.get("seed") for r in records]
  curves = {name: [_curve(r) for r in records] for name, records in arms.items()}
  n, l = table["naive_latent"], table["layerlock"]
  inits = _as_list(reference)
  floor = (float(np.mean([probe_summary(e, headline_block(e, e["blocks"][-1]))["attentive"]
                          for e in inits])) if inits else None)
  naive_flagged = bool(n["collapsed"]) and all(n["collapsed"])
  naive_near_chance = n["attentive_over_chance"] is not None and \
      n["attentive_over_chance"] <= NEAR_CHANCE
  ll_above_floor = (floor is not None and l["attentive"] is not None and
                    l["attentive"] - floor > stats.FLOOR_MARGIN)
  ll_healthy = bool(l["collapsed"]) and not any(l["collapsed"]) and \
      (l["attentive_over_chance"] or 0.0) > NEAR_CHANCE and ll_above_floor
  seeds = min(len(naive), len(layerlock))
  if naive_flagged and naive_near_chance and ll_healthy:
    verdict = "reproduced"
  elif naive_flagged and ll_healthy:
    verdict = "partly reproduced"
  else:
    verdict = "not reproduced"
  flags = sum(bool(c) for c in n["collapsed"])
  over_floor = None if floor is None or l["attentive"] is None else l["attentive"] - floor
  numbers = (f"naive latent: collapsed flag at {flags} of {len(n['collapsed'])} seeds, attentive "
             f"probe {_fmt(n['attentive_over_chance'], signed=True)} over chance, normalised std "
             f"{_fmt(n['normalized_std'])}; LayerLock: "
             f"{_fmt(l['attentive_over_chance'], signed=True)} over chance, "
             f"{_fmt(over_floor, signed=True)} over random init, normalised std "
             f"{_fmt(l['normalized_std'])}")
  if verdict != "not reproduced" and seeds < stats.MIN_SEEDS:
    verdict = (f"inconclusive ({seeds} seeds per arm, the rule needs {stats.MIN_SEEDS}; the "
               f"numbers alone would say {verdict}; {numbers})")
  else:
    verdict = f"{verdict} ({seeds} seeds per arm; {numbers})"
  return {"claim": "Predicting the model's own unfrozen features (naive latent loss) collapses "
                   "the representation: 4DS-H SSv2 50.1 -> 3.7 (constant weight). LayerLock's "
                   "frozen targets do not collapse.",
          "rule": COLLAPSE_RULE,
          "random_init_attentive": floor,
          "table": table, "curves": curves, "verdict": verdict}


# ------------------------------------------------------------------------------------------------
# Claim 4: LayerLock >= pixel MAE (+ ablations).
# ------------------------------------------------------------------------------------------------


def _init_summary(reference) -> dict[str, Any]:
  """The random-init encoders as one row per reference: probe means over its init seeds."""
  out = {}
  for key, evals in (reference or {}).items():
    evals = _as_list(evals)
    if not evals:
      continue
    summaries = [probe_summary(e, headline_block(e, e["blocks"][-1])) for e in evals]
    row = dict(summaries[0])
    for k in ("attentive", "linear"):
      vals = [x[k] for x in summaries if x[k] is not None]
      row[k] = float(np.mean(vals)) if vals else None
    row["tasks"] = {t: dict(v, attentive=float(np.mean([x["tasks"][t]["attentive"]
                                                        for x in summaries])))
                    for t, v in summaries[0]["tasks"].items()
                    if all(x["tasks"][t]["attentive"] is not None for x in summaries)} or \
        summaries[0]["tasks"]
    row["init_seeds"] = len(evals)
    out[key] = row
  return out


def _floor_reference(reference) -> list[dict]:
  """The random-init evaluations of the verdict's floor: the reference of the arms' own position
  embedding (the first key)."""
  if not reference:
    return []
  return _as_list(next(iter(reference.values())))


SUPERIORITY_RULE = (
    f"superiority: the one-sided {100 * stats.SUPERIORITY_LEVEL:.0f}% t-bound of the paired "
    f"per-seed difference (headline readout) above 0, >= {stats.MIN_SEEDS} seeds; not reproduced "
    f"when its upper bound is below +{stats.SMALLEST_GAIN:.2f} (the smallest gain the papers "
    f"report); both arms above random init (>= {stats.MIN_INIT_SEEDS} init seeds) by "
    f"{stats.FLOOR_MARGIN:.2f} on every headline task, else uninformative; tasks at the "
    "majority-class rate for every encoder are dropped first")


def layerlock_vs_mae_claim(mae: Sequence[dict], layerlock: Sequence[dict],
                           no_miniwarmup: Sequence[dict], learned_posemb: Sequence[dict],
                           reference: dict, center: Sequence[dict] = (),
                           labels: dict[str, str] | None = None) -> dict[str, Any]:
  """Claim 4 (and 4b on the camera-motion set). `reference`: {position embedding: random-init
  evaluation(s)}; the first is the verdict's floor. `center`: LayerLock runs with clip-centred
  latent targets (a row of the tables and a difference to LayerLock; not part of the verdict)."""
  arms = (("mae", mae), ("layerlock", layerlock), ("layerlock_center", center),
          ("layerlock_no_miniwarmup", no_miniwarmup), ("mae_learned_posemb", learned_posemb))
  probe = {k: _arm(v, "attentive") for k, v in arms}
  linear = {k: _arm(v, "linear") for k, v in arms}
  ev = evidence({"mae": mae, "layerlock": layerlock}, _floor_reference(reference))
  per_task = {name: {t: float(np.mean(v)) for t, v in arm["tasks"].items()}
              for name, arm in ev["arms"].items()}
  judged = _judge("superiority", ev, "mae", "layerlock")
  seed0 = lambda a: a["per_seed"][0] if a["per_seed"] else None
  ablations = {
      "mini_warmup": _delta(seed0(probe["layerlock_no_miniwarmup"]), seed0(probe["layerlock"])),
      "rope": _delta(seed0(probe["mae_learned_posemb"]), seed0(probe["mae"])),
      "center": _difference(probe["layerlock"], probe["layerlock_center"]) if center else None,
  }
  out = {"claim": "LayerLock beats pixel MAE on frozen readouts at equal steps: 4DS-G SSv2 63.1 "
                  "-> 66.1; ablation model 58.9 (MAE + RoPE) -> 60.1 (+ LayerLock); 3-D RoPE "
                  "56.1 -> 58.9; the mini-warmup about +1%.",
         "rule": f"reproduced by {SUPERIORITY_RULE}. Ablations are single-seed differences, "
                 "descriptive only.",
         "probe": probe, "linear": linear, "per_task": per_task, "evidence": ev,
         "judgement": judged, "comparison": _difference(probe["mae"], probe["layerlock"]),
         "readouts": readout_table(dict(arms)),
         "linear_comparison": _difference(linear["mae"], linear["layerlock"]),
         "ablations": ablations, "random_init": _init_summary(reference),
         "formation": formation(mae, layerlock), "verdict": describe(judged, labels)}
  if labels:
    out["labels"] = labels
  return out


def vjepa_claim(vjepa: Sequence[dict], vjepa_layerlock: Sequence[dict],
                reference: dict) -> dict[str, Any]:
  """Claim 6: LayerLock improves V-JEPA. The same readouts, rule and tables as claim 4, with plain
  V-JEPA in the baseline's place ("mae" / "layerlock" keys, relabelled by `labels`)."""
  labels = {"mae": "V-JEPA", "layerlock": "V-JEPA + LayerLock"}
  c = layerlock_vs_mae_claim(vjepa, vjepa_layerlock, [], [], reference, labels=labels)
  c["claim"] = ("LayerLock improves V-JEPA on frozen readouts: V-JEPA-L SSv2 52.1 -> 57.0, "
                "K700 42.5 -> 43.5 (its largest gain of the two families).")
  c["rule"] = f"reproduced (V-JEPA + LayerLock against V-JEPA) by {SUPERIORITY_RULE}."
  return c


# ------------------------------------------------------------------------------------------------
# Claim 5: blockwise ~ end-to-end.
# ------------------------------------------------------------------------------------------------


def _per_block(records: Sequence[dict]) -> dict[str, list[float]]:
  """Per-depth curves averaged over seeds: linear mean over tasks, kNN mAP mean, CKA to the
  previous depth, token cosine similarity."""
  keys = ("linear/mean", "knn_mAP/mean", "linear_cka_prev", "token_cosine_similarity")
  out = {k: [] for k in keys}
  rows_per_seed = [r["evaluation"]["rows"] for r in records]
  tasks = list(records[0]["evaluation"]["tasks"])
  for j in range(len(rows_per_seed[0])):
    for k in keys:
      vals = []
      for rows in rows_per_seed:
        row = rows[j]
        if k == "knn_mAP/mean":
          vals.append(float(np.mean([row[f"knn_mAP/{t}"] for t in tasks])))
        elif row.get(k) is not None:
          vals.append(row[k])
      out[k].append(float(np.mean(vals)) if vals else None)
  return out


def combine(judgements: dict[str, dict[str, Any]]) -> str:
  """One verdict from several comparisons that must all hold: any "not reproduced" decides;
  then any "uninformative", "inconclusive" or "not measured"; all "reproduced" reproduce."""
  verdicts = [j["verdict"] for j in judgements.values()]
  for v in ("not reproduced", "uninformative", "inconclusive", "not measured"):
    if v in verdicts:
      return v
  return "reproduced" if verdicts else "not measured"


def blockwise_claim(regimes: dict[str, Sequence[dict]], reference) -> dict[str, Any]:
  """Claim 5: concurrent and sequential blockwise training each equivalent to end-to-end on the
  last block's linear probe (difference and interval at that one block)."""
  inits = _as_list(reference)
  curves = {name: _per_block(records) for name, records in regimes.items()}
  curves["random_init"] = _per_block([{"evaluation": e} for e in inits[:1]])
  if len(inits) > 1:
    curves["random_init"] = {k: [float(np.mean([c[k][j] for c in
                                                (_per_block([{"evaluation": e}]) for e in inits)]))
                                 if v is not None else None for j, v in enumerate(vals)]
                             for k, vals in curves["random_init"].items()}
  ev = evidence(dict(regimes), inits, key=LINEAR_LAST)
  probe = {name: {"per_seed": stats.headline(arm["tasks"], list(arm["tasks"]))}
           for name, arm in ev["arms"].items()}
  for arm in probe.values():
    arm["mean"] = float(np.mean(arm["per_seed"])) if arm["per_seed"] else None
    arm["range"] = None
  seeds = len(next(iter(regimes.values())))
  checks, judgements = {}, {}
  e2e = curves["e2e"]["linear/mean"]
  for name in ("concurrent", "sequential"):
    if name not in curves:
      continue
    judgements[name] = _judge("equivalence", ev, "e2e", name)
    c = curves[name]
    half = max(2, len(e2e) // 2)
    e2e_cos = curves["e2e"]["token_cosine_similarity"][1]
    checks[name] = {
        "last_block_delta_vs_e2e": c["linear/mean"][-1] - e2e[-1],
        "early_blocks_delta_vs_e2e": float(np.mean(c["linear/mean"][1:half]) -
                                           np.mean(e2e[1:half])),
        "late_cka_min": float(min(v for v in c["linear_cka_prev"][half:] if v is not None)),
        "token_cosine_block1_delta_vs_e2e": (
            c["token_cosine_similarity"][1] - e2e_cos
            if e2e_cos is not None and c["token_cosine_similarity"][1] is not None else None),
    }
    ch = checks[name]
    ch["expectations_held"] = sum([ch["early_blocks_delta_vs_e2e"] > 0, ch["late_cka_min"] >= 0.9,
                                   (ch["token_cosine_block1_delta_vs_e2e"] or 0.0) > 0])
  verdict = combine(judgements) + " (" + "; ".join(
      f"{name}: {describe(j)}" for name, j in judgements.items()) + ")"
  return {"claim": "Blockwise SSL, each block trained by its own local masked-reconstruction "
                   "loss, comes close to matched end-to-end training; decodability rises earlier "
                   "in depth, CKA between late consecutive blocks is high, token similarity is "
                   "higher early (blockwise-SSL paper; no numbers published).",
          "rule": "reproduced if concurrent and sequential each pass equivalence with e2e: the "
                  f"{100 * stats.EQUIVALENCE_LEVEL:.0f}% t-interval of the paired per-seed "
                  "difference of the last block's linear probe (mean over tasks) inside "
                  f"+-{stats.EQUIVALENCE_MARGIN:.2f}, >= {stats.MIN_SEEDS} seeds, every arm above "
                  f"random init (>= {stats.MIN_INIT_SEEDS} init seeds) by "
                  f"{stats.FLOOR_MARGIN:.2f} on every task; not reproduced if either fails "
                  "decisively. The three depth-wise expectations (higher early-block probe; "
                  "late consecutive CKA >= 0.9; higher block-1 token cosine) are reported, "
                  "not judged.",
          "curves": curves, "probe": probe, "checks": checks, "seeds": seeds, "evidence": ev,
          "judgements": judgements, "readouts": readout_table(dict(regimes)),
          "verdict": verdict}


# ------------------------------------------------------------------------------------------------


def _delta(a, b):
  return None if a is None or b is None else b - a


def _fmt(x, signed: bool = False) -> str:
  if x is None:
    return "n/a"
  return f"{x:+.3f}" if signed else f"{x:.3f}"
