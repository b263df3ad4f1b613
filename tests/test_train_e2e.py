"""End to end: the shipped tiny configs, shrunk, trained through the real loop (kauldron style)."""
import json
import pathlib

import jax
import numpy as np
import pytest

from layerlock_jax import config_loading
from layerlock_jax import config_validation
from layerlock_jax import schedule
from layerlock_jax import train

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Whole training runs (tens of seconds each): the full tier only.
pytestmark = pytest.mark.slow


def load_config(name):
  return config_loading.load_config(ROOT / "configs" / f"{name}.py")


def shrink(config, steps=40):
  config.total_steps = steps
  config.batch_size = 8
  config.log_every = 5
  config.checkpoint_every = 0
  config.model.width, config.model.depth, config.model.mlp_dim = 32, 3, 64
  config.model.num_heads = 2
  config.model.decoder.width, config.model.decoder.num_heads = 32, 2
  config.model.decoder.mlp_dim = 64
  config.data.num_frames, config.data.image_size, config.data.num_clips = 8, 16, 256
  config.optimizer.warmup_steps = 5
  config.optimizer.lr = 3e-3
  return config


def read_metrics(workdir):
  with open(pathlib.Path(workdir) / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


# Wall-clock fields differ between runs by nature; everything else must be identical.
TIMING = {"steps_per_sec", "clips_per_sec", "eta_sec", "mfu", "step_time_sec", "train_seconds",
          "achieved_flops_per_sec"}


def deterministic_part(rows):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_tiny_run_learns_and_is_deterministic(tmp_path):
  config = shrink(load_config("tiny"))
  config_validation.validate(config, num_devices=1)
  train.run(config, str(tmp_path / "a"), devices=jax.devices()[:1])
  rows = read_metrics(tmp_path / "a")
  assert [r["step"] for r in rows] == list(range(5, 41, 5))
  for key in ("loss", "lr", "grad_norm", "steps_per_sec", "param_norm", "frozen_layers"):
    assert key in rows[-1]
  assert rows[-1]["loss"] < 0.8 * rows[0]["loss"], [r["loss"] for r in rows]
  assert (tmp_path / "a" / "config.json").exists()
  assert list((tmp_path / "a" / "tensorboard").iterdir())

  train.run(config, str(tmp_path / "b"), devices=jax.devices()[:1])
  assert deterministic_part(read_metrics(tmp_path / "b")) == deterministic_part(rows)


def test_fsdp_on_8_devices_matches_1_device(tmp_path):
  config = shrink(load_config("tiny"), steps=10)
  config.log_every = 1
  train.run(config, str(tmp_path / "one"), devices=jax.devices()[:1])
  config.mesh.data, config.mesh.fsdp, config.mesh.preset = 2, 4, "fsdp"
  config_validation.validate(config, num_devices=8)
  train.run(config, str(tmp_path / "eight"), devices=jax.devices()[:8])
  one = [r["loss"] for r in read_metrics(tmp_path / "one")]
  eight = [r["loss"] for r in read_metrics(tmp_path / "eight")]
  np.testing.assert_allclose(eight, one, rtol=1e-4)


def test_layerlock_run_passes_stages_with_one_compile_each(tmp_path):
  config = shrink(load_config("layerlock_tiny"), steps=24)
  config.layerlock.pixel_steps, config.layerlock.interval = 8, 5
  config.layerlock.max_frozen, config.layerlock.mini_warmup_steps = 2, 2
  table = schedule.freeze_table(config, 3)
  assert [(s.start_step, s.frozen_layers) for s in table] == [(0, 0), (8, 1), (13, 2)]
  result = train.run(config, str(tmp_path), devices=jax.devices()[:1])
  assert result.compiles == len(table) == 3
  rows = read_metrics(tmp_path)
  by_step = {r["step"]: r for r in rows}
  assert by_step[5]["target"] == "pixels" and "latent_loss" not in by_step[5]
  assert by_step[10]["frozen_layers"] == 1 and by_step[10]["target"] == "block_1"
  assert by_step[20]["frozen_layers"] == 2 and np.isfinite(by_step[20]["latent_loss"])
  assert jax.tree.leaves(result.state.frozen["encoder"])[0].shape[0] == 2


def test_naive_latent_baseline_trains_every_block(tmp_path):
  config = shrink(load_config("tiny"), steps=10)
  config.naive_latent.enabled = True
  config.naive_latent.layer = 2
  result = train.run(config, str(tmp_path), devices=jax.devices()[:1])
  rows = read_metrics(tmp_path)
  assert all("latent_loss" in r and r["frozen_layers"] == 0 for r in rows)
  assert all(np.isfinite(r["latent_loss"]) and r["latent_loss"] > 0 for r in rows)
  assert "encoder" not in result.state.frozen
  # Every encoder block (and the embedding, the latent head) moved away from its initial value,
  # the initial state being the run's own (same seed, same init program).
  programs = train.StagePrograms(config, jax.devices()[:1])
  initial = jax.device_get(programs.init_state(programs.spec_at(0)).params)
  final = jax.device_get(result.state.params)
  depth = config.model.depth
  for (path, before), after in zip(jax.tree_util.tree_flatten_with_path(initial["encoder"])[0],
                                   jax.tree.leaves(final["encoder"]), strict=True):
    before, after = np.asarray(before), np.asarray(after)
    assert after.shape[0] == depth
    moved = [not np.array_equal(before[i], after[i]) for i in range(depth)]
    assert all(moved), (jax.tree_util.keystr(path), moved)
  for group in ("embed", "latent_head"):
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree.leaves(initial[group]), jax.tree.leaves(final[group]), strict=True))
