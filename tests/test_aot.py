"""The compile-only plan (`python -m layerlock_jax.aot`) against a real run's arrays and compile.

The CLI runs as a subprocess (it must choose its own device count before JAX starts; this pytest
process already has 8). Its numbers are checked against references built here without aot.py:
the parameter and optimizer-state bytes that real, initialised, sharded arrays occupy on device 0,
XLA's memory analysis of the train step compiled for those real arrays with default compiler
flags, the analytic FLOP model, and the Adam state size implied by the trainable parameter count.
"""
import json
import math
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from layerlock_jax import aot
from layerlock_jax.config import loading as config_loading
from layerlock_jax import flops
from layerlock_jax import hardware
from layerlock_jax.trainer import Trainer

ROOT = pathlib.Path(__file__).resolve().parent.parent
# configs/tiny.py on an 8-way FSDP mesh, so parameters really are split (width 128 / 8).
FSDP = {"mesh.data": 1, "mesh.fsdp": -1, "mesh.preset": "fsdp", "model.depth": 2}


def _config(file, overrides):
  return config_loading.load_config(ROOT / "configs" / file, overrides)


def _run_cli(*args, timeout=240):
  return subprocess.run([sys.executable, "-m", "layerlock_jax.aot", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def _shard_bytes_on(tree, device) -> int:
  """Bytes of the real shards that live on `device` (the reference for the abstract count)."""
  return sum(s.data.nbytes for leaf in jax.tree.leaves(tree)
             for s in leaf.addressable_shards if s.device == device)


@pytest.fixture(scope="module")
def cli_plan(tmp_path_factory):
  out = tmp_path_factory.mktemp("aot") / "plan.json"
  run = _run_cli("--config=configs/tiny.py", "--num_devices=8", "--accelerator=v5e",
                 f"--json={out}", *(f"--config.{k}={v}" for k, v in FSDP.items()))
  assert run.returncode == 0, run.stderr[-3000:]
  return json.loads(out.read_text()), run.stdout


@pytest.mark.slow
def test_cli_plan_agrees_with_a_real_compile(cli_plan):
  result, stdout = cli_plan
  # The plan is for an accelerator, where scan_unroll "auto" (0, the default) runs rolled, while
  # here on CPU auto would unroll: the reference compile pins what the plan compiled.
  assert result["scan_unroll"] == 1
  config = _config("tiny.py", {**FSDP, "model.scan_unroll": 1})
  trainer = Trainer(config, jax.devices())
  spec = trainer.spec_at(0)
  state = trainer.init_state(spec)  # real, allocated, sharded arrays
  d = config.data
  video = jax.device_put(np.zeros((config.batch_size, d.num_frames, d.image_size, d.image_size, 3),
                                  np.uint8), trainer.video_sharding)
  mem = trainer.step_fn(spec, state, video).memory_analysis()
  device = trainer.mesh.devices.flat[0]

  assert result["num_devices"] == 8 and result["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  assert result["parameters"] == sum(x.size for x in jax.tree.leaves((state.params,
                                                                      state.frozen)))
  [stage] = result["stages"]
  assert stage["frozen_layers"] == 0
  assert stage["param_bytes"] == _shard_bytes_on((state.params, state.frozen), device)
  assert stage["opt_state_bytes"] == _shard_bytes_on(state.opt_state, device)
  assert stage["batch_bytes"] == _shard_bytes_on(video, device)
  # FSDP really splits: device 0 holds far less than the whole model.
  whole = sum(x.nbytes for x in jax.tree.leaves((state.params, state.frozen)))
  assert stage["param_bytes"] < whole / 4
  # The plan's program is the real one, down to XLA's buffer assignment.
  assert stage["argument_bytes"] == mem.argument_size_in_bytes
  assert stage["output_bytes"] == mem.output_size_in_bytes
  assert stage["alias_bytes"] == mem.alias_size_in_bytes
  assert stage["temp_bytes"] == mem.temp_size_in_bytes
  assert stage["total_bytes"] == (mem.argument_size_in_bytes + mem.temp_size_in_bytes
                                  + mem.output_size_in_bytes - mem.alias_size_in_bytes)
  assert stage["argument_bytes"] == (stage["param_bytes"] + stage["opt_state_bytes"]
                                     + stage["batch_bytes"] + 4 + 4)  # + int32 step, uint32 seed
  fl = flops.step_flops(config)
  assert (stage["model_flops"], stage["hardware_flops"]) == (fl["model_flops"],
                                                             fl["hardware_flops"])
  assert f"{result['parameters']:,} parameters" in stdout
  assert "peak stage k=0" in stdout and "fits on v5e" in stdout


def test_stage_selection_and_adam_state_per_stage():
  """LayerLock tiny: k = 0 (pixels), 1 (first latent stage) and 4 (deepest) by default; Adam's
  two moments per trainable parameter shrink as blocks freeze (replicated mesh: exact)."""
  config = _config("layerlock_tiny.py", {})
  trainer = Trainer(config, jax.devices())
  ks = lambda which: [s.frozen_layers for s in aot.stage_specs(trainer, which)]
  assert ks("ends") == [0, 1, 4]
  assert ks("all") == [0, 1, 2, 3, 4]
  assert ks("4,0") == [0, 4]
  with pytest.raises(ValueError, match=r"k in \[7\]"):
    aot.stage_specs(trainer, "7")
  assert [s.frozen_layers for s in aot.stage_specs(Trainer(_config("tiny.py", {}))
                                                   )] == [0]
  device = trainer.mesh.devices.flat[0]
  total = sum(x.size for x in jax.tree.leaves(trainer.abstract_params))
  for spec in aot.stage_specs(trainer, "ends"):
    state = trainer.abstract_state(spec)
    trainable = sum(x.size for x in jax.tree.leaves(state.params))
    # data_parallel: every device holds everything; Adam = mu + nu (float32) + int32 counters.
    assert aot.device_bytes((state.params, state.frozen), device) == 4 * total
    counters = aot.device_bytes(state.opt_state, device) - 8 * trainable
    assert 0 < counters <= 64, counters


def test_fit_verdict_uses_the_accelerator_memory_table():
  gib = aot.GIB
  expected = {"v4": 32, "v5e": 16, "v5p": 95, "h100": 80, "h200": 141}
  for name, hbm in expected.items():
    assert hardware.HBM_GIB[hardware.ACCELERATORS[name]] == hbm
    assert aot.fits(int(hbm * gib * 0.95), name, 0.05)
    assert not aot.fits(int(hbm * gib * 0.95) + 1, name, 0.05)
    assert aot.fits(hbm * gib, name, 0.0)
    assert hardware.PEAK_FLOPS[hardware.ACCELERATORS[name]]["bfloat16"] > 1e14


def test_replicated_parameters_are_reported():
  """Plain data parallelism replicates everything; FSDP on 8 devices replicates only what 8 does
  not divide or no rule names (biases, norms) - a small remainder."""
  dp = Trainer(_config("tiny.py", {}), jax.devices())
  total = sum(x.size * 4 for x in jax.tree.leaves(dp.abstract_params))
  rep_bytes, largest = aot.replicated_params(dp)
  assert rep_bytes == total
  assert largest[0][1] == max(math.prod(x.shape) * 4 for x in jax.tree.leaves(dp.abstract_params))
  fsdp_bytes, _ = aot.replicated_params(
      Trainer(_config("tiny.py", FSDP), jax.devices()))
  assert 0 < fsdp_bytes < 0.2 * total


def test_cli_rejects_a_config_that_cannot_run_on_the_mesh():
  # 16 clips cannot be split over 3 data-parallel devices: the same one-line error as training.
  run = _run_cli("--config=configs/tiny.py", "--num_devices=3", timeout=120)
  assert run.returncode == 2
  assert "batch_size" in run.stderr.strip().splitlines()[-1]
  run = _run_cli("--config=configs/tiny.py", "--accelerator=tpu9", timeout=120)
  assert run.returncode == 2 and "--accelerator='tpu9'" in run.stderr
