r"""The wall time of a reproduction plan on CPU lanes, estimated from a finished reproduction.

  python -m experiments.budget                # the default plan, from docs/reproduction_cpu/
  taskset -c 0 python -m experiments.budget --measure=/tmp/eval_cost  # writes eval_cost.json

Inputs (docs/reproduction_cpu/):
  timing.json     a finished reproduction: each run's training seconds, the invocation's wall time
                  and its lane count;
  eval_cost.json  one random-init evaluation under that reproduction's evaluation settings and one
                  under today's, back to back in one process pinned to one core, in CPU seconds
                  (`--measure`: CPU time, so that other processes on a shared machine do not
                  count).
Method:
  - training: each run of the plan costs what its variant (its name without the seed) cost in
    timing.json, the first seed of a variant its most expensive seed (it compiles), every later
    seed its cheapest; a variant timing.json lacks makes the estimate fail, never guess;
  - evaluation: the finished reproduction's lane-seconds not spent training, divided by its
    evaluations, is the cost of one evaluation under its settings; today's costs that times the
    measured ratio of eval_cost.json;
  - wall time: all lane-seconds over the lanes (the jobs pack onto the lanes; forks wait for their
    sources, which start first). By construction this gives back the finished reproduction's own
    wall time for its own plan.
"""
import json
import os
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


def estimate(plan, timing: dict[str, Any], eval_cost: dict[str, Any],
             old_evaluations: int) -> dict[str, Any]:
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
  old_train = sum(timing["train_seconds"].values())
  old_eval = (timing["total_seconds"] * lanes - old_train) / old_evaluations
  ratio = eval_cost["new_seconds"] / eval_cost["old_seconds"]
  n_eval = evaluations(plan)
  total = train + n_eval * old_eval * ratio
  return {"train_lane_seconds": train, "evaluations": n_eval,
          "eval_lane_seconds_each": old_eval * ratio, "eval_ratio": ratio,
          "lane_seconds": total, "lanes": lanes, "wall_minutes": total / lanes / 60}


def old_plan_evaluations() -> int:
  """Evaluations of the reproduction that wrote docs/reproduction_cpu/timing.json: its 27
  trained-and-evaluated runs (31 runs less the 4 grid cells) and its 4 random-init encoders."""
  return 27 + 4


def default_estimate() -> dict[str, Any]:
  from experiments import reproduce  # pylint: disable=g-import-not-at-top
  with open(DOCS / "timing.json") as f:
    timing = json.load(f)
  with open(DOCS / "eval_cost.json") as f:
    eval_cost = json.load(f)
  return estimate(reproduce.Plan.make(False), timing, eval_cost, old_plan_evaluations())


def old_evaluation_plan(plan):
  """`plan` with the evaluation settings of the reproduction that wrote timing.json: one shared
  eval set of 512 clips, the full readout table, no headline readout at several probe seeds."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(plan, eval_clips=512, attentive_norms=("layernorm", "standardize"),
                             attentive_last_block=True, probe_seeds=())


def measure(out: str) -> dict[str, Any]:
  """CPU seconds of one random-init evaluation (the claims' MAE model) under the old and today's
  evaluation settings, in this process."""
  import time  # pylint: disable=g-import-not-at-top
  from experiments import reproduce  # pylint: disable=g-import-not-at-top
  new = reproduce.Plan.make(False)
  run = new.main_runs()["mae"][0]
  result = {}
  for label, plan, seed in (("old", old_evaluation_plan(new), 0), ("new", new, 1)):
    start = time.process_time()
    reproduce.Reproduction(os.path.join(out, label), plan).random_init(run, seed)
    result[f"{label}_seconds"] = time.process_time() - start
  result["method"] = ("CPU seconds of one random-init evaluation of the claims' MAE model, old "
                      "evaluation settings then today's, one process pinned to one core")
  return result


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  out = flags.FLAGS.measure
  print(json.dumps(measure(out) if out else default_estimate(), indent=1))


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("measure", None, "Instead of the estimate: time one evaluation under the "
                      "old and today's settings (CPU seconds), working in this directory; "
                      "pin the process to one core.")
  from layerlock_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
