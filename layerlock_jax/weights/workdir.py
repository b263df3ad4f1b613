"""Imported encoders as workdirs, and the parameters of any workdir without its optimizer state.

An imported model is written in the layout training writes (train.write_config's config.json, an
Orbax checkpoint `checkpoints/0` with the items state, data_iter and meta), so the tools that read
parameters read it: `evaluate`, `extract_features`, `export`, and `--config.init_from=W`. Its state
holds what was released, the encoder (embedding + blocks) as `params`, and no decoder, heads or
optimizer state; meta["imported"] records the source. `init_from` takes the encoder from it and
initialises the rest for the new run's config; resuming W itself as a run is refused by the
resume path's tree check (continue with init_from into a new workdir instead).
"""
import json
import logging
import os

import jax
import ml_collections

from layerlock_jax.checkpoint import manager as checkpoint
from layerlock_jax.checkpoint import params as checkpoint_params
from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import validation as config_validation
from layerlock_jax import plan
from layerlock_jax import state as state_lib
from layerlock_jax.weights import Imported, WeightsError


def config_for(imported: Imported, seed: int = 0) -> ml_collections.ConfigDict:
  """base_config() with the imported encoder's fields (everything else at its default)."""
  config = config_defaults.base_config()
  config.seed = seed
  for key, value in imported.model.items():
    config.model[key] = tuple(value) if isinstance(value, (list, tuple)) else value
  for key, value in imported.data.items():
    config.data[key] = value
  return config


def _merge(config, values: dict, where: str) -> None:
  for key, value in values.items():
    if key not in config:
      logging.warning("%s: ignoring unknown config field %s", where, key)
    elif isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _merge(config[key], value, f"{where}.{key}")
    elif isinstance(config[key], tuple) and isinstance(value, list):
      config[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    else:
      config[key] = value


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained (or imported) with, from its config.json."""
  file = os.path.join(workdir, "config.json")
  if not os.path.isfile(file):
    raise WeightsError(f"{workdir}: no config.json; not a layerlock_jax workdir")
  with open(file) as f:
    values = json.load(f)
  config = config_defaults.base_config()
  _merge(config, values, "config")
  return config


def load_params(workdir: str, step: int | None = None,
                sharding: jax.sharding.Sharding | None = None) -> tuple[int, object, dict]:
  """(step, config, full parameter tree) of a workdir's checkpoint (latest if step is None).
  Only parameters are read; the optimizer state stays on disk."""
  config = load_config(workdir)
  path = workdir if step is None else os.path.join(workdir, checkpoint.CHECKPOINTS, str(step))
  try:
    step, _, params = checkpoint_params.restore_params(path, sharding)
  except FileNotFoundError as err:
    raise WeightsError(f"{workdir}: no checkpoint{'' if step is None else f' for step {step}'} "
                       f"({err})") from err
  return step, config, params


def save_imported(imported: Imported, workdir: str, seed: int = 0) -> str:
  """Write `imported` into a new workdir as a step-0 checkpoint; returns the checkpoint dir."""
  from layerlock_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from layerlock_jax import train  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(os.path.join(workdir, "config.json")) or os.path.exists(
      os.path.join(workdir, checkpoint.CHECKPOINTS)):
    raise WeightsError(f"--workdir={workdir} already holds a run; refusing to overwrite it "
                       "(pick a new directory)")
  config = config_for(imported, seed)
  try:
    config_validation.validate(config, num_devices=jax.device_count())
  except plan.ConfigError as err:
    raise WeightsError(f"{imported.path}: the imported model gives an invalid config: "
                       f"{plan.format_error(err)}") from err
  spec = plan.stage_spec(config, 0, "pixels")
  # Encoder only, no optimizer state: nothing else was released, and inventing a decoder here
  # would only be discarded by init_from (which initialises one for the run's own config).
  # Host numpy arrays go to Orbax as they are (no device copy of a possibly 15 GB encoder).
  state = state_lib.TrainState.create(imported.params, spec, seed=config.seed, opt_state={})
  data_iter = pipeline.make_train_iterator(
      config.data, seed=config.seed, global_batch_size=config.batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())
  os.makedirs(workdir, exist_ok=True)
  train.write_config(config, workdir)
  ckpts = checkpoint.Checkpoints.in_workdir(workdir, config)
  ckpts.save(0, state, spec, data_iter, checkpoint.Progress(), wait=True,
             extra_meta={"imported": {"from": imported.source, "path": imported.path}})
  ckpts.close()
  return os.path.join(workdir, checkpoint.CHECKPOINTS, "0")
