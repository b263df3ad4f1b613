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


# The longest test files first: with `pytest -n 2 --dist loadfile` (CI) each worker takes whole
# files in collection order, so a long file collected last would run alone at the end. The sort
# is stable: tests keep their order within a file, and the other files keep theirs.
_LONGEST_FILES = ("test_reproduce.py", "test_checkpoint.py", "test_long_run.py",
                  "test_multihost.py", "test_vjepa.py", "test_blockwise.py", "test_model.py",
                  "test_freezing.py", "test_train_e2e.py", "test_bench_scripts.py")


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  rank = {name: i for i, name in enumerate(_LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
