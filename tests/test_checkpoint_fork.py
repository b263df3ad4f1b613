"""fork_from: a run started from another run's checkpoint at step N equals the same config trained
from step 0, when the two runs' first N steps are the same computation; otherwise it is refused
before anything is written.

The reference is an uninterrupted LayerLock run (pixel stage for 12 steps, then block 1 frozen with
the latent target); the source is pixel MAE with the same everything else, checkpointed every 4
steps. LayerLock forked from MAE's checkpoint 12 must end with the reference's bits and log the
reference's numbers, the first 12 rows included (copied from MAE's log).
"""
import json
import os

import pytest

from layerlock_jax.checkpoint import fork as checkpoint_fork
from layerlock_jax.checkpoint import manager as checkpoint
from layerlock_jax.config import validation as config_validation
from layerlock_jax import plan
from layerlock_jax import train
from test_checkpoint import make_config, leaves_equal, records, one_device, DETERMINISTIC, STEPS

FIRST_FREEZE = 12  # test_checkpoint.LAYERLOCK's pixel_steps


def deterministic(rows):
  return [{k: r[k] for k in DETERMINISTIC if k in r} for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  out = {}
  for name, extra in (("mae", {"layerlock.enabled": False}), ("layerlock", {})):
    workdir = str(tmp_path_factory.mktemp(name))
    out[name] = (workdir, train.run(make_config("layerlock", **extra), workdir,
                                    devices=one_device()))
  return out


def source_step(runs, step=FIRST_FREEZE):
  return os.path.join(runs["mae"][0], checkpoint.CHECKPOINTS, str(step))


def test_fork_from_mae_at_the_first_freeze_equals_layerlock_from_step_0(runs, tmp_path):
  ref_dir, ref = runs["layerlock"]
  # checkpoint_every only decides what is saved: a free field.
  config = make_config("layerlock", fork_from=source_step(runs), checkpoint_every=8)
  work = str(tmp_path / "fork")
  result = train.run(config, work, devices=one_device())
  assert result.start_step == FIRST_FREEZE
  assert leaves_equal(result.state, ref.state)
  assert deterministic(records(work)) == deterministic(records(ref_dir))
  assert [r["step"] for r in records(work)] == list(range(1, STEPS + 1))
  with open(os.path.join(work, "summary.json")) as f:
    assert json.load(f)["forked_from"] == source_step(runs)
  # The source is untouched and still ends where it did.
  assert sorted(int(s) for s in os.listdir(os.path.join(runs["mae"][0], "checkpoints"))) == list(
      range(4, STEPS + 1, 4))


def test_fork_is_refused_when_the_first_steps_differ_and_nothing_is_written(runs, tmp_path):
  work = tmp_path / "w"
  config = make_config("layerlock", fork_from=source_step(runs), **{"optimizer.lr": 2e-3})
  with pytest.raises(checkpoint.IncompatibleCheckpointError) as err:
    train.run(config, str(work), devices=one_device())
  assert "optimizer.lr: source 0.001 != this run 0.002" in str(err.value)
  assert "layerlock" not in str(err.value)  # its differences are allowed: same table before 12
  assert not os.path.exists(work / "config.json") and not os.path.exists(work / "metrics.jsonl")
  assert not os.path.exists(work / checkpoint.CHECKPOINTS) or not os.listdir(
      work / checkpoint.CHECKPOINTS)


def saved_config(runs, step=FIRST_FREEZE):
  ckpts = checkpoint.Checkpoints(os.path.join(runs["mae"][0], checkpoint.CHECKPOINTS),
                                 make_config("layerlock"), read_only=True)
  meta = ckpts.read_meta(step)
  ckpts.manager.close()
  return meta["config"]


def test_fork_checks_the_freeze_table_before_the_fork_step(runs):
  mae = saved_config(runs)
  checkpoint_fork.check_forkable(mae, make_config("layerlock"), FIRST_FREEZE, "src")
  # Freezing at step 8 < 12: LayerLock's steps 9..12 are not MAE's.
  early = make_config("layerlock", **{"layerlock.pixel_steps": 8})
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="freeze tables before step 12"):
    checkpoint_fork.check_forkable(mae, early, FIRST_FREEZE, "src")
  # The same run forked later (from MAE's step 8 into a run that freezes at 8) is fine.
  checkpoint_fork.check_forkable(saved_config(runs, 8), early, 8, "src")
  # A convergence trigger decides from signals of the source's steps: refused.
  trig = make_config("layerlock", **{"layerlock.trigger": "convergence"})
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="layerlock.trigger"):
    checkpoint_fork.check_forkable(mae, trig, FIRST_FREEZE, "src")
  # A field outside the schedule that acts from step 0 on (the mask ratio) is named.
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="masking.ratio"):
    checkpoint_fork.check_forkable(mae, make_config("layerlock", **{"masking.ratio": 0.5}),
                                   FIRST_FREEZE, "src")


def test_fork_from_and_init_from_together_are_a_config_error():
  config = make_config("layerlock", fork_from="/a", init_from="/b")
  with pytest.raises(plan.ConfigError, match="fork_from.*init_from"):
    config_validation.validate(config, num_devices=1)
