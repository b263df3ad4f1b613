"""Long runs: gradient accumulation, the divergence guard, profiling, and their checkpoint rules.

Every run here is configs/tiny.py shrunk to a few seconds of CPU (the same shapes as
test_checkpoint.py); the references are unsplit / uninterrupted runs of the same config, or
independent computations (numpy sums of per-micro-batch gradients).
"""
import asyncio
import concurrent.futures
import errno
import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from layerlock_jax import checkpoint
from layerlock_jax import config_loading
from layerlock_jax import config_validation
from layerlock_jax import guard as guard_lib
from layerlock_jax import masking
from layerlock_jax import train
from layerlock_jax import train_step as step_lib
from layerlock_jax.data import mixture
from layerlock_jax.data import pipeline
from conftest import TEST_XLA_FLAGS

ROOT = pathlib.Path(__file__).resolve().parent.parent
SMALL = {
    "total_steps": 12, "batch_size": 8, "log_every": 1, "checkpoint_every": 0,
    "model.width": 32, "model.depth": 2, "model.mlp_dim": 64, "model.num_heads": 2,
    "model.decoder.width": 32, "model.decoder.mlp_dim": 64, "model.decoder.num_heads": 2,
    "data.num_frames": 8, "data.image_size": 16, "data.num_clips": 64,
    "optimizer.warmup_steps": 4,
}


def make_config(**extra):
  return config_loading.load_config(ROOT / "configs" / "tiny.py", {**SMALL, **extra})


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def one_device():
  return jax.devices()[:1]


@pytest.fixture(scope="module")
def unsplit(tmp_path_factory):
  """12 steps of the unsplit batch: the reference of every accumulation test."""
  workdir = str(tmp_path_factory.mktemp("unsplit"))
  return workdir, train.run(make_config(checkpoint_every=6), workdir, devices=one_device())


# --- gradient accumulation -------------------------------------------------------------------------
def test_micro_batches_are_strided_rows_and_masks_do_not_depend_on_the_split():
  x = np.arange(8)
  np.testing.assert_array_equal(step_lib.micro_batches(x, 4), [[0, 4], [1, 5], [2, 6], [3, 7]])
  key = jax.random.key(3)
  rows = jnp.arange(8, dtype=jnp.uint32)
  whole = masking.sample_mask(masking.clip_keys(key, rows), 8, (4, 2, 2), 0.75, "random")
  for i, part in enumerate(step_lib.micro_batches(rows, 4)):
    got = masking.sample_mask(masking.clip_keys(key, part), 2, (4, 2, 2), 0.75, "random")
    for a, b in zip(got, whole):
      np.testing.assert_array_equal(a, np.asarray(b)[np.asarray(part)])


def test_accumulate_equals_mean_of_micro_batch_gradients():
  """Against an independent numpy reference: mean over micro-batches of per-row quadratic losses."""
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3,)).astype(np.float32)
  x = rng.normal(size=(8, 3)).astype(np.float32)

  def grad_fn(params, xb):
    loss = lambda p: (jnp.mean((xb @ p) ** 2), {"m": jnp.mean(xb)})
    return jax.value_and_grad(loss, has_aux=True)(params)

  (loss, aux), grads = jax.jit(step_lib.accumulate(grad_fn, 4))(jnp.asarray(w), jnp.asarray(x))
  np.testing.assert_allclose(loss, np.mean((x @ w) ** 2), rtol=1e-6)
  np.testing.assert_allclose(grads, 2 * x.T @ (x @ w) / 8, rtol=1e-5)
  np.testing.assert_allclose(aux["m"], x.mean(), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_grad_accum_4_matches_the_unsplit_batch_over_12_steps(unsplit, tmp_path):
  ref_dir, ref = unsplit
  result = train.run(make_config(grad_accum_steps=4), str(tmp_path), devices=one_device())
  got, want = records(tmp_path), records(ref_dir)
  assert [r["step"] for r in got] == list(range(1, 13))
  for key in ("loss", "pixel_loss", "grad_norm"):
    np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-3,
                               err_msg=key)
  for r, s in zip(got, want):  # per global step: same clips, same FLOPs and throughput basis
    assert r["clips_seen"] == s["clips_seen"] and r["flops_per_step"] == s["flops_per_step"]
  for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(ref.state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-4)
  # One micro-batch's activations live at a time: XLA's buffer assignment shows it.
  assert result.programs[0]["temp_bytes"] < ref.programs[0]["temp_bytes"]


# --- divergence guard ------------------------------------------------------------------------------
def launch(workdir, **extra):
  flags = [f"--config.{k}={v}" for k, v in {**SMALL, **extra}.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS}
  return subprocess.run(
      [sys.executable, "-m", "layerlock_jax.main", f"--config={ROOT / 'configs' / 'tiny.py'}",
       f"--workdir={workdir}", *flags], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=300)


def all_finite(tree):
  return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


@pytest.mark.slow
def test_huge_lr_stops_with_one_line_and_leaves_only_finite_checkpoints(tmp_path):
  work = str(tmp_path / "w")
  proc = launch(work, **{"optimizer.lr": 1e12, "optimizer.grad_clip": 0, "checkpoint_every": 1,
                         "keep_checkpoints": 50})
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  lines = [l for l in proc.stderr.splitlines() if "Non-finite" in l]
  rows = records(work)
  first_bad = next(r["step"] for r in rows if r["nonfinite"])
  steps = sorted(int(s) for s in os.listdir(os.path.join(work, "checkpoints")) if s.isdigit())
  assert lines == [f"Non-finite loss at step {first_bad}; last good checkpoint: step {steps[-1]} "
                   f"in {os.path.join(work, 'checkpoints')}"], proc.stderr[-2000:]
  assert rows[-1]["step"] == first_bad < SMALL["total_steps"]  # stopped at once
  assert steps[-1] < first_bad
  trainer = train.StagePrograms(make_config(**{"optimizer.grad_clip": 0}), one_device())
  restored = checkpoint.restore(work, trainer)
  assert restored.step == steps[-1] and all_finite(restored.state)


@pytest.mark.slow
def test_skip_nonfinite_updates_keeps_the_state_then_stops(tmp_path):
  work = str(tmp_path)
  config = make_config(**{"optimizer.lr": 1e12, "optimizer.grad_clip": 0, "checkpoint_every": 1,
                          "keep_checkpoints": 50, "skip_nonfinite_updates": 2})
  with pytest.raises(guard_lib.NonFiniteError) as err:
    train.run(config, work, devices=one_device())
  rows = records(work)
  bad = [r["step"] for r in rows if r["nonfinite"]]
  assert len(bad) == 3 and err.value.step == bad[2] == rows[-1]["step"], (bad, str(err.value))
  assert err.value.last_good == bad[1]  # skipped steps keep a finite state, so they are saved
  trainer = train.StagePrograms(config, one_device())
  before = checkpoint.restore(os.path.join(work, "checkpoints", str(bad[0] - 1)), trainer)
  skipped = checkpoint.restore(os.path.join(work, "checkpoints", str(bad[0])), trainer)
  after = checkpoint.restore(os.path.join(work, "checkpoints", str(bad[1])), trainer)
  assert all_finite(after.state)
  for a, b in zip(jax.tree.leaves((skipped.state.params, skipped.state.opt_state)),
                  jax.tree.leaves((before.state.params, before.state.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the bad update was dropped
  assert int(after.state.step) == bad[1]  # the step counter still advanced


# --- profiling ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_profile_steps_write_an_xplane_trace(tmp_path):
  config = make_config(profile_steps=(2, 3))  # SMALL's program: a compile-cache hit
  train.run(config, str(tmp_path), devices=one_device())
  traces = glob.glob(str(tmp_path / "tensorboard" / "plugins" / "profile" / "*" / "*.xplane.pb"))
  assert len(traces) == 1, traces
  data = jax.profiler.ProfileData.from_file(traces[0])
  names = {plane.name for plane in data.planes}
  assert any(n.startswith("/host:CPU") for n in names), names
  events = {e.name for plane in data.planes for line in plane.lines for e in line.events}
  assert any("train_step" in n for n in events), sorted(events)[:50]


# --- data mixtures --------------------------------------------------------------------------------
MIX = ({"source": "moving_mnist", "weight": 0.7}, {"source": "gratings", "weight": 0.3})


def mixture_data(**extra):
  config = make_config(**extra)
  config.data.sources = MIX
  return config


def test_weighted_selection_counts_and_positions_are_consistent():
  sel = mixture.WeightedSelection([0.7, 0.3])
  picks = [sel[j] for j in range(1000)]
  sources = np.array([p[0] for p in picks])
  # Position j of the stream is record #(earlier picks of the same source) of that source.
  for i in (0, 1):
    np.testing.assert_array_equal([p[1] for p in picks if p[0] == i],
                                  np.arange((sources == i).sum()))
  for n in (0, 1, 7, 10, 999, 1000):
    np.testing.assert_array_equal(sel.counts(n), np.bincount(sources[:n], minlength=2))
  odd = mixture.WeightedSelection([1, 2, 3.5])
  got = np.bincount([odd[j][0] for j in range(6500)], minlength=3) / 6500
  np.testing.assert_allclose(got, np.array([1, 2, 3.5]) / 6.5, atol=1e-3)


def test_mixture_proportions_over_1000_clips_and_exact_resume():
  config = mixture_data(**{"data.num_frames": 4})
  config_validation.validate(config, num_devices=1)
  it = pipeline.make_train_iterator(config.data, seed=0, global_batch_size=8, process_index=0,
                                    process_count=1)
  batches = [next(it) for _ in range(125)]  # 1000 clips
  state = it.get_state()
  tail = [next(it) for _ in range(3)]
  it.close()
  tags = np.concatenate([b["source"] for b in batches])
  assert abs(np.mean(tags == 0) - 0.7) <= 0.03 and abs(np.mean(tags == 1) - 0.3) <= 0.03
  assert mixture.clip_counts(config.data, 1000) == {
      "clips_seen_0_moving_mnist": int(np.sum(tags == 0)),
      "clips_seen_1_gratings": int(np.sum(tags == 1))}
  # The sources really are different data, clip by clip: a moving-digit clip is grey (R = G = B)
  # and mostly black; a gratings clip is coloured, or grey and mostly lit (a full-field wave).
  videos = np.concatenate([b["video"] for b in batches])
  grey = np.all((videos[..., 0] == videos[..., 1]) & (videos[..., 1] == videos[..., 2]),
                axis=(1, 2, 3))
  black = np.mean(videos == 0, axis=(1, 2, 3, 4)) > 0.5
  np.testing.assert_array_equal(grey & black, tags == 0)
  resumed = pipeline.make_train_iterator(config.data, seed=0, global_batch_size=8,
                                         process_index=0, process_count=1)
  resumed.set_state(state)
  for want in tail:
    got = next(resumed)
    for key in ("video", "source"):
      np.testing.assert_array_equal(got[key], want[key])
  resumed.close()


def test_mixture_training_logs_per_source_counts_and_resumes_exactly(tmp_path):
  config = mixture_data(checkpoint_every=6, log_every=3)  # SMALL's program: a compile-cache hit
  full = train.run(config, str(tmp_path / "full"), devices=one_device())
  rows = records(tmp_path / "full")
  assert [r["clips_seen_0_moving_mnist"] + r["clips_seen_1_gratings"] for r in rows] == [
      24, 48, 72, 96]
  assert [r["clips_seen_1_gratings"] for r in rows] == [7, 14, 22, 29]  # 24 clips: 0.3 * 24 = 7.2
  work = tmp_path / "resumed"
  shutil.copytree(tmp_path / "full", work)
  shutil.rmtree(work / "checkpoints" / "12")
  resumed = train.run(config, str(work), devices=one_device())
  assert resumed.start_step == 6
  for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(full.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert records(work)[-1] == {**records(work)[-1], **{
      k: v for k, v in rows[-1].items() if k.startswith(("clips_seen", "loss"))}}


# --- fault drills ---------------------------------------------------------------------------------
def copy_run(src, dst, keep_upto):
  """A copy of a finished run with only its checkpoints <= keep_upto (what a crash leaves)."""
  shutil.copytree(src, dst)
  for step in os.listdir(os.path.join(dst, "checkpoints")):
    if step.isdigit() and int(step) > keep_upto:
      shutil.rmtree(os.path.join(dst, "checkpoints", step))
  return str(dst)


def assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_disk_full_during_async_checkpoint_stops_and_keeps_the_previous_one(unsplit, tmp_path,
                                                                             monkeypatch):
  """Leaves: checkpoints/6 complete; the failed step 12 only as a temporary directory, which the
  next start deletes. A rerun resumes from 6 and ends with the uninterrupted run's bits."""
  real = ocp.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access
  calls = []

  async def full_disk(self, x, directory):
    calls.append(str(directory))
    if len(calls) > 1:  # the first save (step 6) succeeds, the next write finds the disk full
      raise OSError(errno.ENOSPC, "No space left on device", str(directory))
    return await real(self, x, directory)

  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
  work = str(tmp_path)
  before = set(threading.enumerate())
  new_threads = lambda: {t for t in set(threading.enumerate()) - before if not t.daemon}
  with pytest.raises(checkpoint.CheckpointWriteError) as err:
    train.run(make_config(checkpoint_every=6), work, devices=one_device())
  # Orbax's background threads of the failed save end on their own (in a real run the process
  # exits); the rerun below must not race with them in this process.
  deadline = time.monotonic() + 60
  while new_threads() and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not new_threads()
  # Orbax surfaces a follow-up error of its clean-up, not the ENOSPC (which it logs); the message
  # names what is intact and the free space.
  assert "(saving step 12)" in str(err.value) and "GiB free" in str(err.value)
  assert "the last complete checkpoint is step 6" in str(err.value)
  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", real)
  left = os.listdir(os.path.join(work, "checkpoints"))
  assert "6" in left and "12" not in left and all(n == "6" or "tmp" in n for n in left), left
  result = train.run(make_config(checkpoint_every=6), work, devices=one_device())
  assert result.start_step == 6
  assert_same_state(result.state, unsplit[1].state)


def test_sigterm_while_a_checkpoint_is_being_written(unsplit, tmp_path, monkeypatch):
  """The write of step 6 is slowed down and SIGTERM arrives while it is in flight. Leaves:
  checkpoints/6 and checkpoints/7 (the preemption save), both complete; exit is clean and a rerun
  continues to the uninterrupted run's bits."""
  real = ocp.JsonCheckpointHandler._save_fn  # pylint: disable=protected-access
  in_flight = []

  async def slow(self, x, directory):
    in_flight.append(True)
    os.kill(os.getpid(), signal.SIGTERM)  # arrives while this write is still running
    await asyncio.sleep(0.5)
    result = await real(self, x, directory)
    in_flight.pop()
    return result

  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", slow)
  work = str(tmp_path)
  handler_before = signal.getsignal(signal.SIGTERM)
  result = train.run(make_config(checkpoint_every=6), work, devices=one_device())
  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", real)
  assert result.preempted and not in_flight
  steps = sorted(int(s) for s in os.listdir(os.path.join(work, "checkpoints")) if s.isdigit())
  assert steps == [6, 7], steps
  trainer = train.StagePrograms(make_config(), one_device())
  assert checkpoint.restore(os.path.join(work, "checkpoints", "6"), trainer).step == 6
  # The run's own SIGTERM handler is gone again: the one from before the run is back.
  assert signal.getsignal(signal.SIGTERM) is handler_before
  final = train.run(make_config(checkpoint_every=6), work, devices=one_device())
  assert final.start_step == 7
  assert_same_state(final.state, unsplit[1].state)


def test_half_copied_checkpoint_is_set_aside_not_loaded(unsplit, tmp_path):
  """A step directory with files missing (an interrupted copy). Leaves: the broken step moved to
  checkpoints.corrupt/12-<time>/, the run resumed from 6 and rewrote 12 with the right bits."""
  work = copy_run(unsplit[0], tmp_path / "w", keep_upto=12)
  state_dir = pathlib.Path(work) / "checkpoints" / "12" / "state"
  data_files = sorted((p for p in state_dir.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
  data_files[0].unlink()  # the largest file of the state item: array data
  result = train.run(make_config(checkpoint_every=6), work, devices=one_device())
  assert result.start_step == 6
  aside = os.listdir(pathlib.Path(work) / "checkpoints.corrupt")
  assert len(aside) == 1 and aside[0].startswith("12-"), aside
  assert_same_state(result.state, unsplit[1].state)


@pytest.mark.slow
def test_resume_with_other_grad_accum_steps_and_device_count(unsplit, tmp_path):
  """Checkpoint 6 of the 1-device unsplit run resumed on 2 devices with 2 micro-batches per step:
  same clips and masks per step, so the end state matches to float tolerance."""
  work = copy_run(unsplit[0], tmp_path / "w", keep_upto=6)
  config = make_config(checkpoint_every=6, grad_accum_steps=2)
  config_validation.validate(config, num_devices=2)
  result = train.run(config, work, devices=jax.devices()[:2])
  assert result.start_step == 6
  got, want = records(work), records(unsplit[0])
  np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=1e-3)
  for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(unsplit[1].state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-4)


def _spawned_workers():
  """Pids of this process's children started by multiprocessing's spawn (grain's workers)."""
  pids = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    except OSError:
      continue
    if ppid == os.getpid() and b"spawn_main" in cmdline:
      pids.append(int(pid))
  return pids


def test_killed_grain_worker_is_a_clear_error_not_a_hang():
  """Leaves nothing on disk: the loop's next(data_iter) raises within seconds."""
  config = make_config(**{"data.num_workers": 1, "data.num_frames": 4})
  it = pipeline.make_train_iterator(config.data, seed=0, global_batch_size=8, process_index=0,
                                    process_count=1)
  next(it)
  workers = _spawned_workers()
  assert workers
  for pid in workers:
    os.kill(pid, signal.SIGKILL)

  def drain():
    for _ in range(100):
      next(it)

  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    future = pool.submit(drain)
    with pytest.raises(RuntimeError, match="terminated unexpectedly"):
      future.result(timeout=60)
  it.close()


# --- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, field, words", [
    ({"grad_accum_steps": 3}, "config.grad_accum_steps", "per-device batch 4"),
    ({"grad_accum_steps": 0}, "config.grad_accum_steps", "integer >= 1"),
    ({"skip_nonfinite_updates": -1}, "config.skip_nonfinite_updates", "integer >= 0"),
    ({"profile_steps": (7, 5)}, "config.profile_steps", "1 <= a <= b"),
    ({"data.sources": ({"source": "moving_mnist"},)}, "config.data.sources", "'weight'"),
    ({"data.sources": ({"source": "moving_mnist", "weight": 1, "num_frames": 4},)},
     "config.data.sources", "same for every source"),
    ({"data.sources": ({"source": "webcam", "weight": 1},)}, "config.data.sources", "webcam"),
    ({"data.sources": ({"source": "gratings", "weight": 1, "name": "a"},
                       {"weight": 1, "name": "a"})}, "config.data.sources", "named 'a'"),
])
def test_long_run_fields_are_validated(overrides, field, words):
  config = make_config(**overrides)
  with pytest.raises(config_validation.ConfigError) as err:
    config_validation.validate(config, num_devices=2)
  assert err.value.field == field and words in err.value.message, err.value.message
