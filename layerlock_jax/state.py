"""Train state split into a trainable and a frozen part, and re-splitting when the boundary moves.

Why two parameter trees: optax masks work per leaf, and a scanned encoder is ONE leaf per parameter
kind for all layers, so no mask can freeze blocks 1..k inside it, and masks never skip backward
compute anyway. Instead the encoder stack is cut in two: `frozen["encoder"]` holds blocks 1..k,
`params["encoder"]` blocks k+1..L. Only `params` is differentiated and only `params` has optimizer
state, so frozen blocks receive no update, no weight decay, no moment motion, and the backward
pass never enters them.

Whole sub-models also move between the two trees by stage: the patch embedding (and its position
table) freezes with the first block; a head whose loss is inactive (the latent head before the first
switch, the pixel head when the pixel loss is dropped) is held frozen so that weight decay cannot
shrink it while it is unused.

Blockwise SSL (layerlock_jax/blockwise.py) adds two things. An *idle* suffix: in the sequential
regime the segments after the one in training are neither run nor updated, so the encoder is cut
in three, `frozen["encoder"]` (finished segments), `params["encoder"]` (the active segment) and
`frozen["encoder_idle"]` (segments still to come; held frozen so weight decay cannot move them).
And per-segment groups ("blockwise_decoders", "blockwise_heads": {"segment_j": ...}) that are
split entry by entry: only the active segment's decoder and head are trainable in the sequential
regime.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from layerlock_jax import plan
# What a stage must do is planned in pure Python (plan/stages.py); re-exported as the state's API.
from layerlock_jax.plan import StageSpec, stage_spec  # pylint: disable=unused-import

STACKED = "encoder"  # the one sub-tree that is cut by depth
IDLE = "encoder_idle"  # frozen-tree key of the idle encoder suffix (blockwise sequential)


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimizer steps taken
  params: dict             # trainable parameters (the only tree the optimizer sees)
  frozen: dict             # parameters used but never updated at this stage
  opt_state: Any
  # V-JEPA's EMA teacher ({"embed", "encoder"}, vjepa.py): never differentiated, no optimizer
  # state. Empty for every other objective, which leaves their states and checkpoints unchanged.
  teacher: dict = flax.struct.field(default_factory=dict)


def _is_sharding(x):
  return isinstance(x, jax.sharding.Sharding)


def _slice(tree, sl):
  """Slice the leading (layers) axis of every array leaf; sharding leaves pass through."""
  return jax.tree.map(lambda x: x if _is_sharding(x) else x[sl], tree, is_leaf=_is_sharding)


def trainable_groups(spec: StageSpec) -> dict[str, bool]:
  """Which top-level sub-trees are optimized at this stage (the encoder is cut separately)."""
  return {"embed": spec.frozen_layers == 0, "decoder": True, "encoder_norm": True,
          "predictor": True, "pixel_head": spec.pixel_loss, "latent_head": spec.latent}


def _segment_trainable(spec: StageSpec, segment: str) -> bool:
  return spec.active_segment == 0 or segment == plan.segment_name(spec.active_segment)


def partition(full: dict, spec: StageSpec) -> tuple[dict, dict]:
  """Full parameter tree -> (trainable, frozen) for a stage.

  Works on arrays, abstract arrays and on trees of shardings (which are not sliced).
  """
  k, idle = spec.frozen_layers, spec.idle_layers
  trainable, frozen = {}, {}
  for name, sub in full.items():
    if name == STACKED:
      trainable[name] = _slice(sub, slice(k, -idle if idle else None))
      if k:
        frozen[name] = _slice(sub, slice(0, k))
      if idle:
        frozen[IDLE] = _slice(sub, slice(-idle, None))
    elif name in plan.PER_SEGMENT_GROUPS:
      active = {j: v for j, v in sub.items() if _segment_trainable(spec, j)}
      rest = {j: v for j, v in sub.items() if not _segment_trainable(spec, j)}
      if active:
        trainable[name] = active
      if rest:
        frozen[name] = rest
    elif trainable_groups(spec)[name]:
      trainable[name] = sub
    else:
      frozen[name] = sub
  return trainable, frozen


def merge(trainable: dict, frozen: dict) -> dict:
  """Inverse of `partition`: frozen encoder blocks, then trainable ones, then idle ones."""
  full = {**frozen, **trainable}
  full.pop(IDLE, None)
  parts = [tree[key] for tree, key in ((frozen, STACKED), (trainable, STACKED), (frozen, IDLE))
           if key in tree]
  if len(parts) > 1:
    full[STACKED] = jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *parts)
  for name in plan.PER_SEGMENT_GROUPS:
    if name in frozen and name in trainable:
      full[name] = {**frozen[name], **trainable[name]}
  return full


def stack_depth(stack) -> int:
  """Layers held by a stacked parameter tree (0 for an empty tree)."""
  leaves = jax.tree.leaves(stack)
  return int(leaves[0].shape[0]) if leaves else 0


def _path_str(path) -> str:
  return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def transfer_opt_state(old_state, new_state, old_layers: tuple[int, int],
                       new_layers: tuple[int, int]):
  """Carry optimizer state across a re-split.

  `old_layers` / `new_layers` are the (start, stop) encoder layer ranges of the trainable stack
  before and after. For every leaf of the freshly initialised `new_state`: a stacked encoder
  moment is aligned by layer, so layers trainable both before and after keep their moments and all
  others start from zero. That keeps the still-trainable blocks' moments when only the start moves
  (LayerLock), and is also right when the window moves past its old end (blockwise sequential:
  segment j+1 must not inherit segment j's moments although the shapes agree). Any other leaf with
  the same path and shape as before (counters, decoder moments) is copied; leaves of newly
  trainable sub-trees keep their fresh zeros.
  """
  old = {_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(old_state)[0]}
  paths, treedef = jax.tree_util.tree_flatten_with_path(new_state)
  leaves = []
  for path, new in paths:
    key = _path_str(path)
    prev = old.get(key)
    if (prev is not None and prev.ndim == new.ndim >= 1 and STACKED in key.split("/")
        and prev.shape[1:] == new.shape[1:]):
      lo, hi = max(old_layers[0], new_layers[0]), min(old_layers[1], new_layers[1])
      if lo < hi:
        new = new.at[lo - new_layers[0]:hi - new_layers[0]].set(
            prev[lo - old_layers[0]:hi - old_layers[0]])
      leaves.append(new)
    elif prev is not None and prev.shape == new.shape:
      leaves.append(prev)
    else:
      leaves.append(new)
  return jax.tree_util.tree_unflatten(treedef, leaves)


def resplit(state: TrainState, spec: StageSpec, tx: optax.GradientTransformation) -> TrainState:
  """Move the freeze boundary (and sub-models between groups) to `spec`; pure, jittable."""
  old_start = stack_depth(state.frozen.get(STACKED, {}))
  old_layers = (old_start, old_start + stack_depth(state.params[STACKED]))
  full = merge(state.params, state.frozen)
  params, frozen = partition(full, spec)
  new_layers = (spec.frozen_layers, spec.frozen_layers + stack_depth(params[STACKED]))
  opt_state = transfer_opt_state(state.opt_state, tx.init(params), old_layers, new_layers)
  return state.replace(params=params, frozen=frozen, opt_state=opt_state)
