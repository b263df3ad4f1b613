"""Verdict rules of the claims: pure functions of per-seed numbers, fixed before any run.

Every rule here was written, with its margins, before the runs it judges; a rule is never widened
to let a claim pass. The vocabulary of a verdict:
  reproduced       the interval decides for the paper's claim;
  not reproduced   the interval decides against it;
  inconclusive     the interval is too wide to decide, or the design is short of its minimum
                   (fewer than MIN_SEEDS seeds per arm, fewer than MIN_INIT_SEEDS random-init
                   seeds): the numbers are shown, no verdict is drawn from them;
  uninformative    an arm of the comparison does not beat a random-init encoder by FLOOR_MARGIN
                   on a task its headline averages over: the headline measures the readout, not
                   the pretraining, and no verdict is drawn from it.

Two tests:
  superiority  (the new arm beats the baseline): the one-sided SUPERIORITY_LEVEL lower bound of
               the paired per-seed difference new - base is above 0. Not reproduced when the
               one-sided upper bound is below SMALLEST_GAIN (the data rule out a gain as large as
               the smallest one the papers report).
  equivalence  (the new arm costs nothing against the baseline): the two-sided EQUIVALENCE_LEVEL
               interval of the paired difference lies inside +-margin (two one-sided tests at
               5% each). Not reproduced when the interval lies wholly outside it.

Pairing: arms at the same seed share that seed's pretraining data, initialisation and (for the
forked arms) the MAE prefix, and are scored on the same test clips; the per-seed differences are
what is averaged. The interval is a Student t-interval over seeds. A seed's number is the mean
over >= MIN_PROBE_SEEDS probe seeds, and each seed is scored on its own test clips (rendered from a
data seed of its own), so the spread over seeds carries the probe's and the test sample's noise
as well as the pretraining seed's. Where all seeds were scored on one shared test set (results of
older versions of the harness), that set's sampling error is added to the interval as a term the
seeds cannot average away (`shared_test_se`, the bound for independent errors of the two arms).
"""
import functools
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as _scipy_stats

# ---- Declared before any run: the design minimums and margins. ----------------------------------
MIN_SEEDS = 5               # pretraining seeds per arm for a verdict
MIN_PROBE_SEEDS = 3         # probe seeds averaged into each seed's number
MIN_INIT_SEEDS = 3          # random-init encoders behind the floor
SUPERIORITY_LEVEL = 0.95    # one-sided
EQUIVALENCE_LEVEL = 0.90    # two-sided (TOST at 5% per side)
EQUIVALENCE_MARGIN = 0.02   # mean top-1 over tasks
SMALLEST_GAIN = 0.01        # the smallest gain the papers report for a superiority claim
FLOOR_MARGIN = 0.02         # an arm must beat random init by this much on every headline task
CHANCE_Z = 2.0              # "within noise of the majority-class rate": within 2 binomial SEs

VERDICTS = ("reproduced", "not reproduced", "inconclusive", "uninformative")


def t_interval(diffs: Sequence[float], level: float, sided: str,
               extra_se: float = 0.0) -> dict[str, Any]:
  """Student t-interval of the mean of `diffs` over seeds.

  sided: "two" (both bounds at `level`) or "one" (each bound is a one-sided `level` bound).
  extra_se: a standard error the seeds cannot average away (a shared test set), added in
  quadrature. With fewer than 2 values the bounds are infinite.
  """
  d = np.asarray(diffs, dtype=float)
  n = len(d)
  mean = float(d.mean()) if n else float("nan")
  if n < 2:
    return {"n": n, "mean": mean, "se": float("inf"), "df": max(n - 1, 0), "level": level,
            "sided": sided, "lower": -float("inf"), "upper": float("inf")}
  se = float(np.sqrt(d.var(ddof=1) / n + extra_se ** 2))
  q = level if sided == "one" else 0.5 + level / 2
  t = _t_quantile(q, n - 1)
  return {"n": n, "mean": mean, "se": se, "df": n - 1, "level": level, "sided": sided,
          "lower": mean - t * se, "upper": mean + t * se}


@functools.lru_cache(maxsize=None)
def _t_quantile(q: float, df: int) -> float:
  return float(_scipy_stats.t.ppf(q, df=df))


def paired_differences(base: Sequence[float], new: Sequence[float]) -> list[float]:
  """new - base per seed; the two lists are per seed in the same seed order."""
  if len(base) != len(new):
    raise ValueError(f"paired arms need the same seeds: {len(base)} vs {len(new)} values")
  return [float(b) - float(a) for a, b in zip(base, new)]


def shared_test_se(base_acc: float, new_acc: float, num_test: int, num_tasks: int = 1) -> float:
  """Sampling error of a difference of two accuracies averaged over `num_tasks` tasks, each
  scored on the same `num_test` clips at every seed: the independent-errors bound (paired errors
  on the same clips only make it smaller)."""
  pa, pb = float(np.clip(base_acc, 0, 1)), float(np.clip(new_acc, 0, 1))
  return float(np.sqrt((pa * (1 - pa) + pb * (1 - pb)) / (num_test * num_tasks)))


def _short(n_base: int, n_new: int, min_seeds: int) -> str | None:
  n = min(n_base, n_new)
  return None if n >= min_seeds else f"{n} seeds per arm, the rule needs {min_seeds}"


def superiority(base: Sequence[float], new: Sequence[float], *, extra_se: float = 0.0,
                min_seeds: int = MIN_SEEDS, level: float = SUPERIORITY_LEVEL,
                smallest_gain: float = SMALLEST_GAIN) -> dict[str, Any]:
  """Does `new` beat `base`? Per-seed values, paired by position."""
  iv = t_interval(paired_differences(base, new), level, "one", extra_se)
  short = _short(len(base), len(new), min_seeds)
  if short:
    verdict, why = "inconclusive", short
  elif iv["lower"] > 0:
    verdict, why = "reproduced", f"one-sided {100 * level:.0f}% lower bound above 0"
  elif iv["upper"] < smallest_gain:
    verdict, why = "not reproduced", (f"one-sided {100 * level:.0f}% upper bound below "
                                      f"+{smallest_gain:.3f}")
  else:
    verdict, why = "inconclusive", "the interval holds both 0 and the smallest claimed gain"
  return {"test": "superiority", "verdict": verdict, "why": why, "interval": iv,
          "smallest_gain": smallest_gain, "min_seeds": min_seeds}


def equivalence(base: Sequence[float], new: Sequence[float], *, margin: float = EQUIVALENCE_MARGIN,
                extra_se: float = 0.0, min_seeds: int = MIN_SEEDS,
                level: float = EQUIVALENCE_LEVEL) -> dict[str, Any]:
  """Is `new` within +-margin of `base`? Per-seed values, paired by position."""
  iv = t_interval(paired_differences(base, new), level, "two", extra_se)
  short = _short(len(base), len(new), min_seeds)
  if short:
    verdict, why = "inconclusive", short
  elif -margin < iv["lower"] and iv["upper"] < margin:
    verdict, why = "reproduced", f"{100 * level:.0f}% interval inside +-{margin:.3f}"
  elif iv["upper"] < -margin or iv["lower"] > margin:
    verdict, why = "not reproduced", f"{100 * level:.0f}% interval wholly outside +-{margin:.3f}"
  else:
    verdict, why = "inconclusive", f"{100 * level:.0f}% interval crosses +-{margin:.3f}"
  return {"test": "equivalence", "verdict": verdict, "why": why, "interval": iv,
          "margin": margin, "min_seeds": min_seeds}


# ---- The random-init floor and the tasks it leaves. --------------------------------------------


def chance_noise(chance: float, num_test: int) -> float:
  """CHANCE_Z binomial standard errors of an accuracy at the majority-class rate."""
  return CHANCE_Z * float(np.sqrt(chance * (1 - chance) / max(num_test, 1)))


def dropped_tasks(encoders: Mapping[str, Mapping[str, float]], chance: Mapping[str, float],
                  num_test: int) -> dict[str, str]:
  """Tasks where every encoder (random init included; values: its mean accuracy per task) is at
  or below the majority-class rate plus its noise: task -> the reason it is dropped."""
  out = {}
  for task, c in chance.items():
    values = [enc[task] for enc in encoders.values() if enc.get(task) is not None]
    noise = chance_noise(c, num_test)
    if values and max(values) <= c + noise:
      out[task] = (f"every encoder at or below the majority-class rate {c:.3f} + {noise:.3f} "
                   f"(best {max(values):.3f})")
  return out


def floor(arm_tasks: Mapping[str, float], init_tasks: Mapping[str, Sequence[float]],
          margin: float = FLOOR_MARGIN) -> dict[str, dict[str, Any]]:
  """Per task: the arm's mean, random init's mean over init seeds, and whether the arm beats it
  by `margin` (informative)."""
  out = {}
  for task, value in arm_tasks.items():
    init = [v for v in init_tasks.get(task, []) if v is not None]
    ref = float(np.mean(init)) if init else None
    out[task] = {"arm": value, "random_init": ref, "init_seeds": len(init),
                 "informative": bool(ref is not None and value is not None and
                                     value - ref > margin)}
  return out


# ---- A whole claim: floor, dropped tasks, then the test. ---------------------------------------


def headline(per_task: Mapping[str, Sequence[float]], tasks: Sequence[str]) -> list[float]:
  """Per seed: the mean over `tasks` of the per-seed task values."""
  return [float(np.mean([per_task[t][i] for t in tasks]))
          for i in range(len(per_task[tasks[0]]))]


def _common_seeds(a: Mapping[str, Any], b: Mapping[str, Any]):
  """The two arms restricted to the seeds both have, in seed order: the pairs of the test."""
  common = sorted(set(a["seeds"]) & set(b["seeds"]))
  pick = lambda arm: {"seeds": common, "tasks": {
      t: [v[list(arm["seeds"]).index(s)] for s in common] for t, v in arm["tasks"].items()}}
  return pick(a), pick(b)


def judge(test: str, evidence: Mapping[str, Any], base: str, new: str, *,
          margin: float = EQUIVALENCE_MARGIN, floor_margin: float = FLOOR_MARGIN,
          min_seeds: int = MIN_SEEDS, min_init_seeds: int = MIN_INIT_SEEDS) -> dict[str, Any]:
  """The verdict of `new` against `base` from a claim's evidence:

    evidence = {"arms": {arm: {"seeds": [..], "tasks": {task: [per-seed value]}}},
                "random_init": {"seeds": [..], "tasks": {task: [per-init-seed value]}},
                "chance": {task: majority-class rate}, "num_test": clips per task,
                "test_sets": "per_seed" | "shared"}

  Only seeds that both arms have are paired. Order: tasks at chance for every encoder are dropped; the headline is the mean over the tasks
  left; an arm not above the floor on one of them makes the claim uninformative; short designs
  are inconclusive; otherwise the test decides.
  """
  arms, init = evidence["arms"], evidence["random_init"]
  a, b = _common_seeds(arms[base], arms[new])
  means = {name: {t: float(np.mean(v)) for t, v in arm["tasks"].items()}
           for name, arm in arms.items()}
  means["random_init"] = {t: float(np.mean(v)) for t, v in init["tasks"].items()}
  dropped = dropped_tasks(means, evidence["chance"], evidence["num_test"])
  tasks = [t for t in a["tasks"] if t not in dropped]
  out: dict[str, Any] = {"base": base, "new": new, "dropped_tasks": dropped,
                         "headline_tasks": tasks}
  if not tasks:
    out.update(verdict="uninformative", why="every task is at the majority-class rate")
    return out
  floors = {arm: floor({t: means[arm][t] for t in tasks}, init["tasks"], floor_margin)
            for arm in (base, new)}
  out["floor"] = floors
  out["floor_margin"] = floor_margin
  base_seeds, new_seeds = headline(a["tasks"], tasks), headline(b["tasks"], tasks)
  out["per_seed"] = {base: base_seeds, new: new_seeds}
  extra = 0.0
  if evidence.get("test_sets") == "shared":
    extra = shared_test_se(float(np.mean(base_seeds)), float(np.mean(new_seeds)),
                           evidence["num_test"], len(tasks))
  out["shared_test_se"] = extra
  if test == "superiority":
    result = superiority(base_seeds, new_seeds, extra_se=extra, min_seeds=min_seeds)
  elif test == "equivalence":
    result = equivalence(base_seeds, new_seeds, margin=margin, extra_se=extra,
                         min_seeds=min_seeds)
  else:
    raise ValueError(f"unknown test {test!r}")
  out["test"] = result
  below = sorted(f"{arm} on {t}" for arm, f in floors.items() for t, r in f.items()
                 if not r["informative"])
  init_seeds = len(init.get("seeds", []))
  if below:
    out.update(verdict="uninformative",
               why=f"not above random init by {floor_margin:.2f}: " + ", ".join(below))
  elif init_seeds < min_init_seeds:
    short = _short(len(base_seeds), len(new_seeds), min_seeds)
    out.update(verdict="inconclusive",
               why=(f"{short}; " if short else "") +
               f"random init at {init_seeds} seeds, the floor needs {min_init_seeds}")
  else:
    out.update(verdict=result["verdict"], why=result["why"])
  return out
