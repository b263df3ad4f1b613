"""Entry point: `python -m layerlock_jax.main --config=configs/tiny.py --workdir=DIR`.

Run the same command on every host of a pod or cluster (launch/ has scripts for TPU pods, SLURM and
a local multi-process rehearsal). Order: flags -> joining the other processes (before anything
touches a JAX backend, which jax.distributed.initialize requires) -> config validation (before
anything compiles or allocates) -> training -> a barrier so no process exits while others still
need it. A bad config or bad multi-process flags end the program with one line and exit status 2.
A run that stops itself also prints one line, no traceback: status 3 when the loss went non-finite
("Non-finite loss at step S; last good checkpoint: step C in DIR"), 4 when a checkpoint could not
be written (disk full, unwritable); the checkpoints already on disk are intact in both cases.

Multi-process flags (each has an env fallback, so launchers can set them once for every process):
  --coordinator_address  JAX_COORDINATOR_ADDRESS  HOST:PORT of process 0's coordination service
  --num_processes        JAX_NUM_PROCESSES        total processes in the job
  --process_id           JAX_PROCESS_ID           this process, 0..num_processes-1
  --init_timeout         LAYERLOCK_INIT_TIMEOUT   seconds to wait for every process to connect
  --heartbeat_timeout    LAYERLOCK_HEARTBEAT_TIMEOUT  seconds of silence before a peer is dead
On TPU pods and under SLURM leave the first three unset: they are detected (layerlock_jax/
distributed.py).
"""
import logging
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/tiny.py (or configs/vit_b.py:layerlock); "
    "override any field with --config.a.b=value.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0 (env JAX_COORDINATOR_ADDRESS); "
    "unset: auto-detected on TPU pods and under SLURM, else single process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Processes in the job (env JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's id, 0..num_processes-1 (env JAX_PROCESS_ID).")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "init_timeout", None, "Seconds to wait for all processes to connect (env "
    "LAYERLOCK_INIT_TIMEOUT; default 300).")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", None, "Seconds without a heartbeat after which a process counts as dead "
    "and the others stop with an error (env LAYERLOCK_HEARTBEAT_TIMEOUT; default 100).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  from layerlock_jax import distributed  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if config is None:
    _fail("--config is required, e.g. --config=configs/tiny.py")
  if not _WORKDIR.value:
    _fail("--workdir is required: the directory for checkpoints, metrics and logs")
  if "://" in _WORKDIR.value:
    _fail(f"--workdir={_WORKDIR.value}: URLs are not supported; mount the bucket (e.g. gcsfuse, "
          "see launch/tpu_pod.sh) and pass the mounted path")
  try:
    settings = distributed.resolve(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                   _INIT_TIMEOUT.value, _HEARTBEAT_TIMEOUT.value)
  except distributed.DistributedError as err:
    _fail(f"error: {err}")
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  try:  # before JAX starts its threads: each picks its malloc arena at its first allocation
    malloc_mode = host_memory.configure(config.get("host_malloc", "auto"), config.total_steps)
  except ValueError as err:
    _fail(f"Config error: {err}")
  import jax  # pylint: disable=g-import-not-at-top
  from layerlock_jax import compilation  # pylint: disable=g-import-not-at-top
  try:  # before anything compiles: JAX decides at its first compile whether the cache is used
    cache_dir = compilation.enable_persistent_cache(config.compile_cache_dir)
  except compilation.CompileCacheError as err:
    _fail(f"Config error: {err}")
  try:
    distributed.initialize(settings)  # before the first jax.device_count()
  except RuntimeError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access  (JAX's exit hook would wait on the service)

  from layerlock_jax.checkpoint import manager as checkpoint  # pylint: disable=g-import-not-at-top
  from layerlock_jax.config import validation as config_validation  # pylint: disable=g-import-not-at-top
  from layerlock_jax import guard  # pylint: disable=g-import-not-at-top
  from layerlock_jax import plan  # pylint: disable=g-import-not-at-top
  from layerlock_jax import train  # pylint: disable=g-import-not-at-top
  try:
    config_validation.validate(config, num_devices=jax.device_count(),
                               process_count=jax.process_count())
  except plan.ConfigError as err:
    _fail(plan.format_error(err))
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  logging.info("persistent compilation cache: %s", cache_dir or "off")
  logging.info("host malloc: %s (config.host_malloc=%s)", malloc_mode, config.host_malloc)
  distributed.check_collectives(settings.init_timeout)
  # Evaluators are built here, at the top of the stack, and passed into the loop.
  make_evaluator = None
  if config.eval_every:
    from layerlock_jax.evaluation import periodic  # pylint: disable=g-import-not-at-top
    make_evaluator = periodic.make_evaluator
  try:
    train.run(config, os.path.expanduser(_WORKDIR.value), make_evaluator=make_evaluator)
  except (checkpoint.IncompatibleCheckpointError, checkpoint.CorruptCheckpointError) as err:
    # Raised before anything was compiled or written: one line, the workdir untouched.
    _fail(f"Checkpoint error: {err}")
  except guard.NonFiniteError as err:
    # Every process sees the same (replicated) flags, so all of them stop here together.
    _fail(str(err), status=3)
  except checkpoint.CheckpointWriteError as err:
    if jax.process_count() > 1:
      _abort_job(err)
    _fail(f"Checkpoint write error: {err}", status=4)
  except Exception as err:  # pylint: disable=broad-except
    if jax.process_count() > 1:
      _abort_job(err)
    raise
  # Process 0 hosts the coordination service: if it exited first, the others would lose it while
  # still finishing their last step or checkpoint write.
  distributed.barrier("layerlock_main_done", settings.heartbeat_timeout + 60)
  distributed.shutdown()


def _abort_job(err: Exception):
  """End this process now, with a one-line reason, when a multi-process job fails.

  A normal exit would run JAX's shutdown barrier, which waits (up to its shutdown timeout) for
  peers that may themselves be blocked in a collective waiting for us. Exiting at once closes our
  sockets and stops our heartbeats, so every peer fails within seconds instead.
  """
  import jax  # pylint: disable=g-import-not-at-top
  logging.exception("training failed")
  first_line = (str(err).strip().splitlines() or [""])[0][:400]
  print(f"error: process {jax.process_index()} of {jax.process_count()} stopped: "
        f"{type(err).__name__}: {first_line}\n(in a multi-process job this usually means another "
        "process died or hung first: check every process's log)", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  logging.shutdown()
  os._exit(1)  # pylint: disable=protected-access


def _fail(message: str, status: int = 2):
  print(message, file=sys.stderr)
  sys.exit(status)


if __name__ == "__main__":
  from layerlock_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
