"""experiments/budget.py: the default reproduction's wall time on 2 CPU cores, estimated from the
committed reproduction's per-run costs."""
import dataclasses
import json

import pytest

from experiments import budget
from experiments import reproduce


def _timing():
  with open(budget.DOCS / "timing.json") as f:
    return json.load(f)


def test_the_estimate_gives_back_the_measured_reproduction_for_its_own_plan():
  """timing.json is a full default reproduction: its own plan is estimated at its own wall time,
  and the training lane-seconds are the runs' own (every variant's seeds counted once)."""
  timing = _timing()
  plan = reproduce.Plan.make(False)
  e = budget.estimate(plan, timing, budget.evaluations(plan))
  assert e["train_lane_seconds"] <= sum(timing["train_seconds"].values())
  measured = timing["total_seconds"] / 60
  # Later seeds are charged their variant's cheapest seed: a little under the measured wall time.
  assert 0.95 * measured <= e["wall_minutes"] <= measured + 1e-9
  assert len(timing["train_seconds"]) == timing["runs_total"]
  # Doubling every evaluation's count doubles exactly the evaluation share of the estimate.
  doubled = budget.estimate(plan, timing, budget.evaluations(plan) * 2)
  assert e["lane_seconds"] - doubled["lane_seconds"] == pytest.approx(
      e["evaluations"] * e["eval_lane_seconds_each"] / 2)


def test_the_default_reproduction_fits_in_an_hour_on_two_cores():
  e = budget.default_estimate()
  assert e["lanes"] == 2
  assert e["wall_minutes"] <= 60, e


def test_a_variant_without_a_measured_cost_fails_the_estimate():
  plan = dataclasses.replace(reproduce.Plan.make(False), arms=reproduce.Plan.arms +
                             ("mae_learned_posemb",))
  with pytest.raises(ValueError, match="no training time"):
    budget.estimate(plan, _timing(), 67)
