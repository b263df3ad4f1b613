"""experiments/stats.py: the verdict rules' error rates by simulation, and each branch by hand.

The simulations draw per-seed numbers the way the reproduction produces them: a seed effect
shared by the arms of that seed (its data, initialisation and MAE prefix), plus each arm's own
noise. Every simulation is seeded: a failure replays."""
import numpy as np
import pytest

from experiments import stats

TRIALS = 4000
SEEDS = stats.MIN_SEEDS


def _draw(rng, trials, seeds, gain, shared_sd, own_sd):
  """(base, new) per-seed values of `trials` reproductions: new = base's mean + gain."""
  shared = rng.normal(0.5, shared_sd, (trials, seeds))
  base = shared + rng.normal(0, own_sd, (trials, seeds))
  new = shared + gain + rng.normal(0, own_sd, (trials, seeds))
  return base, new


def _rate(rule, base, new, verdict, **kwargs):
  return float(np.mean([rule(b, n, **kwargs)["verdict"] == verdict for b, n in zip(base, new)]))


# The largest rate that a true rate of 5% gives in TRIALS draws with 2 binomial SEs to spare.
_FIVE_PERCENT = 0.05 + 2 * np.sqrt(0.05 * 0.95 / TRIALS)


@pytest.mark.parametrize("seeds", [SEEDS, 8])
@pytest.mark.parametrize("shared_sd,own_sd", [(0.03, 0.01), (0.0, 0.02)])
def test_superiority_without_a_true_difference_is_reproduced_at_most_5_percent(
    seeds, shared_sd, own_sd):
  rng = np.random.default_rng(1 + seeds)
  base, new = _draw(rng, TRIALS, seeds, 0.0, shared_sd, own_sd)
  rate = _rate(stats.superiority, base, new, "reproduced")
  assert rate <= _FIVE_PERCENT, rate
  # A shared test set's sampling error, added to the interval, can only make the rule stricter.
  assert _rate(stats.superiority, base, new, "reproduced", extra_se=0.01) <= rate


@pytest.mark.parametrize("own_sd", [0.01, 0.02, 0.03])
def test_equivalence_rejects_a_true_two_sd_deficit_at_least_80_percent(own_sd):
  """The deficit is 2 SDs of an arm's per-seed values; at own_sd = 0.01 with no shared effect it
  equals the margin itself, the hardest case the rule must still reject."""
  rng = np.random.default_rng(int(own_sd * 1000))
  shared_sd = 0.0
  sd = np.hypot(shared_sd, own_sd)
  base, new = _draw(rng, TRIALS, SEEDS, -2 * sd, shared_sd, own_sd)
  rate = _rate(stats.equivalence, base, new, "reproduced")
  assert 1 - rate >= 0.8, rate
  assert rate <= _FIVE_PERCENT, rate  # at or beyond the margin the TOST size bounds it


def test_equivalence_rejects_a_deficit_of_two_sds_with_a_shared_seed_effect():
  rng = np.random.default_rng(7)
  shared_sd, own_sd = 0.02, 0.01
  base, new = _draw(rng, TRIALS, SEEDS, -2 * np.hypot(shared_sd, own_sd), shared_sd, own_sd)
  assert _rate(stats.equivalence, base, new, "reproduced") <= 0.2


def test_the_rules_have_power_where_the_effect_is_plain():
  """Rules that never say "reproduced" would pass the two tests above: they must say it when the
  numbers are clear (a gain of 3x the per-seed noise; an exact tie with small noise)."""
  rng = np.random.default_rng(11)
  base, new = _draw(rng, TRIALS, SEEDS, 0.03, 0.03, 0.005)
  assert _rate(stats.superiority, base, new, "reproduced") >= 0.8
  base, new = _draw(rng, TRIALS, SEEDS, 0.0, 0.03, 0.004)
  assert _rate(stats.equivalence, base, new, "reproduced") >= 0.8
  # A true deficit: superiority says "not reproduced", not merely "inconclusive".
  base, new = _draw(rng, TRIALS, SEEDS, -0.02, 0.03, 0.005)
  assert _rate(stats.superiority, base, new, "not reproduced") >= 0.8


# ------------------------------------------------------------------------------------------------
# Each branch by hand.
# ------------------------------------------------------------------------------------------------

BASE = [0.50, 0.52, 0.48, 0.51, 0.49]


def test_superiority_branches():
  plain = [b + 0.03 + e for b, e in zip(BASE, [0.001, -0.001, 0.002, 0.0, -0.002])]
  assert stats.superiority(BASE, plain)["verdict"] == "reproduced"
  worse = [b - 0.03 + e for b, e in zip(BASE, [0.001, -0.001, 0.002, 0.0, -0.002])]
  assert stats.superiority(BASE, worse)["verdict"] == "not reproduced"
  noisy = [b + e for b, e in zip(BASE, [0.04, -0.03, 0.03, -0.02, 0.01])]
  r = stats.superiority(BASE, noisy)
  assert r["verdict"] == "inconclusive" and r["interval"]["lower"] < 0 < r["interval"]["upper"]
  # Four seeds: short of the design, whatever the numbers.
  r = stats.superiority(BASE[:4], plain[:4])
  assert r["verdict"] == "inconclusive" and "4 seeds" in r["why"]
  # A shared test set's sampling error widens the interval until it no longer decides.
  assert stats.superiority(BASE, plain, extra_se=0.02)["verdict"] == "inconclusive"


def test_superiority_interval_is_the_one_sided_t_bound():
  d = np.array([0.01, 0.03, 0.02, 0.00, 0.04])
  iv = stats.superiority(np.zeros(5), d)["interval"]
  t = 2.131846786326649  # t_{0.95, 4}
  assert iv["lower"] == pytest.approx(d.mean() - t * d.std(ddof=1) / np.sqrt(5))
  assert iv["upper"] == pytest.approx(d.mean() + t * d.std(ddof=1) / np.sqrt(5))


def test_equivalence_branches():
  tie = [b + e for b, e in zip(BASE, [0.002, -0.001, 0.0, 0.001, -0.002])]
  assert stats.equivalence(BASE, tie)["verdict"] == "reproduced"
  far = [b - 0.06 + e for b, e in zip(BASE, [0.002, -0.001, 0.0, 0.001, -0.002])]
  assert stats.equivalence(BASE, far)["verdict"] == "not reproduced"
  ahead = [b + 0.06 + e for b, e in zip(BASE, [0.002, -0.001, 0.0, 0.001, -0.002])]
  assert stats.equivalence(BASE, ahead)["verdict"] == "not reproduced"
  wide = [b + e for b, e in zip(BASE, [0.03, -0.03, 0.02, -0.02, 0.0])]
  assert stats.equivalence(BASE, wide)["verdict"] == "inconclusive"
  # A larger noise never helps: the rule that let a tie count as success is gone.
  assert stats.equivalence(BASE, tie, extra_se=0.05)["verdict"] == "inconclusive"
  assert stats.equivalence(BASE[:2], tie[:2])["verdict"] == "inconclusive"
  with pytest.raises(ValueError):
    stats.equivalence(BASE, tie[:4])


def _evidence(base_tasks, new_tasks, init_tasks, chance, init_seeds=3, num_test=1024):
  seeds = list(range(len(next(iter(base_tasks.values())))))
  return {"arms": {"a": {"seeds": seeds, "tasks": base_tasks},
                   "b": {"seeds": seeds, "tasks": new_tasks}},
          "random_init": {"seeds": list(range(init_seeds)), "tasks": init_tasks},
          "chance": chance, "num_test": num_test, "test_sets": "per_seed"}


def test_judge_floor_dropped_tasks_and_order():
  up = lambda x: [v + 0.05 for v in x]
  chance = {"x": 0.1, "y": 0.5}
  at_chance = [0.49, 0.50, 0.48, 0.50, 0.49]   # task y: every encoder at the majority rate
  ev = _evidence({"x": BASE, "y": at_chance}, {"x": up(BASE), "y": at_chance},
                 {"x": [0.3, 0.31, 0.29], "y": [0.5, 0.49, 0.5]}, chance)
  r = stats.judge("superiority", ev, "a", "b")
  assert list(r["dropped_tasks"]) == ["y"] and r["headline_tasks"] == ["x"]
  assert r["verdict"] == "reproduced"
  # The same arms against a random init as good as the baseline on x: uninformative.
  ev["random_init"]["tasks"]["x"] = [0.5, 0.5, 0.5]
  r = stats.judge("superiority", ev, "a", "b")
  assert r["verdict"] == "uninformative" and "a on x" in r["why"]
  assert r["test"]["verdict"] == "reproduced"  # kept for the report, not the verdict
  # Two init seeds: the floor is short of its design.
  ev = _evidence({"x": BASE}, {"x": up(BASE)}, {"x": [0.3, 0.3]}, {"x": 0.1}, init_seeds=2)
  assert stats.judge("superiority", ev, "a", "b")["verdict"] == "inconclusive"
  # Every task at chance: nothing left to judge.
  ev = _evidence({"y": at_chance}, {"y": at_chance}, {"y": [0.5] * 3}, {"y": 0.5})
  assert stats.judge("equivalence", ev, "a", "b")["verdict"] == "uninformative"
  # A shared test set adds its sampling error.
  ev = _evidence({"x": BASE}, {"x": up(BASE)}, {"x": [0.3] * 3}, {"x": 0.1}, num_test=100)
  ev["test_sets"] = "shared"
  r = stats.judge("superiority", ev, "a", "b")
  assert r["shared_test_se"] > 0.05 and r["verdict"] == "inconclusive"


def test_dropped_tasks_keeps_a_task_one_encoder_decodes():
  chance = {"t": 0.3}
  noise = stats.chance_noise(0.3, 1000)
  assert stats.dropped_tasks({"e": {"t": 0.3 + noise}}, chance, 1000)
  assert not stats.dropped_tasks({"e": {"t": 0.3 + noise + 0.001}, "f": {"t": 0.1}}, chance,
                                 1000)
