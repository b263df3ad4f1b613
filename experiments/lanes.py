"""Jobs with dependencies on worker processes, one CPU core each: the reproduction's scheduler.

A small training run of the claims does not get faster with a second core: XLA:CPU's step of the
6-block claims model ran at ~9 steps/s with one core or two, and compiling is single-threaded.
Two such runs side by side, one per core, finish in ~0.6x the time of the two in turn. So on a
CPU every job (train a run, evaluate it) runs in a worker process pinned to one core, as many
workers ("lanes") as usable cores, up to MAX_LANES.

A run's numbers do not depend on the lane count: XLA:CPU's results depend on its thread count in
the last bits, and every job runs single-threaded whatever the number of lanes.

Jobs name the jobs they need (`deps`: a forked run needs the checkpoint of its source); the
scheduler starts the first job, in the given order, whose dependencies have finished, whenever a
lane is free. The first job that raises stops the scheduling: queued jobs are cancelled, running
ones finish, and the error is raised. SIGTERM to the scheduling process is passed on to the
workers, whose training runs save a checkpoint and stop (the reproduction's preemption path).
"""
import concurrent.futures
import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any, Callable, Sequence

MAX_LANES = 8


@dataclasses.dataclass(frozen=True)
class Job:
  name: str
  fn: Callable[..., Any]      # a module-level function: it is pickled into a worker process
  args: tuple = ()
  deps: tuple[str, ...] = ()  # names of jobs whose results must exist first


def usable_cores() -> list[int]:
  """The cores this process may run on, in order."""
  try:
    return sorted(os.sched_getaffinity(0))
  except AttributeError:  # not Linux: no affinity API; one lane, not pinned
    return []


def num_lanes() -> int:
  """Lanes for a CPU-only machine: its usable cores, up to MAX_LANES (0, inline, without an
  affinity API)."""
  return min(MAX_LANES, len(usable_cores()))


def _init_worker(cores, initializer, initargs):
  """In each new worker, before JAX starts: take the next core off the queue and pin to it, so
  that XLA:CPU sizes its thread pool to one core."""
  core = cores.get()
  os.sched_setaffinity(0, {core})
  if initializer is not None:
    initializer(*initargs)


def run_inline(jobs: Sequence[Job]) -> dict[str, Any]:
  """The jobs one after another in this process (in order: each job's dependencies first)."""
  results: dict[str, Any] = {}
  for job in jobs:
    missing = [d for d in job.deps if d not in results]
    if missing:
      raise ValueError(f"job {job.name!r} needs {missing}, which are not earlier in the list")
    results[job.name] = job.fn(*job.args)
  return results


def run(jobs: Sequence[Job], lanes: int, *, initializer: Callable[..., None] | None = None,
        initargs: tuple = ()) -> dict[str, Any]:
  """Runs `jobs` on `lanes` pinned worker processes (`initializer(*initargs)` in each, after
  pinning); returns {job name: its result}. `lanes` <= 0 or no affinity API: inline."""
  names = [j.name for j in jobs]
  if len(set(names)) != len(names):
    raise ValueError(f"job names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
  unknown = {d for j in jobs for d in j.deps} - set(names)
  if unknown:
    raise ValueError(f"jobs depend on unknown jobs {sorted(unknown)}")
  cores = usable_cores()
  if lanes <= 0 or not cores:
    if initializer is not None:
      initializer(*initargs)
    return run_inline(jobs)
  lanes = min(lanes, len(cores), len(jobs)) or 1
  ctx = multiprocessing.get_context("spawn")  # JAX is not fork-safe
  queue = ctx.Queue()
  for i in range(lanes):
    queue.put(cores[i % len(cores)])
  results: dict[str, Any] = {}
  pending = list(jobs)
  running: dict[concurrent.futures.Future, Job] = {}
  start = time.perf_counter()
  with concurrent.futures.ProcessPoolExecutor(
      max_workers=lanes, mp_context=ctx, initializer=_init_worker,
      initargs=(queue, initializer, initargs)) as pool:
    previous = _forward_sigterm(pool)
    try:
      while pending or running:
        for job in list(pending):
          if len(running) >= lanes:
            break
          if all(d in results for d in job.deps):
            pending.remove(job)
            running[pool.submit(job.fn, *job.args)] = job
        if not running:  # nothing can start: a dependency cycle
          raise ValueError(f"jobs wait on each other: {[j.name for j in pending]}")
        done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
          job = running.pop(future)
          results[job.name] = future.result()  # raises the job's error here
          _progress(job.name, len(results), len(jobs), time.perf_counter() - start,
                    [j.name for j in running.values()], lanes)
    except BaseException:
      for future in running:
        future.cancel()
      raise
    finally:
      if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
  return results


def _progress(name: str, done: int, total: int, elapsed: float, running: list[str],
              lanes: int):
  """One line per finished job; the remaining time assumes the mean job so far."""
  left = elapsed / done * (total - done)
  logging.info("lanes: %s finished (%d of %d jobs, %.1f min; roughly %.0f min left on %d lanes)%s",
               name, done, total, elapsed / 60, left / 60, lanes,
               f"; running {', '.join(running)}" if running else "")


def _forward_sigterm(pool: concurrent.futures.ProcessPoolExecutor):
  """SIGTERM to this process goes on to the workers (each training run saves and stops); returns
  the previous handler."""
  if threading.current_thread() is not threading.main_thread():
    return signal.getsignal(signal.SIGTERM)  # only the main thread may set handlers

  def forward(signum, unused_frame):
    for process in list(getattr(pool, "_processes", {}).values()):
      try:
        os.kill(process.pid, signum)
      except (ProcessLookupError, AttributeError):
        pass
  return signal.signal(signal.SIGTERM, forward)
