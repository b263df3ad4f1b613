"""experiments/budget.py: the default reproduction's wall time on 2 CPU cores, estimated from the
committed reproduction's per-run costs and the measured evaluation cost ratio."""
import dataclasses
import json

import pytest

from experiments import budget
from experiments import reproduce


def _timing():
  with open(budget.DOCS / "timing.json") as f:
    return json.load(f)


def test_the_estimate_gives_back_the_measured_reproduction_for_its_own_plan():
  """The plan that wrote timing.json (2 seeds, claims 5-6 at seeds 0-1, one random-init seed,
  the old evaluation), estimated at an evaluation ratio of 1: its own wall time."""
  timing = _timing()
  old = dataclasses.replace(
      reproduce.Plan.make(False), seeds=(2, 3),
      repeated_arms=("mae", "freeze_pixel", "layerlock"), center_seeds=(2, 3),
      blockwise_seeds=(0, 1), vjepa_seeds=(0, 1), init_seeds=(0,), long_freezing_steps=900)
  assert budget.evaluations(old) == budget.old_plan_evaluations()
  e = budget.estimate(old, timing, {"new_seconds": 1.0, "old_seconds": 1.0},
                      budget.old_plan_evaluations())
  assert e["train_lane_seconds"] == pytest.approx(sum(timing["train_seconds"].values()))
  assert e["wall_minutes"] == pytest.approx(timing["total_seconds"] / 60)


def test_the_default_reproduction_fits_in_an_hour_on_two_cores():
  e = budget.default_estimate()
  assert e["lanes"] == 2
  assert e["wall_minutes"] <= 60, e


def test_a_variant_without_a_measured_cost_fails_the_estimate():
  plan = dataclasses.replace(reproduce.Plan.make(False), arms=reproduce.Plan.arms +
                             ("mae_learned_posemb",))
  with pytest.raises(ValueError, match="no training time"):
    budget.estimate(plan, _timing(), {"new_seconds": 1.0, "old_seconds": 1.0}, 31)
