"""Test-wide JAX set-up: 8 forced CPU devices (for mesh tests) and a persistent compile cache.

This must run before JAX initialises its backends, which is why it lives in conftest.py.
"""
import os
import pathlib
import sys

# The paper-claims harness (experiments/) is a top-level folder next to the package, imported from
# the repository root as `python -m experiments.reproduce` does.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite compiles far more than it executes: skipping LLVM's machine-code optimisation (the
# flags of `python -m layerlock_jax.aot`) about halves its CPU time and changes no HLO. The machine
# code differs, and so can the last bits of a result, so every process of a test must use it: set
# before JAX creates its backend, inherited by subprocesses, and added (TEST_XLA_FLAGS) by the
# tests that give a subprocess its own XLA_FLAGS. Not for real runs: the unoptimised element-wise
# code runs slower (measured: README.md, "Set-up").
from layerlock_jax.aot import FAST_COMPILE_XLA_FLAGS  # noqa: E402  (imports no backend)
TEST_XLA_FLAGS = " ".join(FAST_COMPILE_XLA_FLAGS)
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_configure(config):
  # Two tiers: `pytest -m "not slow" tests` (minutes, for the edit-test loop) and `pytest tests`
  # (everything; what CI runs). A slow test is a whole training run, a killed-and-resumed run or
  # a subprocess pipeline whose behaviour a cheaper test also touches.
  config.addinivalue_line(
      "markers", "slow: end-to-end runs of a minute or more; left out of the fast tier")
