"""Multi-process start-up: one `jax.distributed.initialize` call, from flags, env or the cluster.

Every host of a pod or cluster runs the same command; this module works out whether (and how) the
processes must find each other, BEFORE anything touches a JAX backend (initialize refuses to run
after `jax.devices()` or any computation).

Where the settings come from, first match wins:
  1. explicit: --coordinator_address / --num_processes / --process_id, each falling back to the env
     variables JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID. Any cluster, and the
     local rehearsal on 127.0.0.1 (launch/local.sh). All three must be given (or num_processes=1).
  2. slurm: inside `srun` with SLURM_NTASKS > 1. Process count and id come from SLURM_NTASKS /
     SLURM_PROCID; the coordinator is JAX_COORDINATOR_ADDRESS or else the job's first node with a
     port derived from the job id; which GPUs a process uses: see _slurm_local_device_ids.
  3. tpu: on a Cloud TPU VM (libtpu installed and TPU chips present): JAX reads everything from
     the TPU metadata server, so no argument is needed.
  4. single: none of the above; plain one-process JAX, no coordination service.

Timeouts (why each exists):
  init_timeout       how long process 0 waits for the others to connect (and they for it). Cold
                     multi-node GPU starts can exceed JAX's 300 s default, so it is a flag.
  heartbeat_timeout  after this long without a heartbeat a process is declared dead, and the
                     coordination service ends every other process with an error instead of
                     letting it block forever in the next collective.
  barrier(name, timeout_s) below: a named rendezvous that raises on timeout, for the points where
                     processes must agree (end of training, before exit).
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import os
import re
from typing import Mapping

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_INIT_TIMEOUT = "LAYERLOCK_INIT_TIMEOUT"
ENV_HEARTBEAT_TIMEOUT = "LAYERLOCK_HEARTBEAT_TIMEOUT"
# JAX's own name: a comma-separated list of local accelerator ids this process may use.
ENV_LOCAL_DEVICE_IDS = "JAX_LOCAL_DEVICE_IDS"

DEFAULT_INIT_TIMEOUT = 300
DEFAULT_HEARTBEAT_TIMEOUT = 100

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class DistributedError(ValueError):
  """Inconsistent or incomplete multi-process settings; the message says what to pass."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `initialize` will do. mode: single | explicit | slurm | tpu."""
  mode: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None
  init_timeout: int = DEFAULT_INIT_TIMEOUT
  heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT

  def describe(self) -> str:
    if self.mode == "single":
      return "single process"
    who = "?" if self.process_id is None else self.process_id
    of = "?" if self.num_processes is None else self.num_processes
    where = self.coordinator_address or "auto-detected coordinator"
    return (f"{self.mode}: process {who} of {of} via {where} (init timeout "
            f"{self.init_timeout}s, heartbeat timeout {self.heartbeat_timeout}s)")


def _int_setting(value, env_name: str, environ: Mapping[str, str], flag: str,
                 minimum: int) -> int | None:
  if value is None:
    raw = environ.get(env_name)
    if raw is None or raw.strip() == "":
      return None
    try:
      value = int(raw)
    except ValueError:
      raise DistributedError(f"{env_name}={raw!r} is not an integer; set it to e.g. "
                             f"{env_name}={max(minimum, 1)} or pass --{flag}") from None
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise DistributedError(f"--{flag}={value!r} must be an integer >= {minimum}")
  return value


def _check_address(address: str) -> str:
  match = _ADDRESS.match(address)
  if not match or not 0 < int(match.group(2)) < 65536:
    raise DistributedError(f"coordinator address {address!r} is not HOST:PORT; pass e.g. "
                           "--coordinator_address=10.0.0.1:1234 (process 0's host and a free port)")
  return address


def _on_cloud_tpu() -> bool:
  """libtpu importable and TPU chips visible (the test JAX itself uses, without a backend)."""
  if importlib.util.find_spec("libtpu") is None:
    return False
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _slurm_local_device_ids(environ: Mapping[str, str]) -> tuple[int, ...] | None:
  """Which local GPUs a SLURM task may use, or None to let JAX see every GPU of the node.

  JAX's own SLURM detection restricts each process to GPU number SLURM_LOCALID. That breaks in
  two common set-ups (jax issues 28194, 23452), handled here:
    * one process per node (--ntasks-per-node=1): LOCALID is 0, so JAX would use 1 GPU of 8;
      we leave the node's GPUs unrestricted instead.
    * --gpus-per-task=1 / --gpu-bind: SLURM already narrowed CUDA_VISIBLE_DEVICES to ONE GPU,
      renumbered 0, so LOCALID 3 names a GPU that does not exist; we use 0.
  An explicit JAX_LOCAL_DEVICE_IDS always wins.
  """
  if environ.get(ENV_LOCAL_DEVICE_IDS):
    return tuple(int(i) for i in environ[ENV_LOCAL_DEVICE_IDS].split(","))
  per_node = environ.get("SLURM_NTASKS_PER_NODE", "")
  if per_node.isdigit() and int(per_node) == 1:
    return None
  visible = [v for v in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
  if len(visible) == 1:
    return (0,)
  local_id = environ.get("SLURM_LOCALID")
  return (int(local_id),) if local_id is not None and local_id.isdigit() else None


def first_slurm_host(nodelist: str) -> str:
  """The first host of a SLURM node list: "gpu[07-09,12],cpu1" -> "gpu07", "n1,n2" -> "n1"."""
  match = re.match(r"^([^\[,]*)(?:\[([^\]]*)\])?", nodelist.strip())
  prefix, ranges = match.group(1), match.group(2)
  if not ranges:
    return prefix
  return prefix + re.split(r"[,-]", ranges)[0]


def _slurm_coordinator(environ: Mapping[str, str]) -> str:
  """Process 0's node and a port every task derives alike from the job id (JAX's own rule:
  the top 4096 ports, so concurrent jobs on one node rarely collide)."""
  nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or ""
  if not nodelist:
    raise DistributedError("SLURM job without SLURM_STEP_NODELIST/SLURM_JOB_NODELIST: run the "
                           "program under srun, or set JAX_COORDINATOR_ADDRESS=HOST:PORT")
  port = int(environ["SLURM_JOB_ID"]) % 4096 + 65536 - 4096
  return f"{first_slurm_host(nodelist)}:{port}"


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, init_timeout: int | None = None,
            heartbeat_timeout: int | None = None,
            environ: Mapping[str, str] | None = None,
            on_cloud_tpu: bool | None = None) -> Settings:
  """Decide how this process joins the job (see the module docstring); never touches JAX."""
  environ = os.environ if environ is None else environ
  init_timeout = _int_setting(init_timeout, ENV_INIT_TIMEOUT, environ, "init_timeout", 1)
  heartbeat_timeout = _int_setting(heartbeat_timeout, ENV_HEARTBEAT_TIMEOUT, environ,
                                   "heartbeat_timeout", 1)
  timeouts = dict(init_timeout=init_timeout or DEFAULT_INIT_TIMEOUT,
                  heartbeat_timeout=heartbeat_timeout or DEFAULT_HEARTBEAT_TIMEOUT)
  address = coordinator_address or environ.get(ENV_COORDINATOR) or None
  count = _int_setting(num_processes, ENV_NUM_PROCESSES, environ, "num_processes", 1)
  index = _int_setting(process_id, ENV_PROCESS_ID, environ, "process_id", 0)

  if count is not None or index is not None:
    if count == 1 and index in (None, 0):
      return Settings("single", **timeouts)
    missing = [name for name, v in (("coordinator_address", address),
                                    ("num_processes", count), ("process_id", index)) if v is None]
    if missing:
      flags = ", ".join(f"--{m}" for m in missing)
      raise DistributedError(
          f"multi-process run needs {flags} as well (or env {ENV_COORDINATOR}, "
          f"{ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); every process gets the same address and "
          f"count and its own id in 0..num_processes-1")
    if not index < count:
      raise DistributedError(f"--process_id={index} is not below --num_processes={count}; "
                             f"ids run 0..{count - 1}")
    return Settings("explicit", _check_address(address), count, index, **timeouts)

  ntasks = environ.get("SLURM_NTASKS", "")
  if "SLURM_JOB_ID" in environ and "SLURM_PROCID" in environ and ntasks.isdigit():
    if int(ntasks) > 1:
      address = _check_address(address) if address else _slurm_coordinator(environ)
      return Settings("slurm", address, int(ntasks),
                      int(environ["SLURM_PROCID"]), _slurm_local_device_ids(environ), **timeouts)
    return Settings("single", **timeouts)

  if on_cloud_tpu if on_cloud_tpu is not None else _on_cloud_tpu():
    return Settings("tpu", address, **timeouts)
  if address:
    raise DistributedError(f"{ENV_COORDINATOR}/--coordinator_address={address!r} is set but the "
                           "process count and id are not: pass --num_processes and --process_id")
  return Settings("single", **timeouts)


def initialize(settings: Settings) -> Settings:
  """Start (or join) the coordination service as `settings` says; a no-op for "single".

  Must run before any JAX backend use. Errors name the coordinator and the timeout, because the
  usual causes (a wrong address, a firewall, a process that never started) look the same from
  inside: nobody answers.
  """
  import jax  # pylint: disable=g-import-not-at-top

  if settings.mode == "single":
    return settings
  # Said BEFORE connecting: when nobody answers within init_timeout, JAX's client aborts the
  # process from C++ ("Terminating process because the JAX distributed service detected fatal
  # errors ... RegisterTask") and no Python error handler runs, so this is the last line we own.
  logging.info("distributed: joining as %s. An abort within %ds that mentions RegisterTask "
               "means nobody answered at the coordinator: check that all processes got the same "
               "address and count, that process 0 runs and its port is reachable, or raise "
               "--init_timeout", settings.describe(), settings.init_timeout)
  kwargs = dict(initialization_timeout=settings.init_timeout,
                heartbeat_timeout_seconds=settings.heartbeat_timeout)
  if settings.mode in ("explicit", "slurm"):
    kwargs.update(coordinator_address=settings.coordinator_address,
                  num_processes=settings.num_processes, process_id=settings.process_id)
  if settings.mode in ("explicit", "slurm"):
    # Everything is decided above. Left on, JAX's SLURM detection would still pin each process
    # to GPU number SLURM_LOCALID whenever local_device_ids is None (see _slurm_local_device_ids).
    kwargs["cluster_detection_method"] = "deactivate"
  if settings.local_device_ids is not None:
    kwargs["local_device_ids"] = list(settings.local_device_ids)
  if settings.mode == "tpu" and settings.coordinator_address:
    kwargs["coordinator_address"] = settings.coordinator_address
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as err:  # pylint: disable=broad-except
    raise RuntimeError(
        f"jax.distributed.initialize failed ({settings.describe()}): {err}. Check that every "
        f"process was started with the same coordinator address and process count, that "
        f"process 0 is running and its port is reachable from the others, or raise "
        f"--init_timeout") from err
  return settings


def barrier(name: str, timeout_s: float) -> None:
  """Block until every process reaches barrier `name`; raise TimeoutError after `timeout_s`.

  A collective (e.g. multihost_utils.sync_global_devices) has no deadline: with one peer gone it
  waits until the heartbeat timeout. This goes through the coordination service, which gives up
  after `timeout_s` and says so. Names must be unique per use (append a step number).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top

  client = jax_distributed.global_state.client
  if client is None or jax.process_count() == 1:
    return
  try:
    client.wait_at_barrier(name, int(timeout_s * 1000))
  except Exception as err:  # pylint: disable=broad-except
    raise TimeoutError(f"barrier {name!r}: not every one of {jax.process_count()} processes "
                       f"arrived within {timeout_s:.0f}s ({err}); a peer has probably died - "
                       "check its log") from err


def check_collectives(timeout_s: float) -> None:
  """Line all processes up, then sum one number per device across every device of the job.

  Two reasons. A broken interconnect or a device-count mismatch fails here, in seconds, with a
  clear message, instead of after minutes of compiling. And on CPU (gloo collectives, the local
  rehearsal) the first collective over a device set creates its communication context, which
  must happen within 30 s on every process (a fixed deadline inside XLA): processes that compile
  at different speeds would miss it at their first train step. Created here, while the barrier
  has just aligned them, the context is reused by every later collective over all devices.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top

  if jax.process_count() == 1:
    return
  barrier("layerlock_collectives_check", timeout_s)
  mesh = Mesh(np.asarray(jax.devices()), ("all",))
  ones = jax.make_array_from_process_local_data(
      NamedSharding(mesh, PartitionSpec("all")), np.ones((jax.local_device_count(),), np.int32))
  total = int(jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, PartitionSpec()))(ones))
  if total != jax.device_count():
    raise RuntimeError(f"collective check: the sum over all devices gave {total}, expected "
                       f"{jax.device_count()}; the processes disagree about the device set")
  logging.info("distributed: collectives over %d devices in %d processes work", total,
               jax.process_count())


def shutdown() -> None:
  """Leave the coordination service cleanly (a no-op if it was never started)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()
