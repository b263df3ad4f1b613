"""config.host_malloc: a steady heap gives the step's large buffers back without new page faults."""
import subprocess
import sys

import pytest

from layerlock_jax import host_memory

# A fresh process allocates, fills and frees a 64 MiB block five times (as XLA:CPU does with a
# step's temporaries) and prints the minor page faults of the last four rounds. numpy's own
# transparent-huge-page hint is off, so a page fault is a 4 KiB page, as for XLA's buffers.
_CHILD = r"""
import resource, sys
import numpy as np
from layerlock_jax import host_memory
print(host_memory.configure(sys.argv[1]))
def round_():
  a = np.empty(64 << 20, np.uint8)
  a.fill(1)
  del a
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
  out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                       check=True, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin",
                            "NUMPY_MADVISE_HUGEPAGE": "0"}).stdout
  applied, faults = out.split()
  return applied, int(faults)


@pytest.mark.skipif(host_memory.glibc() is None, reason="mallopt is glibc's")
def test_steady_heap_reuses_freed_buffers_without_page_faults():
  pages = (64 << 20) // 4096
  applied, faults = _faults("system")
  assert applied == "system" and faults >= 4 * pages * 0.9  # every round maps fresh zero pages
  applied, faults = _faults("steady")
  assert applied == "steady" and faults < pages * 0.05     # the freed block comes back as is


def test_auto_follows_the_platforms_jax_could_use(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert not host_memory.accelerator_possible()
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert host_memory.accelerator_possible()
  assert host_memory.configure("auto") == "system"  # an accelerator host keeps glibc's defaults
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert host_memory.configure("auto", total_steps=host_memory.AUTO_MIN_STEPS - 1) == "system"
  with pytest.raises(ValueError, match="host_malloc"):
    host_memory.configure("fast")
