"""Compile costs: the persistent cache of real runs and the next stage compiled ahead."""
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

from layerlock_jax import compilation
from conftest import TEST_XLA_FLAGS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_cache_dir_setting_resolves(monkeypatch, tmp_path):
  assert compilation.resolve_cache_dir("") is None
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compilation.resolve_cache_dir("auto") == str(tmp_path / "xdg" / "layerlock_jax" / "xla")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compilation.resolve_cache_dir("auto") == str(
      tmp_path / "home" / ".cache" / "layerlock_jax" / "xla")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
  assert compilation.resolve_cache_dir("auto") == str(tmp_path / "env")  # JAX's own variable wins
  assert compilation.resolve_cache_dir("~/c") == str(tmp_path / "home" / "c")  # explicit beats env


def test_unusable_cache_dir_is_one_clear_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(compilation.CompileCacheError, match="config.compile_cache_dir"):
    compilation.enable_persistent_cache(str(blocker / "xla"))


def test_ahead_helps_only_with_spare_cores():
  assert compilation.ahead_helps("gpu", cpu_count=2)
  assert compilation.ahead_helps("tpu", cpu_count=1)
  assert not compilation.ahead_helps("cpu", cpu_count=2)
  assert compilation.ahead_helps("cpu", cpu_count=8)


def test_ahead_compiler_runs_in_order_off_thread_and_reraises_errors():
  ahead, seen = compilation.AheadCompiler(), []
  release = threading.Event()

  def job(name):
    def run():
      release.wait(10)
      seen.append((name, threading.current_thread().name))
      if name == "bad":
        raise ValueError("lowering failed")
      return name
    return run

  for name in ("first", "bad", "third"):
    ahead.submit(name, job(name))
  assert ahead.submit("first", job("again")) is ahead.submit("first", job("again"))  # once per key
  assert set(ahead.pending()) == {"first", "bad", "third"}
  release.set()
  assert ahead.take("third") == "third"
  with pytest.raises(ValueError, match="lowering failed"):  # surfaces in the taking thread
    ahead.take("bad")
  assert ahead.take("first") == "first"
  assert ahead.take("never") is None
  assert [n for n, _ in seen] == ["first", "bad", "third"]
  assert all(t == "compile-ahead" for _, t in seen)


def _main(workdir, cache, *extra):
  """The README's LayerLock command, shrunk to two stages of a tiny model, on 4 CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {TEST_XLA_FLAGS}")
  args = ["--config.total_steps=8", "--config.batch_size=8", "--config.log_every=4",
          "--config.checkpoint_every=0", "--config.model.width=32", "--config.model.depth=2",
          "--config.model.mlp_dim=64", "--config.model.num_heads=2",
          "--config.model.decoder.width=32", "--config.model.decoder.num_heads=2",
          "--config.model.decoder.mlp_dim=64", "--config.data.num_frames=4",
          "--config.data.image_size=16", "--config.data.num_clips=64",
          "--config.optimizer.warmup_steps=2", "--config.layerlock.pixel_steps=4",
          "--config.layerlock.max_frozen=1", "--config.layerlock.mini_warmup_steps=2"]
  proc = subprocess.run(
      [sys.executable, "-m", "layerlock_jax.main", "--config=configs/layerlock_tiny.py",
       f"--workdir={workdir}", f"--config.compile_cache_dir={cache}", *args, *extra],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(workdir / "summary.json") as f:
    return json.load(f)


@pytest.mark.slow
def test_rerun_compiles_nothing_and_ahead_program_is_the_same_program(tmp_path):
  cache = tmp_path / "xla"
  first = _main(tmp_path / "a", cache, "--config.precompile_next_stage=True")
  assert [(p["frozen_layers"], p["cache"], p["ahead"]) for p in first["programs"]] == [
      (0, "miss", False), (1, "miss", True)]
  assert first["compile_cache_dir"] == str(cache) and any(cache.iterdir())
  # A fresh workdir, the same command: every stage program is loaded, none compiled. The k=1
  # program is now built in the foreground from the real state; that it HITS the entry written by
  # the ahead compile (from abstract inputs) shows the two are the same XLA program.
  second = _main(tmp_path / "b", cache, "--config.precompile_next_stage=False")
  assert [(p["frozen_layers"], p["cache"], p["ahead"]) for p in second["programs"]] == [
      (0, "hit", False), (1, "hit", False)]
  assert second["final"]["loss"] == first["final"]["loss"]
  assert second["final"]["latent_loss"] == first["final"]["latent_loss"]
