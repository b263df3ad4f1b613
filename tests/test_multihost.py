"""Multi-process runs on 127.0.0.1: same losses as one process, a dead peer ends the job, settings.

The multi-process runs are real: `launch/local.sh` (or plain Popen) starts separate Python
processes, each with its own CPU devices, joined by jax.distributed over the loopback interface
with gloo collectives - the code path of a TPU pod or GPU cluster, minus the hardware.

References are independent of the code under test: a single process fed the global batch that the
processes assemble (built here from the pipeline by hand), the 1-process command-line run, and for
the settings plain expectations written out per environment.
"""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from layerlock_jax import distributed
from layerlock_jax import train
from layerlock_jax.data import pipeline

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCAL_SH = ROOT / "launch" / "local.sh"
STEPS = 3
# configs/tiny.py shrunk to seconds; 16 clips = 4 devices x 4, or 2 processes x 8.
TINY_FLAGS = ["--config=configs/tiny.py", f"--config.total_steps={STEPS}", "--config.log_every=1",
              "--config.checkpoint_every=0", "--config.model.depth=2", "--config.batch_size=16"]


def _losses(workdir: pathlib.Path) -> dict[int, float]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def _local_sh(tmp: pathlib.Path, processes: int, devices: int, workdir: pathlib.Path,
              *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHON": sys.executable}
  run = subprocess.run(
      ["bash", str(LOCAL_SH), "-n", str(processes), "-d", str(devices), "-l", str(tmp), "--",
       *TINY_FLAGS, f"--workdir={workdir}", *extra], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=timeout)
  assert run.returncode == 0, run.stderr[-4000:] + _tail(tmp / "process_1.log")
  return run


def _tail(path: pathlib.Path, n: int = 3000) -> str:
  return path.read_text()[-n:] if path.exists() else ""


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """2 processes x 2 CPU devices, STEPS steps, a final checkpoint."""
  tmp = tmp_path_factory.mktemp("two_proc")
  _local_sh(tmp / "logs", 2, 2, tmp / "work")
  return tmp


@pytest.fixture(scope="module")
def one_process_losses(tmp_path_factory):
  """The same command on 1 process x 4 CPU devices, run 2 steps longer (for the resume test)."""
  tmp = tmp_path_factory.mktemp("one_proc")
  _local_sh(tmp / "logs", 1, 4, tmp / "work", f"--config.total_steps={STEPS + 2}")
  return _losses(tmp / "work")


def _assert_same_losses(got: dict, expected: dict, steps):
  steps = list(steps)
  assert [s for s in sorted(got) if s in steps] == steps
  np.testing.assert_allclose(
      [got[s] for s in steps], [expected[s] for s in steps], rtol=0, atol=1e-4,
      err_msg="per-step losses differ between process counts; if only the multi-process side "
      "differs, check that each process reads a contiguous block of the global batch (row order "
      "decides which mask a clip gets)")


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_assembled_batch(two_process_run):
  """The runtime (init, sharding, collectives) gives the same per-step losses, to float summation
  order (1e-4 absolute), as one process fed the global batch that 2 processes x 8 clips assemble
  (process 0's rows, then process 1's)."""
  config = _tiny_config()
  trainer = train.StagePrograms(config, jax.devices()[:4])
  iters = [pipeline.make_train_iterator(config.data, seed=config.seed, global_batch_size=16,
                                        process_index=p, process_count=2) for p in range(2)]
  spec = trainer.spec_at(0)
  state = trainer.init_state(spec)
  expected = {}
  for step in range(STEPS):
    video = np.concatenate([next(it)["video"] for it in iters])
    video = jax.device_put(video, trainer.video_sharding)
    state, metrics = trainer.step_fn(spec, state, video)(state, video)
    expected[step + 1] = float(metrics["loss"])
  _assert_same_losses(_losses(two_process_run / "work"), expected, range(1, STEPS + 1))
  # Only process 0 writes the workdir; process 1 logs to its own file.
  assert (two_process_run / "work" / "config.json").exists()
  assert "process 1 of 2" in (two_process_run / "logs" / "process_1.log").read_text()


@pytest.mark.slow
def test_two_processes_match_the_one_process_command(two_process_run, one_process_losses):
  """The user-facing promise: the same command on 1 process x 4 devices logs the same losses."""
  _assert_same_losses(_losses(two_process_run / "work"), one_process_losses,
                      range(1, STEPS + 1))


@pytest.mark.slow
def test_resume_on_a_different_process_count(two_process_run, one_process_losses, tmp_path):
  """The 2-process run's final checkpoint, continued by 1 process x 4 devices for 2 more steps,
  logs what the uninterrupted 1-process run logged (state resharded, data position re-dealt)."""
  workdir = tmp_path / "work"
  shutil.copytree(two_process_run / "work", workdir)
  _local_sh(tmp_path / "logs", 1, 4, workdir, f"--config.total_steps={STEPS + 2}")
  resumed = _losses(workdir)
  assert sorted(resumed) == list(range(1, STEPS + 3))  # each step logged once
  _assert_same_losses(resumed, one_process_losses, range(STEPS + 1, STEPS + 3))


def _tiny_config():
  from layerlock_jax import config_loading  # pylint: disable=g-import-not-at-top
  c = config_loading.load_config(ROOT / "configs" / "tiny.py")
  c.total_steps, c.log_every, c.checkpoint_every = STEPS, 1, 0
  c.model.depth, c.batch_size = 2, 16
  return c


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("victim,how", [(0, signal.SIGKILL),
                                        pytest.param(1, signal.SIGSTOP, marks=pytest.mark.slow)],
                         ids=["coordinator_killed", "worker_hangs"])
def test_dead_or_hung_peer_ends_the_job(tmp_path, victim, how):
  """A killed coordinator, or a worker frozen (heartbeats stop, sockets stay open), must end the
  survivor with a non-zero status within the heartbeat timeout instead of hanging.

  The peer is stopped as soon as the job is up (collectives checked), so the survivor is
  compiling or in its first step: it can never finish without the peer (every step and the final
  barrier need it), so a zero exit or a hang are the only ways to fail. Same flags as the
  two-process run above, so the compile cache usually has the program.
  """
  heartbeat = 10
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "2",
         "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}", "JAX_NUM_PROCESSES": "2",
         "LAYERLOCK_HEARTBEAT_TIMEOUT": str(heartbeat), "LAYERLOCK_INIT_TIMEOUT": "120"}
  logs = [tmp_path / f"p{i}.log" for i in range(2)]
  procs = []
  for i in range(2):
    with open(logs[i], "w") as log:
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "layerlock_jax.main", *TINY_FLAGS, f"--workdir={tmp_path / 'w'}"],
          cwd=ROOT, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=log, stderr=subprocess.STDOUT))
  try:
    deadline = time.monotonic() + 120
    while "collectives over 4 devices" not in logs[victim].read_text():
      assert all(p.poll() is None for p in procs), _tail(logs[0]) + _tail(logs[1])
      assert time.monotonic() < deadline, "the job did not come up"
      time.sleep(0.2)
    procs[victim].send_signal(how)
    start = time.monotonic()
    survivor = procs[1 - victim]
    rc = survivor.wait(timeout=heartbeat + 60)
    assert rc != 0, _tail(logs[1 - victim])
    assert time.monotonic() - start < heartbeat + 60
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def test_unreachable_coordinator_fails_after_init_timeout(tmp_path):
  """Process 1 of 2 with nobody at the address: exits non-zero after --init_timeout seconds."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  start = time.monotonic()
  run = subprocess.run(
      [sys.executable, "-m", "layerlock_jax.main", *TINY_FLAGS, f"--workdir={tmp_path}",
       f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2", "--process_id=1",
       "--init_timeout=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert run.returncode != 0
  assert time.monotonic() - start < 60
  assert "joining as explicit: process 1 of 2" in run.stderr


def test_incomplete_flags_fail_with_one_line_and_status_2(tmp_path):
  run = subprocess.run(
      [sys.executable, "-m", "layerlock_jax.main", *TINY_FLAGS, f"--workdir={tmp_path}",
       "--num_processes=2"], cwd=ROOT, capture_output=True, text=True, timeout=60,
      env={k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORD", "SLURM_"))})
  assert run.returncode == 2
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1 and "--coordinator_address, --process_id" in lines[0], run.stderr


# --- settings: where the process count, id and coordinator come from ------------------------------

SLURM_8_GPUS = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "16", "SLURM_PROCID": "11",
                "SLURM_LOCALID": "3", "SLURM_STEP_NODELIST": "gpu[01-02]",
                "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
# First node of gpu[01-02]; port 4242 % 4096 + 61440, the top 4096 ports like JAX's own rule.
SLURM_COORD = "gpu01:61586"


@pytest.mark.parametrize("kwargs,environ,expected", [
    # Nothing set: a plain single-process run.
    ({}, {}, ("single", None, None, None, None)),
    ({"num_processes": 1}, {}, ("single", None, None, None, None)),
    # Flags, env, and flags overriding env.
    ({"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}, {},
     ("explicit", "10.0.0.1:1234", 4, 2, None)),
    ({}, {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:99", "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": "1"}, ("explicit", "127.0.0.1:99", 2, 1, None)),
    ({"process_id": 0}, {"JAX_COORDINATOR_ADDRESS": "h:5", "JAX_NUM_PROCESSES": "3",
                         "JAX_PROCESS_ID": "2"}, ("explicit", "h:5", 3, 0, None)),
    # SLURM, one process per GPU: JAX's choice (GPU = local id) when all node GPUs are visible.
    ({}, SLURM_8_GPUS, ("slurm", SLURM_COORD, 16, 11, (3,))),
    # --gpus-per-task=1: SLURM left one GPU visible, renumbered 0 (jax issue 28194).
    ({}, {**SLURM_8_GPUS, "CUDA_VISIBLE_DEVICES": "5"}, ("slurm", SLURM_COORD, 16, 11, (0,))),
    # One process per node: every GPU of the node, not only GPU 0.
    ({}, {**SLURM_8_GPUS, "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
          "SLURM_NTASKS_PER_NODE": "1"}, ("slurm", SLURM_COORD, 2, 1, None)),
    ({}, {**SLURM_8_GPUS, "JAX_LOCAL_DEVICE_IDS": "0,1", "JAX_COORDINATOR_ADDRESS": "gpu01:7"},
     ("slurm", "gpu01:7", 16, 11, (0, 1))),
    # A one-task SLURM allocation is a single process.
    ({}, {**SLURM_8_GPUS, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"},
     ("single", None, None, None, None)),
    # Explicit settings win over SLURM.
    ({"coordinator_address": "a:1", "num_processes": 2, "process_id": 1}, SLURM_8_GPUS,
     ("explicit", "a:1", 2, 1, None)),
])
def test_resolve(kwargs, environ, expected):
  s = distributed.resolve(**kwargs, environ=environ, on_cloud_tpu=False)
  assert (s.mode, s.coordinator_address, s.num_processes, s.process_id,
          s.local_device_ids) == expected


def test_resolve_tpu_and_timeouts():
  s = distributed.resolve(environ={"LAYERLOCK_INIT_TIMEOUT": "900"}, on_cloud_tpu=True)
  assert (s.mode, s.num_processes, s.process_id, s.init_timeout, s.heartbeat_timeout) == (
      "tpu", None, None, 900, distributed.DEFAULT_HEARTBEAT_TIMEOUT)
  s = distributed.resolve(init_timeout=5, heartbeat_timeout=7, environ={
      "LAYERLOCK_INIT_TIMEOUT": "900", "LAYERLOCK_HEARTBEAT_TIMEOUT": "1"}, on_cloud_tpu=False)
  assert (s.init_timeout, s.heartbeat_timeout) == (5, 7)


@pytest.mark.parametrize("kwargs,environ,message", [
    ({"num_processes": 2}, {}, "--coordinator_address, --process_id"),
    ({"num_processes": 2, "process_id": 0}, {}, "--coordinator_address"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, {},
     "--process_id=2 is not below --num_processes=2"),
    ({"coordinator_address": "no-port", "num_processes": 2, "process_id": 0}, {}, "HOST:PORT"),
    ({"coordinator_address": "h:70000", "num_processes": 2, "process_id": 0}, {}, "HOST:PORT"),
    ({}, {"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
    ({"num_processes": 0}, {}, "--num_processes=0 must be an integer >= 1"),
    ({"init_timeout": 0}, {}, "--init_timeout=0"),
    ({}, {"JAX_COORDINATOR_ADDRESS": "h:1"}, "pass --num_processes and --process_id"),
])
def test_resolve_errors_say_what_to_pass(kwargs, environ, message):
  with pytest.raises(distributed.DistributedError, match=None) as err:
    distributed.resolve(**kwargs, environ=environ, on_cloud_tpu=False)
  assert message in str(err.value)


@pytest.mark.parametrize("nodelist,first", [
    ("gpu01", "gpu01"), ("node001,host2", "node001"), ("node[001-015],host2", "node001"),
    ("node[007,009-015]", "node007"), ("a-b[3-5]", "a-b3"), ("tpu-vm-0", "tpu-vm-0")])
def test_first_slurm_host(nodelist, first):
  assert distributed.first_slurm_host(nodelist) == first


@pytest.mark.parametrize("environ,expected", [
    # One process per node: no local_device_ids, and JAX's own SLURM detection switched off
    # (it would otherwise pin the process to GPU SLURM_LOCALID = 0, one GPU of eight).
    ({**SLURM_8_GPUS, "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
      "SLURM_NTASKS_PER_NODE": "1"},
     {"coordinator_address": SLURM_COORD, "num_processes": 2, "process_id": 1,
      "cluster_detection_method": "deactivate"}),
    ({**SLURM_8_GPUS, "CUDA_VISIBLE_DEVICES": "6"},
     {"coordinator_address": SLURM_COORD, "num_processes": 16, "process_id": 11,
      "cluster_detection_method": "deactivate", "local_device_ids": [0]}),
])
def test_initialize_passes_exactly_the_resolved_settings(monkeypatch, environ, expected):
  seen = {}
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.update(kw))
  settings = distributed.resolve(environ=environ, init_timeout=33, heartbeat_timeout=44,
                                 on_cloud_tpu=False)
  distributed.initialize(settings)
  assert seen == {**expected, "initialization_timeout": 33, "heartbeat_timeout_seconds": 44}
