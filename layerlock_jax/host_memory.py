"""How the host process allocates memory on a CPU run (config.host_malloc).

XLA:CPU allocates each step's temporaries afresh: the tiny config's step asks for one 83 MB
buffer per execution and frees it at the end. glibc serves a request that large with mmap (it is
above the 32 MB ceiling of the mmap threshold, and XLA's intra-op threads each get their own
arena, whose heaps cannot hold it), so every step maps fresh pages, the kernel zeroes all 20k of
them on first touch, and unmaps them again. Measured on the tiny config (2 cores): 1,280 page
faults and 3.7 ms of system time per clip, a quarter of the step's CPU.

"steady" makes the heap behave like a caching allocator: one arena for every thread, no mmap for
large blocks, and no trimming, so the buffer freed at the end of a step is the one the next step
gets back (tiny config: 1 page fault and 0.2 ms of system time per clip, 136 -> 192 clips/s).
The price is that memory the process once used is kept until it exits, which is what a training
process wants on a CPU host and not what an accelerator host with large transient host buffers
(checkpoint gathers, data pipelines) wants; hence "auto" applies it only where no accelerator
can be used. Worker processes (grain, the converter) are separate processes and keep glibc's
defaults.

Only glibc has these knobs (`mallopt`); elsewhere (macOS, musl) every mode is the system's.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os

MODES = ("auto", "steady", "system")

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


def _glibc():
  if os.name != "posix":
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return None
  if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
    return None  # not glibc: no such knobs
  return libc


def configure(mode: str) -> str:
  """Applies config.host_malloc; returns what is in effect ("steady" or "system").

  Call it before JAX starts its backend (the first thread that allocates picks its arena).
  """
  if mode not in MODES:
    raise ValueError(f"config.host_malloc={mode!r}: use one of {MODES}")
  if mode == "system" or (mode == "auto" and accelerator_possible()):
    return "system"
  libc = _glibc()
  if libc is None:
    return "system"
  ok = (libc.mallopt(_M_ARENA_MAX, 1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
        and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1)
  return "steady" if ok else "system"
