"""Entry point: `python -m layerlock_jax.main --config=configs/tiny.py --workdir=DIR`.

Run the same command on every host of a pod or cluster. Order: flags -> config validation (before
anything compiles or allocates) -> training. A bad config ends the program with one line naming the
field and exit status 2.
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax  # pylint: disable=g-import-not-at-top
  from layerlock_jax import config_validation  # pylint: disable=g-import-not-at-top
  from layerlock_jax import train  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if config is None:
    _fail("--config is required, e.g. --config=configs/tiny.py")
  if not _WORKDIR.value:
    _fail("--workdir is required: the directory for checkpoints, metrics and logs")
  if config.compile_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(config.compile_cache_dir))
  try:
    config_validation.validate(config, num_devices=jax.device_count(),
                               process_count=jax.process_count())
  except config_validation.ConfigError as err:
    _fail(config_validation.format_error(err))
  logging.getLogger().setLevel(logging.INFO)
  train.run(config, os.path.expanduser(_WORKDIR.value))


def _fail(message: str):
  print(message, file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  app.run(main)
