"""Train state split into a trainable and a frozen part, and re-splitting when the boundary moves.

Why two parameter trees (../shared/research/anchors.md §10): optax masks work per leaf, and a
scanned encoder is ONE leaf per parameter kind for all layers, so no mask can freeze blocks 1..k
inside it, and masks never skip backward compute anyway. Instead the encoder stack is cut in two:
`frozen["encoder"]` holds blocks 1..k, `params["encoder"]` blocks k+1..L. Only `params` is
differentiated and only `params` has optimizer state, so frozen blocks receive no update, no weight
decay, no moment motion, and the backward pass never enters them.

Whole sub-models also move between the two trees by stage: the patch embedding (and its position
table) freezes with the first block; a head whose loss is inactive (the latent head before the first
switch, the pixel head when the pixel loss is dropped) is held frozen so that weight decay cannot
shrink it while it is unused.
"""
import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

STACKED = "encoder"  # the one sub-tree that is cut by depth


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """What the compiled train step of one stage must do (hashable: a jit cache key)."""
  frozen_layers: int = 0     # k: encoder blocks 1..k frozen
  latent: bool = False       # a latent loss is active (LayerLock target or naive latent)
  pixel_loss: bool = True    # the pixel loss is active
  target: str = "pixels"     # human-readable target name, for logs


def stage_spec(config, frozen_layers: int, target: str) -> StageSpec:
  """The StageSpec of a freeze-schedule stage (or of plain MAE / the naive-latent baseline)."""
  if config.naive_latent.enabled:
    return StageSpec(0, latent=True, pixel_loss=True,
                     target=f"pixels+naive_block_{config.naive_latent.layer}")
  latent = config.layerlock.enabled and config.layerlock.target == "latent" and frozen_layers > 0
  pixel = (not latent) or config.layerlock.keep_pixel_loss
  return StageSpec(frozen_layers, latent=latent, pixel_loss=pixel, target=target)


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimizer steps taken
  params: dict             # trainable parameters (the only tree the optimizer sees)
  frozen: dict             # parameters used but never updated at this stage
  opt_state: Any


def _is_sharding(x):
  return isinstance(x, jax.sharding.Sharding)


def _slice(tree, sl):
  """Slice the leading (layers) axis of every array leaf; sharding leaves pass through."""
  return jax.tree.map(lambda x: x if _is_sharding(x) else x[sl], tree, is_leaf=_is_sharding)


def trainable_groups(spec: StageSpec) -> dict[str, bool]:
  """Which top-level sub-trees are optimized at this stage (the encoder is cut separately)."""
  return {"embed": spec.frozen_layers == 0, "decoder": True,
          "pixel_head": spec.pixel_loss, "latent_head": spec.latent}


def partition(full: dict, spec: StageSpec) -> tuple[dict, dict]:
  """Full parameter tree -> (trainable, frozen) for a stage.

  Works on arrays, abstract arrays and on trees of shardings (which are not sliced).
  """
  k = spec.frozen_layers
  trainable, frozen = {}, {}
  for name, sub in full.items():
    if name == STACKED:
      trainable[name] = _slice(sub, slice(k, None))
      if k:
        frozen[name] = _slice(sub, slice(0, k))
    elif trainable_groups(spec)[name]:
      trainable[name] = sub
    else:
      frozen[name] = sub
  return trainable, frozen


def merge(trainable: dict, frozen: dict) -> dict:
  """Inverse of `partition`: the frozen encoder blocks come first."""
  full = {**frozen, **trainable}
  if STACKED in frozen:
    full[STACKED] = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0),
                                 frozen[STACKED], trainable[STACKED])
  return full


def _path_str(path) -> str:
  return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def transfer_opt_state(old_state, new_state):
  """Carry optimizer state across a re-split.

  For every leaf of the freshly initialised `new_state`: if the same path existed before with the
  same shape (counters, decoder moments) it is copied; if it is a stacked encoder moment whose
  leading axis shrank from n_old to n_new (blocks froze), the last n_new layers are kept — those are
  exactly the still-trainable blocks. Leaves of newly trainable sub-trees keep their fresh zeros.
  """
  old = {_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(old_state)[0]}
  paths, treedef = jax.tree_util.tree_flatten_with_path(new_state)
  leaves = []
  for path, new in paths:
    prev = old.get(_path_str(path))
    if prev is None or prev.ndim != new.ndim:
      leaves.append(new)
    elif prev.shape == new.shape:
      leaves.append(prev)
    elif prev.shape[1:] == new.shape[1:] and prev.shape[0] > new.shape[0]:
      leaves.append(prev[prev.shape[0] - new.shape[0]:])
    else:
      leaves.append(new)
  return jax.tree_util.tree_unflatten(treedef, leaves)


def resplit(state: TrainState, spec: StageSpec, tx: optax.GradientTransformation) -> TrainState:
  """Move the freeze boundary (and sub-models between groups) to `spec`; pure, jittable."""
  full = merge(state.params, state.frozen)
  params, frozen = partition(full, spec)
  opt_state = transfer_opt_state(state.opt_state, tx.init(params))
  return TrainState(step=state.step, params=params, frozen=frozen, opt_state=opt_state)
