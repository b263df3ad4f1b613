"""Loading a config file by path, the way `--config=FILE[:ARG]` does, without flags.

Config files under `configs/` are plain Python files with a `get_config([arg])`, not modules of a
package, so they are loaded from their path (as ml_collections' config_flags does). Tests,
benchmarks and the config files that build on another one all load through `load_config` /
`load_module` here, and dotted overrides (`{"model.depth": 4}`, what `--config.model.depth=4` does
on the command line) go through `override`.

Pure Python (ml_collections only): loading a config must not pull in JAX, matplotlib or the
evaluation package.
"""
import importlib.util
import pathlib
from typing import Any, Mapping

import ml_collections


def load_module(path: str | pathlib.Path):
  """Executes the config file at `path` as a fresh module (not registered in sys.modules)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"config file {str(path)!r} does not exist")
  spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def override(config: ml_collections.ConfigDict,
             overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Sets dotted fields (`{"optimizer.lr": 1e-3}`) in place and returns `config`.

  Only existing fields: the config is locked while the overrides apply, so a misspelled name raises
  instead of adding a field nothing reads.
  """
  was_locked = config.is_locked
  config.lock()
  try:
    config.update_from_flattened_dict(dict(overrides))
  finally:
    if not was_locked:
      config.unlock()
  return config


def load_config(spec: str | pathlib.Path,
                overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """'path/to/file.py[:ARG]' -> `get_config(ARG)` (or `get_config()`), then `overrides`.

  Everything after the first ':' is the config string, as for `--config=FILE:ARG`.
  """
  path, *arg = str(spec).split(":", 1)
  config = load_module(path).get_config(*arg)
  return override(config, overrides or {})
