"""The entry point refuses bad configs with one line naming the field, before compiling anything."""
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import TEST_XLA_FLAGS

ROOT = pathlib.Path(__file__).resolve().parent.parent

BAD = [
    ("--config.model.num_heads=5", "config.model.num_heads"),
    ("--config.data.image_size=36", "config.data.image_size"),
    ("--config.data.num_frames=15", "config.data.num_frames"),
    ("--config.masking.ratio=1.0", "config.masking.ratio"),
    ("--config.mesh.fsdp=3", "config.mesh"),
    ("--config.batch_size=6", "config.batch_size"),
]


def run_main(*args, devices=4):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}")
  return subprocess.run([sys.executable, "-m", "layerlock_jax.main", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override,field", BAD)
def test_bad_config_exits_with_one_line_naming_the_field(tmp_path, override, field):
  proc = run_main("--config=configs/tiny.py", f"--workdir={tmp_path}", override)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith(("W", "I"))]
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("Config error: ") and field in lines[0]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "metrics.jsonl").exists()


def test_missing_data_directory_is_named(tmp_path):
  proc = run_main("--config=configs/tiny.py", f"--workdir={tmp_path}",
                  "--config.data.source=video_folder", f"--config.data.path={tmp_path}/nope")
  assert proc.returncode == 2
  assert "config.data.path" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("module", ["main", "evaluate", "aot"])
def test_misspelt_override_is_one_line_with_the_closest_fields(tmp_path, module):
  """Every command that takes --config: an override of a field the config lacks is one line
  naming it and the closest existing fields, exit status 2 (not ml_collections' traceback)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=TEST_XLA_FLAGS)
  proc = subprocess.run(
      [sys.executable, "-m", f"layerlock_jax.{module}", "--config=configs/tiny.py",
       f"--workdir={tmp_path}", "--config.data.num_frmaes=8"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith(("W", "I"))]
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith("Config error: config.data.num_frmaes: no such field; closest: "
                             "config.data.num_frames"), proc.stderr
  assert "Traceback" not in proc.stderr
