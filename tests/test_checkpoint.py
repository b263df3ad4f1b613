"""Checkpointing: bit-exact round trips and resumes, reshard on restore, fallbacks, SIGKILL, SIGTERM.

The reference for every resume is an uninterrupted run of the same config: resuming must give the
SAME bits (parameters, optimizer state, step) and the same logged numbers, because the masks come
from fold_in(seed, step) and the data order from the restored grain position. Interruptions are
produced two ways: in-process, by removing / corrupting the newest checkpoints of a finished run
(exactly what a kill leaves behind: older complete checkpoints, metrics logged past them, maybe a
half-written temporary directory); and for real, by SIGKILL / SIGTERM of `python -m
layerlock_jax.main` in a subprocess.
"""
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from layerlock_jax import checkpoint
from layerlock_jax import checkpoint_params
from layerlock_jax import config_loading
from layerlock_jax import state as state_lib
from layerlock_jax import train
from layerlock_jax.data import pipeline
from conftest import TEST_XLA_FLAGS

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 48  # long enough that a signal sent at a random step lands before the end
# Shrinks configs/tiny.py and configs/layerlock_tiny.py to a few seconds of CPU; the same
# overrides go to the subprocess runs as --config.KEY=VALUE flags.
SMALL = {
    "total_steps": STEPS, "batch_size": 8, "log_every": 1, "checkpoint_every": 4,
    "keep_checkpoints": 20, "model.width": 32, "model.depth": 2, "model.mlp_dim": 64,
    "model.num_heads": 2, "model.decoder.width": 32, "model.decoder.mlp_dim": 64,
    "model.decoder.num_heads": 2, "data.num_frames": 8, "data.image_size": 16,
    "data.num_clips": 64, "optimizer.warmup_steps": 4,
}
# Pixel stage for 12 steps, then block 1 frozen with the latent target: one stage boundary.
LAYERLOCK = {"layerlock.pixel_steps": 12, "layerlock.interval": 6, "layerlock.max_frozen": 1,
             "layerlock.mini_warmup_steps": 2}
# Convergence-triggered freezing on 4 blocks: the trigger checks every 4 steps, so a kill lands
# between decisions, and a resume must replay them from the checkpoint (3 freezes by step 24).
CONVERGENCE = {**LAYERLOCK, "model.depth": 4, "layerlock.max_frozen": 3,
               "layerlock.pixel_steps": 8, "layerlock.trigger": "convergence",
               "layerlock.convergence.check_every": 4, "layerlock.convergence.threshold": 2.5e-4,
               "layerlock.convergence.patience": 1, "layerlock.convergence.min_interval": 8,
               "layerlock.convergence.max_interval": 16}
CONFIGS = {"tiny": ("tiny.py", SMALL), "layerlock": ("layerlock_tiny.py", {**SMALL, **LAYERLOCK}),
           "convergence": ("layerlock_tiny.py", {**SMALL, **CONVERGENCE})}
# Logged values that must repeat exactly after a resume (timings cannot).
DETERMINISTIC = ("step", "loss", "pixel_loss", "latent_loss", "lr", "grad_norm", "frozen_layers",
                 "target", "clips_seen", "feature_spread")


def make_config(name, **extra):
  file, overrides = CONFIGS[name]
  return config_loading.load_config(ROOT / "configs" / file, {**overrides, **extra})


def one_device():
  return jax.devices()[:1]


def leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return all(x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(la, lb, strict=True))


def records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def deterministic(recs):
  return [{k: r[k] for k in DETERMINISTIC if k in r} for r in recs]


def fork(src, dst, keep_upto):
  """Copy a finished run, keeping only checkpoints <= keep_upto (metrics stay: logged past it)."""
  shutil.copytree(src, dst)
  for step in os.listdir(os.path.join(dst, "checkpoints")):
    if step.isdigit() and int(step) > keep_upto:
      shutil.rmtree(os.path.join(dst, "checkpoints", step))
  return dst


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Uninterrupted single-device runs of both configs: the bits every resume must reproduce."""
  out = {}
  for name in CONFIGS:
    workdir = str(tmp_path_factory.mktemp(f"ref_{name}"))
    result = train.run(make_config(name), workdir, devices=one_device())
    out[name] = (workdir, result)
  return out


def test_round_trip_is_bit_exact_with_shardings_and_data_position(tmp_path):
  config = make_config("layerlock")
  trainer = train.StagePrograms(config, one_device())
  spec = trainer.spec_at(0)
  state = trainer.init_state(spec)
  # Non-trivial optimizer state and step: zeros would round-trip even if they were never read.
  state = jax.tree.map(lambda x: x + np.arange(x.size, dtype=np.float32).reshape(x.shape)
                       .astype(x.dtype) * 1e-3 if x.dtype == np.float32 else x + 7, state)
  data = pipeline.make_train_iterator(config.data, seed=config.seed, global_batch_size=8,
                                      process_index=0, process_count=1)
  for _ in range(3):
    next(data)
  ckpts = checkpoint.Checkpoints.in_workdir(str(tmp_path), config)
  progress = checkpoint.Progress(train_seconds=12.5, clips_seen=24)
  assert ckpts.save(3, state, spec, data, progress, wait=True)
  ckpts.close()
  expected_next = next(data)["video"]

  fresh = pipeline.make_train_iterator(config.data, seed=config.seed, global_batch_size=8,
                                       process_index=0, process_count=1)
  restored = checkpoint.restore(str(tmp_path), train.StagePrograms(config, one_device()), fresh)
  assert restored.step == 3 and restored.spec == spec and restored.progress == progress
  assert leaves_equal(restored.state.checkpointed(), state.checkpointed())
  # The seed is not saved (the state's was moved off config.seed above): it is the config's.
  assert int(state.seed) != config.seed and int(restored.state.seed) == config.seed
  saved = checkpoint.Checkpoints(str(tmp_path / checkpoint.CHECKPOINTS), config, read_only=True)
  assert set(saved.manager.item_metadata(3)["state"]) == set(state_lib.CHECKPOINTED)
  saved.manager.close()
  want = jax.tree.leaves(trainer.state_shardings(spec))
  assert [x.sharding for x in jax.tree.leaves(restored.state)] == want
  assert isinstance(restored.state.step, jax.Array) and int(restored.state.step) == 7
  np.testing.assert_array_equal(next(fresh)["video"], expected_next)
  assert restored.meta["shape_fields"]["model.width"] == 32


@pytest.mark.slow
def test_keep_last_n_plus_every_m(tmp_path):
  config = make_config("tiny", keep_checkpoints=2, keep_every=4)
  trainer = train.StagePrograms(config, one_device())
  spec = trainer.spec_at(0)
  state = trainer.init_state(spec)
  data = pipeline.make_train_iterator(config.data, seed=0, global_batch_size=8, process_index=0,
                                      process_count=1)
  ckpts = checkpoint.Checkpoints.in_workdir(str(tmp_path), config)
  for step in range(1, 11):
    ckpts.save(step, state, spec, data, checkpoint.Progress(), wait=True)
  ckpts.close()
  kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert kept == [4, 8, 9, 10]


def test_data_position_is_re_dealt_to_another_process_count(tmp_path):
  """2 processes consumed 3 global steps; one process continues with exactly the next global
  batch: what the two would have read next, process 0's block first."""
  config = make_config("tiny")
  kw = dict(seed=config.seed, global_batch_size=8)
  halves = [pipeline.make_train_iterator(config.data, process_index=p, process_count=2, **kw)
            for p in range(2)]
  for it in halves:
    for _ in range(3):
      next(it)
  os.makedirs(tmp_path / "data_iter")
  with open(tmp_path / "data_iter" / "process_0-of-2.json", "w") as f:
    json.dump(halves[0].get_state(), f)
  whole = pipeline.make_train_iterator(config.data, process_index=0, process_count=1, **kw)
  whole.set_state(checkpoint.redeal_data_state(str(tmp_path / "data_iter"), 2, 1))
  expected = np.concatenate([next(halves[0])["video"], next(halves[1])["video"]], 0)
  np.testing.assert_array_equal(next(whole)["video"], expected)
  with open(tmp_path / "data_iter" / "process_0-of-2.json", "w") as f:
    json.dump({"workers": [1, 2]}, f)
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="process_count"):
    checkpoint.redeal_data_state(str(tmp_path / "data_iter"), 2, 1)


@pytest.mark.slow
def test_resume_across_stage_boundary_is_bit_identical(reference, tmp_path):
  """Checkpoint 12 was saved in the pixel stage; the resumed run re-splits into stage k=1."""
  ref_dir, ref = reference["layerlock"]
  work = fork(ref_dir, str(tmp_path / "w"), keep_upto=12)
  # What a kill during the async save of step 16 leaves: an incomplete temporary directory.
  tmp = os.path.join(work, "checkpoints", "16.orbax-checkpoint-tmp-1700000000")
  shutil.copytree(os.path.join(ref_dir, "checkpoints", "16"), tmp)
  os.remove(os.path.join(tmp, "commit_success.txt"))
  result = train.run(make_config("layerlock"), work, devices=one_device())
  assert result.start_step == 12
  assert leaves_equal(result.state, ref.state)
  assert deterministic(records(work)) == deterministic(records(ref_dir))
  assert [r["step"] for r in records(work)] == list(range(1, STEPS + 1))
  assert not os.path.exists(tmp)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_previous(reference, tmp_path, caplog):
  ref_dir, ref = reference["layerlock"]
  work = fork(ref_dir, str(tmp_path / "w"), keep_upto=STEPS)
  data_dir = pathlib.Path(work, "checkpoints", str(STEPS), "state", "ocdbt.process_0", "d")
  biggest = max(data_dir.iterdir(), key=lambda p: p.stat().st_size)
  os.truncate(biggest, biggest.stat().st_size // 2)
  with caplog.at_level("WARNING"):
    result = train.run(make_config("layerlock"), work, devices=one_device())
  assert result.start_step == STEPS - 4  # mid-stage (k=1) checkpoint
  assert any(f"checkpoints/{STEPS}" in r.getMessage() and "skipping" in r.getMessage()
             for r in caplog.records)
  assert leaves_equal(result.state, ref.state)
  assert deterministic(records(work)) == deterministic(records(ref_dir))
  assert [p.split("-")[0] for p in os.listdir(os.path.join(work, checkpoint.CORRUPT))] == [
      str(STEPS)]


@pytest.mark.slow
def test_incompatible_checkpoint_fails_naming_fields_and_changes_nothing(reference, tmp_path):
  work = fork(reference["layerlock"][0], str(tmp_path / "w"), keep_upto=STEPS)
  before = {p: p.read_bytes() for p in pathlib.Path(work).rglob("*") if p.is_file()}
  config = make_config("layerlock", **{"model.width": 48, "data.image_size": 32})
  with pytest.raises(checkpoint.IncompatibleCheckpointError) as err:
    train.run(config, work, devices=one_device())
  assert "model.width: checkpoint 32 != config 48" in str(err.value)
  assert "data.image_size" in str(err.value) and "model.depth" not in str(err.value)
  after = {p: p.read_bytes() for p in pathlib.Path(work).rglob("*") if p.is_file()}
  assert after == before


@pytest.mark.slow
def test_checkpoint_of_an_older_format_is_refused_for_resume_but_not_for_parameters(
    reference, tmp_path):
  """Format 1 stored the data position in records; resuming it would replay another data order."""
  work = fork(reference["tiny"][0], str(tmp_path / "w"), keep_upto=STEPS)
  meta_file = pathlib.Path(work, "checkpoints", str(STEPS), "meta", "metadata")
  meta = json.loads(meta_file.read_text())
  assert meta["format"] == checkpoint.FORMAT
  meta["format"] = 1
  meta_file.write_text(json.dumps(meta))
  before = {p: p.read_bytes() for p in pathlib.Path(work).rglob("*") if p.is_file()}
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="checkpoint format 1"):
    train.run(make_config("tiny", total_steps=STEPS + 4), work, devices=one_device())
  assert {p: p.read_bytes() for p in pathlib.Path(work).rglob("*") if p.is_file()} == before
  # Its parameters stay usable (evaluation, init_from).
  restored = checkpoint.restore(work, train.StagePrograms(make_config("tiny"), one_device()))
  assert restored.step == STEPS


@pytest.mark.slow
def test_init_from_loads_parameters_only(reference):
  """Parameters come from the checkpoint (re-split for the new schedule); step and optimizer
  state start fresh. A checkpoint of another model shape is refused, naming the fields."""
  ref_dir, ref = reference["layerlock"]
  config = make_config("layerlock", **{"layerlock.enabled": False})  # another schedule
  trainer = train.StagePrograms(config, one_device())
  spec = trainer.spec_at(0)
  state = checkpoint_params.init_from(ref_dir, trainer, spec)
  merged = lambda s: s.full_params()  # noqa: E731
  assert leaves_equal(merged(state), merged(ref.state))
  assert spec.frozen_layers == 0 and ref.state.frozen  # the source was split differently
  assert int(state.step) == 0
  assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(state.opt_state))
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="model.posemb"):
    checkpoint_params.init_from(reference["tiny"][0], trainer, spec)  # learned_3d vs rope


@pytest.mark.slow
def test_run_with_init_from_starts_at_step_0_from_those_parameters(reference, tmp_path):
  ref_dir, _ = reference["layerlock"]
  source = os.path.join(ref_dir, "checkpoints", "12")
  config = make_config("layerlock", init_from=source)
  result = train.run(config, str(tmp_path / "w"), devices=one_device())
  assert result.start_step == 0
  # Step 1 of that run is the compiled step applied to init_from's state and the first batch.
  trainer = train.StagePrograms(config, one_device())
  spec = trainer.spec_at(0)
  state = checkpoint_params.init_from(source, trainer, spec)
  data = pipeline.make_train_iterator(config.data, seed=config.seed, global_batch_size=8,
                                      process_index=0, process_count=1)
  video = pipeline.global_batch({"video": next(data)["video"]}, trainer.video_sharding)["video"]
  _, metrics = trainer.step_fn(spec, state, video)(state, video)
  first = records(str(tmp_path / "w"))[0]
  assert first["loss"] == float(metrics["loss"])
  assert first["loss"] != records(ref_dir)[0]["loss"]  # not the fresh initialisation


@pytest.mark.slow
def test_restore_on_another_device_count_and_mesh(reference, tmp_path):
  """Saved on 1 device; resumed on 8 with an FSDP mesh; that run's checkpoint resumed on 1."""
  ref_dir, ref = reference["tiny"]
  fsdp = {"mesh.data": 1, "mesh.fsdp": -1, "mesh.preset": "fsdp"}
  trainer8 = train.StagePrograms(make_config("tiny", **fsdp))
  on8 = checkpoint.restore(os.path.join(ref_dir, "checkpoints", "12"), trainer8)
  on1 = checkpoint.restore(os.path.join(ref_dir, "checkpoints", "12"),
                           train.StagePrograms(make_config("tiny"), one_device()))
  assert leaves_equal(on8.state, on1.state)
  kernel = on8.state.params["encoder"]["layers"]["mlp1"]["kernel"]
  assert len(kernel.sharding.device_set) == 8 and "fsdp" in str(kernel.sharding.spec)
  assert kernel.addressable_shards[0].data.shape != kernel.shape  # really split, not replicated

  work8 = fork(ref_dir, str(tmp_path / "w8"), keep_upto=12)
  result8 = train.run(make_config("tiny", **fsdp), work8)
  assert result8.start_step == 12 and int(result8.state.step) == STEPS
  # Another reduction order, so not bit-equal; still the same training.
  for a, b in zip(jax.tree.leaves(result8.state.params), jax.tree.leaves(ref.state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-4)
  assert [r["step"] for r in records(work8)] == list(range(1, STEPS + 1))

  # And back: a checkpoint the 8-device FSDP run wrote continues on one device.
  work1 = fork(work8, str(tmp_path / "w1"), keep_upto=24)
  back = train.run(make_config("tiny"), work1, devices=one_device())
  assert back.start_step == 24 and int(back.state.step) == STEPS
  for a, b in zip(jax.tree.leaves(back.state.params), jax.tree.leaves(result8.state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-4)
  assert [r["step"] for r in records(work1)] == list(range(1, STEPS + 1))


# --- real processes --------------------------------------------------------------------------------
def launch(name, workdir, **extra):
  file, overrides = CONFIGS[name]
  flags = [f"--config.{k}={v}" for k, v in {**overrides, **extra}.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS}
  return subprocess.Popen(
      [sys.executable, "-m", "layerlock_jax.main", f"--config={ROOT / 'configs' / file}",
       f"--workdir={workdir}", *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def wait_for_step(proc, workdir, step, timeout=240):
  """Poll metrics.jsonl until it shows `step` (the last complete line); returns that step."""
  path, deadline = os.path.join(workdir, "metrics.jsonl"), time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    if os.path.exists(path):
      with open(path) as f:
        lines = [line for line in f.read().split("\n")[:-1] if line]
      if lines and json.loads(lines[-1])["step"] >= step:
        return json.loads(lines[-1])["step"]
    time.sleep(0.01)
  raise AssertionError(f"no step {step} within {timeout}s")


def kill_step(lo: int, hi: int) -> tuple[int, str]:
  """A step in [lo, hi] to kill a run at, drawn from a seed that is printed and named in the
  returned note (for assertion messages); KILL_SEED=<seed> in the environment replays a failure."""
  seed = int(os.environ.get("KILL_SEED", random.SystemRandom().randrange(2**32)))
  step = random.Random(seed).randint(lo, hi)
  note = f"kill step {step} drawn in [{lo}, {hi}] with KILL_SEED={seed}"
  print(note)
  return step, note


def finish(proc, timeout=240):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


@pytest.mark.slow
def test_convergence_trigger_freezes_at_least_three_times_and_records_its_decisions(reference):
  workdir, result = reference["convergence"]
  recs = records(workdir)
  frozen = [r["frozen_layers"] for r in recs]
  assert sorted(set(frozen)) == [0, 1, 2, 3] and frozen == sorted(frozen)
  with open(os.path.join(workdir, "summary.json")) as f:
    table = json.load(f)["freeze_table"]
  # Every decision is on a check step (a multiple of 4), after the pixel phase, min_interval apart.
  starts = [row["start_step"] for row in table[1:]]
  assert all(s % 4 == 0 for s in starts) and starts[0] >= 8, starts
  assert all(b - a >= 8 for a, b in zip(starts, starts[1:])), starts
  # The log agrees with the decided table step by step.
  for r in recs:
    stage = max(i for i, row in enumerate(table) if row["start_step"] < r["step"])
    assert r["frozen_layers"] == table[stage]["frozen_layers"], r["step"]
  assert any(r.get("freeze_signal") is not None for r in recs)


@pytest.mark.slow
# "convergence" is layerlock_tiny with the latent target and three triggered freezes: a kill lands
# in any of four stages, so it covers the fixed-schedule LayerLock case too.
@pytest.mark.parametrize("name", ["tiny", "convergence"])
def test_sigkill_at_random_step_then_rerun_is_bit_identical(reference, tmp_path, name):
  ref_dir, ref = reference[name]
  work = str(tmp_path / "w")
  # Past the first checkpoint; layerlock: either stage.
  kill_at, drawn = kill_step(5, STEPS // 2)
  proc = launch(name, work)
  seen = wait_for_step(proc, work, kill_at)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  rc, out = finish(launch(name, work))
  note = f"{drawn}; killed at step >= {seen}"
  assert rc == 0, (note, out[-3000:])
  restored = checkpoint.restore(work, train.StagePrograms(make_config(name), one_device()))
  assert restored.step == STEPS, note
  assert leaves_equal(restored.state, ref.state), note
  steps = [r["step"] for r in records(work)]
  assert steps == list(range(1, STEPS + 1)), (note, steps)
  assert deterministic(records(work)) == deterministic(records(ref_dir)), note


def test_kill_step_is_replayed_from_the_printed_seed(monkeypatch, capsys):
  monkeypatch.setenv("KILL_SEED", "1234")
  first, note = kill_step(5, 40)
  assert "KILL_SEED=1234" in note and note in capsys.readouterr().out
  assert [kill_step(5, 40)[0] for _ in range(3)] == [first] * 3 and 5 <= first <= 40
  assert {kill_step(5, 40)[0] for _ in range(1)} == {random.Random(1234).randint(5, 40)}
  monkeypatch.delenv("KILL_SEED")
  drawn = [kill_step(5, 40) for _ in range(20)]
  assert len({note for _, note in drawn}) > 1  # without KILL_SEED, a fresh seed per draw
  for step, note in drawn:  # and the named seed gives back the step that was drawn
    seed = int(note.rsplit("=", 1)[1])
    assert random.Random(seed).randint(5, 40) == step


# `python -m layerlock_jax.main` (through runpy, so main's own error handling and exit status),
# with every checkpoint write after the first failing as on a full disk.
FAILING_WRITES = r"""
import errno, runpy, sys
import orbax.checkpoint as ocp
real = ocp.JsonCheckpointHandler._save_fn
calls = []
async def full_disk(self, x, directory):
  calls.append(str(directory))
  if len(calls) > 1:
    raise OSError(errno.ENOSPC, "No space left on device", str(directory))
  return await real(self, x, directory)
ocp.JsonCheckpointHandler._save_fn = full_disk
runpy.run_module("layerlock_jax.main", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_main_exits_with_status_4_and_one_line_after_a_checkpoint_write_failure(tmp_path):
  work = tmp_path / "w"
  file, overrides = CONFIGS["tiny"]
  flags = {**overrides, "checkpoint_every": 4, "total_steps": 20}
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": TEST_XLA_FLAGS}
  proc = subprocess.run(
      [sys.executable, "-c", FAILING_WRITES, f"--config={ROOT / 'configs' / file}",
       f"--workdir={work}", *[f"--config.{k}={v}" for k, v in flags.items()]],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  out = proc.stdout[-2000:] + proc.stderr[-3000:]
  assert proc.returncode == 4, out
  # One line says what failed and what is intact (Orbax's own background threads may log after
  # it while the interpreter exits).
  lines = [l for l in proc.stderr.splitlines() if l.startswith("Checkpoint write error:")]
  assert len(lines) == 1, out
  assert "the last complete checkpoint is step 4" in lines[0] and "GiB free" in lines[0], out
  steps = sorted(int(n) for n in os.listdir(work / "checkpoints") if n.isdigit())
  assert steps == [4], steps
  # The async write of step 8 fails; the run stops when it learns so, at the next save (step 12)
  # at the latest, long before the end (step 20).
  assert 8 <= max(r["step"] for r in records(str(work))) <= 12


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_exits_zero(tmp_path):
  work = str(tmp_path / "w")
  proc = launch("tiny", work, checkpoint_every=0)
  wait_for_step(proc, work, 3)
  sent = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  rc, out = finish(proc, timeout=120)
  seconds = time.monotonic() - sent
  assert rc == 0, out[-3000:]
  last_logged = records(work)[-1]["step"]
  steps = [int(s) for s in os.listdir(os.path.join(work, "checkpoints")) if s.isdigit()]
  assert steps == [last_logged], (steps, last_logged)  # checkpoint_every=0: only the SIGTERM save
  assert last_logged < STEPS
  meta = checkpoint.Checkpoints(os.path.join(work, "checkpoints"), make_config("tiny"),
                                read_only=True).read_meta(last_logged)
  assert meta["progress"]["clips_seen"] == 8 * last_logged
  assert seconds < 60, seconds
