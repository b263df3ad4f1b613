"""What compiling costs a run, and how it is kept off the training path.

Two mechanisms, both about the one-compiled-program-per-freeze-stage design (Trainer):

1. A persistent XLA compilation cache that outlives the workdir (`config.compile_cache_dir`):
   "auto" (default) is $JAX_COMPILATION_CACHE_DIR when set, else $XDG_CACHE_HOME/layerlock_jax/xla
   (~/.cache/layerlock_jax/xla); a path uses that path; "" turns it off. Every program is cached
   however fast it compiled (a tiny stage compiles in seconds, but a run has several stages and
   resumes recompile all of them), so a rerun or a resume loads its stage programs instead of
   compiling them. A hit is not free: the executable is read and deserialised (cache_events
   counts hits and misses per compile so that a run can report which it had).

2. Compiling ahead (`AheadCompiler`): the freeze schedule is a pure function of the step, so the
   next stage's program is known long before its first step. It is lowered and compiled on a
   background thread from abstract inputs (ShapeDtypeStructs with the run's shardings), while the
   current stage trains; at the switch the main thread takes the finished program instead of
   stalling for a compile. It is the same program the main thread would have compiled (same
   function, shardings and donation), so there is still exactly one compiled program per stage.
   Errors raised on the background thread are re-raised in the main thread when the program is
   taken, so a failed ahead compile fails the run at the same point a foreground compile would.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import queue
import threading
from typing import Any, Callable

AUTO = "auto"
_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"


class CompileCacheError(ValueError):
  """config.compile_cache_dir names a directory that cannot be used."""


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "layerlock_jax", "xla")


def resolve_cache_dir(setting: str) -> str | None:
  """config.compile_cache_dir -> the directory to use, or None for no persistent cache."""
  if not setting:
    return None
  if setting == AUTO:
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir()
  return os.path.abspath(os.path.expanduser(setting))


def enable_persistent_cache(setting: str) -> str | None:
  """Point JAX's persistent compilation cache at `setting` (see the module docstring).

  Must run before the process compiles anything: JAX decides once, at its first compile, whether
  the cache is in use. Returns the directory, or None when the cache is off. An explicit directory
  that cannot be created raises CompileCacheError; the "auto" default falls back to no cache with
  a warning (a read-only home must not stop a run).
  """
  import jax  # pylint: disable=g-import-not-at-top
  path = resolve_cache_dir(setting)
  if path is None:
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  try:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
      raise PermissionError(f"{path} is not writable")
  except OSError as err:
    if setting != AUTO:
      raise CompileCacheError(
          f"config.compile_cache_dir={setting!r}: cannot use {path} ({err}); give a writable "
          "directory, or \"\" to run without a persistent compilation cache") from err
    logging.warning("no persistent compilation cache: %s (%s)", path, err)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  install_cache_listener()
  return path


# --- cache hit / miss accounting, per thread ---------------------------------------------------
_counts: collections.Counter = collections.Counter()
_counts_lock = threading.Lock()
_listening = False


def _on_event(event: str, **_):
  if event in (_HIT, _MISS):
    with _counts_lock:
      _counts[(threading.get_ident(), event)] += 1


def install_cache_listener() -> None:
  """Count JAX's persistent-cache hit/miss events (idempotent; JAX has no way to unregister)."""
  global _listening
  if not _listening:
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.register_event_listener(_on_event)
    _listening = True


def cache_events() -> tuple[int, int]:
  """(hits, misses) of the persistent cache recorded so far on the calling thread.

  Per thread, so that a compile on a background thread and one in the main thread are told
  apart: take the difference around one compile on the thread that runs it.
  """
  me = threading.get_ident()
  with _counts_lock:
    return _counts[(me, _HIT)], _counts[(me, _MISS)]


def cache_outcome(before: tuple[int, int], after: tuple[int, int]) -> str | None:
  """'hit' (every XLA compile of the program was loaded), 'miss' (at least one compiled), or None
  (the persistent cache was not consulted: off, or no listener)."""
  hits, misses = after[0] - before[0], after[1] - before[1]
  if misses:
    return "miss"
  return "hit" if hits else None


# --- compiling ahead ---------------------------------------------------------------------------
def ahead_helps(platform: str, cpu_count: int | None = None) -> bool:
  """Whether compiling the next stage in the background pays off by default.

  On an accelerator the host's cores are idle while the device runs a step, so a background
  compile is free. On CPU the step itself runs on every core: a background compile takes cores
  from the training steps it overlaps, and on a 2-core host that costs about as much as the
  stall it removes. With a few spare cores it wins.
  """
  if platform != "cpu":
    return True
  if cpu_count is None:
    cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return (cpu_count or 1) >= 4


class AheadCompiler:
  """Runs compile jobs, in submission order, on one daemon thread; hands their results (or
  errors) to the thread that takes them.

  One thread: jobs submitted together (a stage's resplit, then its step) finish in the order they
  are needed, and two background compiles never compete with each other for the cores. A daemon
  thread: a run that stops early (preemption, an error) must not wait at exit for a program it
  will never use. Each key (e.g. ("step", spec)) is compiled at most once.
  """

  def __init__(self):
    self._jobs: dict[Any, concurrent.futures.Future] = {}
    self._queue: queue.SimpleQueue = queue.SimpleQueue()
    self._thread: threading.Thread | None = None

  def submit(self, key, fn: Callable[[], Any]) -> concurrent.futures.Future:
    if key in self._jobs:
      return self._jobs[key]
    future: concurrent.futures.Future = concurrent.futures.Future()
    self._jobs[key] = future
    self._queue.put((future, fn))
    if self._thread is None:
      self._thread = threading.Thread(target=self._work, name="compile-ahead", daemon=True)
      self._thread.start()
    return future

  def _work(self):
    while True:
      future, fn = self._queue.get()
      if not future.set_running_or_notify_cancel():
        continue
      try:
        future.set_result(fn())
      except BaseException as err:  # pylint: disable=broad-except  (re-raised by take())
        future.set_exception(err)

  def take(self, key):
    """The job's result, waiting for it; its exception re-raised here. None if never submitted."""
    future = self._jobs.pop(key, None)
    return None if future is None else future.result()

  def pending(self) -> list:
    return [k for k, f in self._jobs.items() if not f.done()]
