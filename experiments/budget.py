r"""The wall time of a reproduction plan on CPU lanes, estimated from a finished reproduction.

  python -m experiments.budget                # the default plan, from docs/reproduction_cpu/

Input: docs/reproduction_cpu/timing.json, the committed reproduction (a full default
`python -m experiments.reproduce` run): each run's training seconds, the invocation's wall time
and its lane count. Method:
  - training: each run of the plan costs what its variant (its name without the seed) cost in
    timing.json, the first seed of a variant its most expensive seed (it compiles), every later
    seed its cheapest; a variant timing.json lacks makes the estimate fail, never guess;
  - evaluation: the finished reproduction's lane-seconds not spent training, divided by its
    evaluations (those of the default plan, with today's evaluation settings), is the cost of one;
  - wall time: all lane-seconds over the lanes (the jobs pack onto the lanes; forks wait for their
    sources, which start first). By construction this gives back the finished reproduction's own
    wall time for the default plan.
A change to the evaluation settings makes the estimate stale until the reproduction is rerun
(results.json's eval fingerprint says which settings it used).
"""
import json
import pathlib
from typing import Any

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "reproduction_cpu"


def _stem(name: str) -> str:
  return name.rsplit("_s", 1)[0]


def train_costs(timing: dict[str, Any]) -> dict[str, tuple[float, float]]:
  """variant stem -> (first seed's seconds, a later seed's seconds)."""
  by_stem: dict[str, list[float]] = {}
  for name, secs in timing["train_seconds"].items():
    by_stem.setdefault(_stem(name), []).append(float(secs))
  return {stem: (max(v), min(v)) for stem, v in by_stem.items()}


def evaluations(plan) -> int:
  """Models the plan evaluates: every run but the grid cells, and the random-init encoders."""
  from experiments import reproduce  # pylint: disable=g-import-not-at-top
  runs = _plan_runs(plan)
  references = 1 + bool(plan.camera_arms) + bool(plan.blockwise_seeds) + bool(plan.vjepa_seeds)
  references += "mae_learned_posemb" in plan.arms
  del reproduce
  return len(runs) + references * len(plan.init_seeds)


def _plan_runs(plan) -> list:
  return ([r for rs in plan.main_runs().values() for r in rs] + list(plan.center_runs()) +
          [r for rs in plan.long_freezing_runs().values() for r in rs] +
          [r for rs in plan.camera_runs().values() for r in rs] +
          [r for rs in plan.blockwise_runs().values() for r in rs] +
          [r for rs in plan.vjepa_runs().values() for r in rs])


def estimate(plan, timing: dict[str, Any], reference_evaluations: int) -> dict[str, Any]:
  """Lane-seconds and wall minutes of `plan` (see the module docstring)."""
  costs = train_costs(timing)
  runs = _plan_runs(plan) + [r for _, _, r in plan.grid_runs()]
  seen, train = set(), 0.0
  missing = sorted({_stem(r.name) for r in runs} - set(costs))
  if missing:
    raise ValueError(f"timing.json has no training time of {missing}")
  for r in sorted(runs, key=lambda r: r.seed):
    first, later = costs[_stem(r.name)]
    train += later if _stem(r.name) in seen else first
    seen.add(_stem(r.name))
  lanes = timing["lanes"] or 1
  reference_train = sum(timing["train_seconds"].values())
  each = (timing["total_seconds"] * lanes - reference_train) / reference_evaluations
  n_eval = evaluations(plan)
  total = train + n_eval * each
  return {"train_lane_seconds": train, "evaluations": n_eval, "eval_lane_seconds_each": each,
          "lane_seconds": total, "lanes": lanes, "wall_minutes": total / lanes / 60}


def default_estimate() -> dict[str, Any]:
  from experiments import reproduce  # pylint: disable=g-import-not-at-top
  with open(DOCS / "timing.json") as f:
    timing = json.load(f)
  plan = reproduce.Plan.make(False)
  return estimate(plan, timing, evaluations(plan))


def main(argv):
  del argv
  print(json.dumps(default_estimate(), indent=1))


if __name__ == "__main__":
  from layerlock_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
