"""Tests of the freeze table (plan), the learning-rate schedule (optimizer.py) and the naive-latent
weight (methods/layerlock.py).

Expected tables and values are written out by hand from the semantics in the docstrings of
optimizer.py and plan/layerlock.py (and, for ViT-G, from the LayerLock paper's schedule, arXiv
2509.10156), never produced by the code.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.methods import layerlock
from layerlock_jax import optimizer
from layerlock_jax import plan
from layerlock_jax.plan import Stage


def make_config(total_steps=100, **layerlock):
  c = config_defaults.base_config()
  c.total_steps = total_steps
  c.layerlock.enabled = True
  for key, value in layerlock.items():
    setattr(c.layerlock, key, value)
  return c


def rows(table):
  """(start_step, frozen_layers, target) triples, to compare with hand-written lists."""
  return [(s.start_step, s.frozen_layers, s.target) for s in table]


# --- freeze table: rule-based -------------------------------------------------------------------


def test_basic_boundaries_end_of_pixel():
  c = make_config(total_steps=100, pixel_steps=20, interval=10, jump=1, max_frozen=3)
  assert rows(plan.freeze_table(c, encoder_depth=6)) == [
      (0, 0, "pixels"), (20, 1, "block_1"), (30, 2, "block_2"), (40, 3, "block_3")]


def test_one_interval_later_shifts_every_event_by_one_interval():
  c = make_config(total_steps=100, pixel_steps=20, interval=10, jump=1, max_frozen=3,
                  first_freeze="one_interval_later")
  assert rows(plan.freeze_table(c, encoder_depth=6)) == [
      (0, 0, "pixels"), (30, 1, "block_1"), (40, 2, "block_2"), (50, 3, "block_3")]


def test_jump_two_is_clipped_at_the_cap():
  # Cap 5, jump 2: 2, 4, then 6 is clipped to 5 and the events stop.
  c = make_config(total_steps=1000, pixel_steps=100, interval=50, jump=2, max_frozen=5)
  assert rows(plan.freeze_table(c, encoder_depth=8)) == [
      (0, 0, "pixels"), (100, 2, "block_2"), (150, 4, "block_4"), (200, 5, "block_5")]


def test_cap_as_fraction_of_depth():
  # floor(0.5 * 7) = 3.
  c = make_config(total_steps=1000, pixel_steps=10, interval=10, max_frozen=-1,
                  max_frozen_fraction=0.5)
  assert rows(plan.freeze_table(c, encoder_depth=7)) == [
      (0, 0, "pixels"), (10, 1, "block_1"), (20, 2, "block_2"), (30, 3, "block_3")]


def test_cap_fraction_floor_is_robust_to_float_error():
  # 0.29 * 100 is 28.999999999999996 in binary floating point; the user means 29.
  c = make_config(max_frozen=-1, max_frozen_fraction=0.29)
  assert plan.frozen_cap(c, 100) == 29


def test_cap_as_count_overrides_fraction():
  c = make_config(max_frozen=2, max_frozen_fraction=0.9)
  assert plan.frozen_cap(c, 10) == 2


@pytest.mark.parametrize("max_frozen,fraction,depth,expected", [
    (12, 2 / 3, 12, 11),   # count above depth - 1 is clipped
    (-1, 1.0, 12, 11),     # fraction 1 would freeze everything; one block stays trainable
    (-1, 2 / 3, 12, 8),
    (-1, 3 / 4, 12, 9),
    (0, 2 / 3, 12, 0),
    (-1, 2 / 3, 1, 0),     # a single block can never be frozen
])
def test_frozen_cap_table(max_frozen, fraction, depth, expected):
  c = make_config(max_frozen=max_frozen, max_frozen_fraction=fraction)
  assert plan.frozen_cap(c, depth) == expected


def test_zero_cap_gives_only_the_pixel_stage():
  c = make_config(max_frozen=0)
  assert rows(plan.freeze_table(c, encoder_depth=12)) == [(0, 0, "pixels")]


def test_events_at_or_after_total_steps_are_dropped():
  # Events would be at 20, 30, 40, 50; total 40 keeps 20 and 30 (40 itself is dropped).
  c = make_config(total_steps=40, pixel_steps=20, interval=10, max_frozen=4)
  assert rows(plan.freeze_table(c, encoder_depth=6)) == [
      (0, 0, "pixels"), (20, 1, "block_1"), (30, 2, "block_2")]


def test_layerlock_disabled_is_one_pixel_stage():
  c = make_config(pixel_steps=20, interval=10, max_frozen=4,
                  explicit=((10, 1), (20, 2)))
  c.layerlock.enabled = False
  assert rows(plan.freeze_table(c, encoder_depth=6)) == [(0, 0, "pixels")]


def test_default_config_is_one_pixel_stage():
  c = config_defaults.base_config()
  assert plan.freeze_table(c, c.model.depth) == (Stage(0, 0, "pixels"),)


def test_pixel_target_baseline_freezes_but_keeps_pixel_target():
  c = make_config(total_steps=100, pixel_steps=20, interval=10, max_frozen=2, target="pixel")
  assert rows(plan.freeze_table(c, encoder_depth=6)) == [
      (0, 0, "pixels"), (20, 1, "pixels"), (30, 2, "pixels")]


def test_vit_g_paper_schedule():
  # LayerLock's ViT-G schedule: 160K pixel steps, interval 10K, jump 1, 32 of 48 blocks (2/3).
  c = make_config(total_steps=600_000, pixel_steps=160_000, interval=10_000, jump=1,
                  max_frozen=-1, max_frozen_fraction=2 / 3)
  table = plan.freeze_table(c, encoder_depth=48)
  assert len(table) == 33  # pixel stage + 32 freeze events
  assert table[1] == Stage(160_000, 1, "block_1")
  assert table[2] == Stage(170_000, 2, "block_2")
  assert table[-1] == Stage(470_000, 32, "block_32")
  assert rows(table)[1:] == [(160_000 + 10_000 * i, i + 1, f"block_{i + 1}") for i in range(32)]
  c.layerlock.first_freeze = "one_interval_later"
  later = plan.freeze_table(c, encoder_depth=48)
  assert later[1] == Stage(170_000, 1, "block_1")
  assert later[-1] == Stage(480_000, 32, "block_32")


def test_stage_is_frozen_and_ordered():
  c = make_config(total_steps=100, pixel_steps=20, interval=10, max_frozen=3)
  table = plan.freeze_table(c, 6)
  with pytest.raises(dataclasses.FrozenInstanceError):
    table[0].start_step = 5
  assert [s.start_step for s in table] == sorted(s.start_step for s in table)


@pytest.mark.parametrize("field,value", [
    ("first_freeze", "at_the_end"),
    ("interval", 0),
    ("jump", 0),
    ("pixel_steps", -1),
    ("target", "features"),
])
def test_invalid_rule_knobs_raise(field, value):
  c = make_config(pixel_steps=20, interval=10, max_frozen=2)
  setattr(c.layerlock, field, value)
  with pytest.raises(ValueError, match=field):
    plan.freeze_table(c, 6)


def test_freeze_at_step_zero_is_rejected():
  c = make_config(pixel_steps=0, interval=10, max_frozen=2)
  with pytest.raises(ValueError, match="pixel_steps"):
    plan.freeze_table(c, 6)
  # With one_interval_later the first event is at step 10, which is fine.
  c.layerlock.first_freeze = "one_interval_later"
  assert rows(plan.freeze_table(c, 6)) == [(0, 0, "pixels"), (10, 1, "block_1"), (20, 2, "block_2")]


# --- freeze table: explicit ------------------------------------------------------------------------


def test_explicit_schedule_is_used_verbatim():
  # The rule knobs would give something else entirely; explicit wins.
  c = make_config(total_steps=1000, pixel_steps=20, interval=10, max_frozen=6,
                  explicit=((7, 2), (300, 3), (301, 6)))
  assert rows(plan.freeze_table(c, encoder_depth=8)) == [
      (0, 0, "pixels"), (7, 2, "block_2"), (300, 3, "block_3"), (301, 6, "block_6")]


def test_explicit_entries_past_total_steps_are_dropped():
  c = make_config(total_steps=300, max_frozen=6, explicit=((7, 2), (300, 3), (400, 4)))
  assert rows(plan.freeze_table(c, encoder_depth=8)) == [(0, 0, "pixels"), (7, 2, "block_2")]


@pytest.mark.parametrize("explicit", [
    ((0, 1),),                 # step 0 belongs to the pixel stage
    ((10, 1), (10, 2)),        # steps not strictly increasing
    ((20, 1), (10, 2)),        # steps decreasing
    ((10, 2), (20, 2)),        # k not strictly increasing
    ((10, 3), (20, 1)),        # k decreasing
    ((10, 0),),                # k below 1
    ((10, 1), (20, 4)),        # k above the cap (3)
    ((10, 1, 5),),             # not a pair
    (10, 20),                  # flat steps, no k
    ((10.5, 1),),              # non-integer step
])
def test_invalid_explicit_schedules_raise(explicit):
  c = make_config(total_steps=1000, max_frozen=3, explicit=explicit)
  with pytest.raises(ValueError, match=r"config\.layerlock\.explicit"):
    plan.freeze_table(c, encoder_depth=8)


# --- lookups -----------------------------------------------------------------------------------------


def test_stage_lookup_python_values():
  table = (Stage(0, 0, "pixels"), Stage(5, 1, "block_1"), Stage(8, 3, "block_3"))
  expected_index = {0: 0, 4: 0, 5: 1, 7: 1, 8: 2, 100: 2, -3: 0}
  for step, idx in expected_index.items():
    got = plan.stage_index_at(table, step)
    assert got == idx and type(got) is int
  assert plan.stage_index_at(table, np.int64(6)) == 1


def test_target_switch_steps():
  table = (Stage(0, 0, "pixels"), Stage(5, 1, "block_1"), Stage(8, 3, "block_3"))
  assert optimizer.target_switch_steps(table) == (5, 8)
  pixel_only = (Stage(0, 0, "pixels"), Stage(5, 1, "pixels"), Stage(8, 3, "pixels"))
  assert optimizer.target_switch_steps(pixel_only) == ()
  assert optimizer.target_switch_steps((Stage(0, 0, "pixels"),)) == ()


# --- learning rate -----------------------------------------------------------------------------------


def lr_config(target="latent", mini=4, enabled=True):
  # Peak 2.0, floor 0.2, warmup 10, total 110: the cosine runs over 100 steps, from 10 to 110.
  c = make_config(total_steps=110, pixel_steps=40, interval=20, jump=1, max_frozen=2,
                  target=target, mini_warmup_steps=mini)
  c.layerlock.enabled = enabled
  c.optimizer.lr, c.optimizer.min_lr, c.optimizer.warmup_steps = 2.0, 0.2, 10
  return c


def base_lr(step):
  """Hand-written reference: 2.0 * step / 10 in warmup, then 0.2 + 1.8 * 0.5 * (1 + cos)."""
  if step < 10:
    return 2.0 * step / 10
  return 0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * min(step - 10, 100) / 100))


def test_lr_warmup_cosine_values():
  c = lr_config(enabled=False)
  fn = optimizer.learning_rate_fn(c, plan.freeze_table(c, 6))
  hand = {0: 0.0, 5: 1.0, 10: 2.0, 35: 0.2 + 0.9 * (1 + math.sqrt(0.5)), 60: 1.1, 110: 0.2,
          200: 0.2}
  for step, value in hand.items():
    np.testing.assert_allclose(float(fn(step)), value, rtol=1e-6, atol=1e-7)


def test_lr_mini_warmup_after_each_target_switch():
  c = lr_config(target="latent", mini=4)
  table = plan.freeze_table(c, 6)
  assert rows(table) == [(0, 0, "pixels"), (40, 1, "block_1"), (60, 2, "block_2")]
  fn = jax.jit(optimizer.learning_rate_fn(c, table))
  # base(40) = 0.2 + 0.9 * (1 + cos(0.3 pi)), cos(0.3 pi) = 0.5877852523.
  np.testing.assert_allclose(float(fn(40)), 0.25 * (0.2 + 0.9 * 1.5877852523), rtol=1e-6)
  factors = {39: 1.0, 40: 0.25, 41: 0.5, 42: 0.75, 43: 1.0, 50: 1.0,
             59: 1.0, 60: 0.25, 61: 0.5, 63: 1.0, 100: 1.0}
  for step, factor in factors.items():
    np.testing.assert_allclose(float(fn(step)), factor * base_lr(step), rtol=1e-6,
                               err_msg=f"step {step}")


def test_lr_mini_warmup_long_ramp_restarts_at_next_switch():
  # Ramp of 30 steps is longer than the 20-step interval: the second switch restarts it.
  c = lr_config(target="latent", mini=30)
  fn = optimizer.learning_rate_fn(c, plan.freeze_table(c, 6))
  for step, factor in {40: 1 / 30, 59: 20 / 30, 60: 1 / 30, 74: 15 / 30, 89: 1.0}.items():
    np.testing.assert_allclose(float(fn(step)), factor * base_lr(step), rtol=1e-6)


def test_no_mini_warmup_for_pixel_target_baseline():
  c = lr_config(target="pixel", mini=4)
  fn = optimizer.learning_rate_fn(c, plan.freeze_table(c, 6))
  for step in (39, 40, 41, 60, 61):
    np.testing.assert_allclose(float(fn(step)), base_lr(step), rtol=1e-6)


def test_mini_warmup_zero_disables_it():
  c = lr_config(target="latent", mini=0)
  fn = optimizer.learning_rate_fn(c, plan.freeze_table(c, 6))
  for step in (40, 41, 60):
    np.testing.assert_allclose(float(fn(step)), base_lr(step), rtol=1e-6)


def test_lr_schedule_drives_optax():
  # optax passes its step count to the schedule: with SGD and a unit gradient the update at count n
  # is -lr(n), so count 0 gives 0 and count 5 gives -lr(5) = -1.
  c = lr_config(enabled=False)
  opt = optax.sgd(optimizer.learning_rate_fn(c, plan.freeze_table(c, 6)))
  params = jnp.zeros(())
  state = opt.init(params)
  updates, state = opt.update(jnp.ones(()), state, params)
  assert float(updates) == 0.0
  for _ in range(4):
    updates, state = opt.update(jnp.ones(()), state, params)
  updates, state = opt.update(jnp.ones(()), state, params)
  np.testing.assert_allclose(float(updates), -1.0, rtol=1e-6)  # lr(5) = 1.0


# --- naive latent weight -----------------------------------------------------------------------------


def test_naive_latent_weight_constant():
  c = config_defaults.base_config()
  c.total_steps = 100
  c.naive_latent.weight = 0.5
  c.naive_latent.weight_schedule = "constant"
  fn = jax.jit(layerlock.naive_latent_weight_fn(c))
  for step in (0, 50, 100, 250):
    np.testing.assert_allclose(float(fn(step)), 0.5)


def test_naive_latent_weight_cosine():
  c = config_defaults.base_config()
  c.total_steps = 100
  c.naive_latent.weight = 0.5
  c.naive_latent.weight_schedule = "cosine"
  fn = jax.jit(layerlock.naive_latent_weight_fn(c))
  # 0.5 * 0.5 * (1 - cos(pi/4)) = 0.25 * (1 - 0.70710678) = 0.0732233.
  hand = {0: 0.0, 25: 0.0732233, 50: 0.25, 100: 0.5, 150: 0.5}
  for step, value in hand.items():
    np.testing.assert_allclose(float(fn(step)), value, rtol=1e-5, atol=1e-7)


def test_naive_latent_unknown_schedule_raises():
  c = config_defaults.base_config()
  c.naive_latent.weight_schedule = "linear"
  with pytest.raises(ValueError, match="weight_schedule"):
    layerlock.naive_latent_weight_fn(c)


# --- format_table ------------------------------------------------------------------------------------


def test_format_table():
  table = (Stage(0, 0, "pixels"), Stage(160_000, 1, "block_1"), Stage(170_000, 2, "block_2"))
  text = plan.format_table(table, total_steps=200_000)
  assert text.splitlines() == [
      "stage  from step  to step  frozen blocks  target    steps",
      "    0          0   160000              0  pixels   160000",
      "    1     160000   170000              1  block_1   10000",
      "    2     170000   200000              2  block_2   30000",
  ]
