"""Parameters only, out of a checkpoint: `init_from` starts a new run from them, `restore_params`
hands them to tools (evaluation, feature extraction, weight export).

Neither reads the optimizer state or the data position, so the source run's optimizer, schedule and
data settings do not matter, only the model's shape; both check that (naming the mismatched config
fields or parameter paths) before any array is read. Full resume lives in checkpoint/manager.py.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Optional
import jax
import orbax.checkpoint as ocp

from layerlock_jax import plan
from layerlock_jax import state as state_lib
from layerlock_jax.checkpoint.manager import (SHAPE_FIELDS, IncompatibleCheckpointError, diff_fields,
                                      get_field, open_manager, plain, resolve, shape_fields,
                                      spec_from_meta, tree_mismatch)


@dataclasses.dataclass
class InitSource:
  """Parameters read for `init_from`, and how they become the run's full parameter tree.

  `fill(fresh, *arrays)` (jittable) gives the full parameters; `fresh` is a freshly initialised
  full tree when `needs_fresh` (an imported encoder leaves the decoder and heads to it), else None.
  The caller (Trainer.init_state) builds the new train state from them in its own layout.
  """
  arrays: tuple
  fill: Callable
  needs_fresh: bool


def init_from(path: str, config, abstract_state, abstract_params,
              param_shardings) -> InitSource:
  """The parameters of a checkpoint for a fresh run (step 0, new optimizer state) of `config`.

  Only `params` and `frozen` are read (an Orbax partial restore), so the optimizer, schedule and
  data settings of the source run do not matter; the model shape must match. `abstract_state(spec)`
  is the run's train state of a stage as ShapeDtypeStructs with shardings (the restore target);
  `abstract_params` / `param_shardings` the run's full parameter tree (imported encoders).
  """
  directory, step = resolve(path)
  manager = open_manager(directory, read_only=True)
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  if meta.get("imported"):
    manager.close()
    return _init_from_imported(path, config, abstract_params, param_shardings)
  # Parameter shapes only: the optimizer state is not read, and multi_target matters only
  # through the number of latent heads it makes.
  fields = set(SHAPE_FIELDS) - {"layerlock.multi_target"} | {"latent_heads"}
  problems = diff_fields({k: v for k, v in meta["shape_fields"].items() if k in fields},
                         {k: v for k, v in shape_fields(config).items() if k in fields})
  saved_spec = spec_from_meta(meta, config)
  target = abstract_state(saved_spec)
  target = {"params": target.params, "frozen": target.frozen}
  saved_tree = manager.item_metadata(step)["state"]
  if not problems:
    problems = tree_mismatch({"params": saved_tree["params"], "frozen": saved_tree["frozen"]},
                             target)
  manager.close()
  if problems:
    raise IncompatibleCheckpointError(
        f"--config.init_from={path}: parameters of a different model. Mismatched: "
        + "; ".join(problems[:12]))
  restored = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(
      os.path.join(directory, str(step), "state"), args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
  logging.info("init_from %s/%d: parameters only (saved at stage k=%d)", directory, step,
               saved_spec.frozen_layers)

  def fill(fresh, params, frozen):
    del fresh
    return state_lib.merge(params, frozen)
  return InitSource((restored["params"], restored["frozen"]), fill, needs_fresh=False)


# Config fields that decide the encoder's parameter shapes (the decoder's do not matter to tools
# that only run the encoder, nor to init_from of an imported encoder).
ENCODER_FIELDS = ("model.width", "model.mlp_dim", "model.num_heads", "model.patch_size",
                  "model.posemb", "data.num_frames", "data.image_size")


def restore_params(path: str, sharding: Optional[jax.sharding.Sharding] = None, config=None, *,
                   group_shardings: Optional[dict] = None) -> tuple[int, dict, dict]:
  """(step, meta, full parameter tree) of a checkpoint, for the model it was written for.

  Reads only `params` and `frozen` (never the optimizer state) and merges them into one tree (one
  encoder stack), placed with `sharding` (default: the first local device), except the top-level
  groups named in `group_shardings` ({group: tree of shardings of that group}; a stacked group's
  shardings fit any depth as long as the layers axis is not split). The saved tree's metadata
  gives every shape; with `config`, its encoder fields must match the checkpoint's
  (IncompatibleCheckpointError naming them, before any array is read).
  """
  directory, step = resolve(path)
  manager = open_manager(directory, read_only=True)
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  saved = manager.item_metadata(step)["state"]
  manager.close()
  if config is not None:
    problems = diff_fields({k: meta["shape_fields"][k] for k in ENCODER_FIELDS},
                           {k: plain(get_field(config, k)) for k in ENCODER_FIELDS})
    if problems:
      raise IncompatibleCheckpointError(
          f"{directory}/{step} holds an encoder of another shape than the config's: "
          + "; ".join(problems))
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  group_shardings = group_shardings or {}

  def abstract(tree, shardings):
    return jax.tree.map(lambda m, sh: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sh),
                        tree, shardings, is_leaf=lambda x: hasattr(x, "shape"))

  target = {}
  for part in ("params", "frozen"):
    for name, tree in (dict(saved[part]) if part in saved and saved[part] else {}).items():
      shardings = group_shardings.get(name)
      if shardings is None:
        shardings = jax.tree.map(lambda _: sharding, tree, is_leaf=lambda x: hasattr(x, "shape"))
      target.setdefault(part, {})[name] = abstract(tree, shardings)
  restored = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(
      os.path.join(directory, str(step), "state"), args=ocp.args.PyTreeRestore(
          item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
  return step, meta, state_lib.merge(restored.get("params", {}), restored.get("frozen", {}))


def _init_from_imported(path: str, config, abstract_params, param_shardings) -> InitSource:
  """init_from an imported encoder (layerlock_jax.weights): embedding and blocks come from it,
  everything else (decoder, heads) is freshly initialised from config.seed.

  The imported stack of L blocks fills the encoder, and with the 4DS query decoder, whose blocks
  are the backbone's last ones, the encoder takes blocks 1..L-d and the decoder blocks L-d+1..L.
  """
  depth_enc = plan.encoder_depth(config)
  want_embed = abstract_params["embed"]
  want_enc = abstract_params["encoder"]
  dec_depth = plan.query_decoder_depth(config)
  # Read straight into the run's parameter layout (never whole on one device: a 4B encoder
  # exceeds one accelerator's memory); the fields are compared before any array is read.
  group_shardings = {k: param_shardings[k] for k in ("embed", "encoder", "encoder_norm")
                     if k in param_shardings}
  try:
    _, meta, source = restore_params(path, config=config, group_shardings=group_shardings)
  except IncompatibleCheckpointError as err:
    raise IncompatibleCheckpointError(f"--config.init_from={path}: {err}") from None
  problems = tree_mismatch({"embed": source["embed"], "encoder_norm": source.get("encoder_norm")},
                           {"embed": want_embed,
                            "encoder_norm": abstract_params.get("encoder_norm")})
  depth = state_lib.stack_depth(source["encoder"])
  if problems:
    pass
  elif depth != depth_enc + dec_depth:
    problems.append(f"encoder depth: checkpoint {depth} blocks != config {depth_enc}"
                    + (f" + {dec_depth} query-decoder blocks" if dec_depth else ""))
  else:
    problems += tree_mismatch(
        jax.tree.map(lambda x: x[:depth_enc], source["encoder"]), want_enc)
  if problems:
    raise IncompatibleCheckpointError(
        f"--config.init_from={path} (imported from {meta['imported'].get('from')}): encoder of a "
        "different shape. Mismatched: " + "; ".join(problems[:12]))
  logging.info("init_from %s: imported encoder (%s), decoder and heads freshly initialised",
               path, meta["imported"].get("from"))

  def fill(full, embed, encoder, norm):
    full["embed"] = embed
    full["encoder"] = jax.tree.map(lambda x: x[:depth_enc], encoder)
    if dec_depth:
      full["decoder"]["blocks"] = jax.tree.map(lambda x: x[depth_enc:], encoder)
    if norm is not None:
      full["encoder_norm"] = norm
    return full
  return InitSource((source["embed"], source["encoder"], source.get("encoder_norm")), fill,
                    needs_fresh=True)
