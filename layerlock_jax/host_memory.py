"""How the host process allocates memory on a CPU run (config.host_malloc).

XLA:CPU allocates each step's temporaries afresh: even the tiny config's step asks for one
buffer per execution that is larger than the ceiling of glibc's mmap threshold, and frees it at
the end. glibc serves such a request with mmap (XLA's intra-op threads each get their own arena,
whose heaps cannot hold it), so every step maps fresh pages, the kernel zeroes all of them on
first touch, and unmaps them again: a large share of a small step's CPU (measured:
docs/training.md, "CPU hosts").

"steady" makes the heap behave like a caching allocator: one arena for every thread, no mmap for
large blocks, and no trimming, so the buffer freed at the end of a step is the one the next step
gets back. The price: memory the process once used is kept until it exits, which is what a training
process wants on a CPU host and not what an accelerator host with large transient host buffers
(checkpoint gathers, data pipelines) wants; and with one arena, XLA's multi-threaded compiler
contends for the heap (slower compiles), which a run of a few hundred steps earns back and a
smoke test does not.
Hence "auto" applies it only where no accelerator can be used and the run has at least
AUTO_MIN_STEPS steps. Worker processes (grain, the converter) are separate processes and keep
glibc's defaults.

Only glibc has these knobs (`mallopt`); elsewhere (macOS, musl) every mode is the system's.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os

MODES = ("auto", "steady", "system")
AUTO_MIN_STEPS = 200  # "auto" leaves shorter runs (tests, smoke runs) on glibc's defaults

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def accelerator_possible() -> bool:
  """Whether JAX could pick a GPU or TPU here, decided without starting a backend: the platforms
  named in JAX_PLATFORMS, else whether a TPU library or a PJRT plugin is installed."""
  named = (os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_PLATFORM_NAME") or "").lower()
  if named.strip():
    return any(p.strip() not in ("", "cpu") for p in named.split(","))
  if importlib.util.find_spec("libtpu") is not None:
    return True
  if importlib.metadata.entry_points(group="jax_plugins"):
    return True
  try:
    import jax_plugins  # pylint: disable=g-import-not-at-top  (namespace package of PJRT plugins)
  except ImportError:
    return False
  return any(True for _ in getattr(jax_plugins, "__path__", ()))


def glibc():
  if os.name != "posix":
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return None
  if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
    return None  # not glibc: no such knobs
  return libc


def configure(mode: str, total_steps: int | None = None) -> str:
  """Applies config.host_malloc; returns what is in effect ("steady" or "system").

  `total_steps`: the run's length, for "auto" (None: a long run, e.g. a benchmark of the step).
  Call it before JAX starts its backend (the first thread that allocates picks its arena).
  """
  if mode not in MODES:
    raise ValueError(f"config.host_malloc={mode!r}: use one of {MODES}")
  if mode == "auto" and (accelerator_possible()
                         or (total_steps is not None and total_steps < AUTO_MIN_STEPS)):
    return "system"
  if mode == "system":
    return "system"
  libc = glibc()
  if libc is None:
    return "system"
  ok = (libc.mallopt(_M_ARENA_MAX, 1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1)
  return "steady" if ok else "system"
