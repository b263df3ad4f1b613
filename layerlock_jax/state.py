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

Blockwise SSL (layerlock_jax/blockwise.py) adds two things. An *idle* suffix: in the sequential
regime the blocks after the one in training are neither run nor updated, so the encoder is cut in
three, `frozen["encoder"]` (finished blocks), `params["encoder"]` (the active block) and
`frozen["encoder_idle"]` (blocks still to come; held frozen so weight decay cannot move them).
And per-block groups ("block_decoders", "block_heads": {"block_j": ...}) that are split entry by
entry: only the active block's decoder and head are trainable in the sequential regime.
"""
import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from layerlock_jax import blockwise
from layerlock_jax import config_defaults
from layerlock_jax import vjepa

STACKED = "encoder"  # the one sub-tree that is cut by depth
IDLE = "encoder_idle"  # frozen-tree key of the idle encoder suffix (blockwise sequential)


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """What the compiled train step of one stage must do (hashable: a jit cache key)."""
  frozen_layers: int = 0     # k: encoder blocks 1..k frozen
  latent: bool = False       # a latent loss is active (LayerLock target or naive latent)
  pixel_loss: bool = True    # the pixel loss is active
  target: str = "pixels"     # human-readable target name, for logs
  # Blockwise SSL; the defaults mean "not blockwise" and leave every other path unchanged.
  idle_layers: int = 0       # the last encoder blocks, neither run nor trained (held frozen)
  regime: str = ""           # "" (not blockwise) | concurrent | sequential | e2e
  boundaries: tuple[int, ...] = ()  # cumulative block ends b_1 < ... < b_n = encoder depth
  active_block: int = 0      # sequential: the one block in training (1-based); 0: every block


def stage_spec(config, frozen_layers: int, target: str) -> StageSpec:
  """The StageSpec of a freeze-schedule stage (or of plain MAE / the naive-latent baseline)."""
  if blockwise.enabled(config):
    depth = config_defaults.encoder_depth(config)
    bounds = blockwise.block_boundaries(config, depth)
    regime = config.blockwise.regime
    if regime != "sequential":
      return StageSpec(0, target=target, regime=regime, boundaries=bounds)
    # A sequential stage starts where a block starts: frozen_layers = b_{j-1}.
    starts = (0,) + bounds[:-1]
    if frozen_layers not in starts:
      raise ValueError(f"frozen_layers={frozen_layers} is not a block start {starts}")
    j = starts.index(frozen_layers) + 1
    return StageSpec(frozen_layers, target=target, idle_layers=depth - bounds[j - 1],
                     regime=regime, boundaries=bounds, active_block=j)
  if vjepa.enabled(config):
    layer = vjepa.target_layer(config, config_defaults.encoder_depth(config), frozen_layers)
    return StageSpec(frozen_layers, latent=True, pixel_loss=False,
                     target=f"teacher_block_{layer}")
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


def _block_trainable(spec: StageSpec, block: str) -> bool:
  return spec.active_block == 0 or block == blockwise.block_name(spec.active_block)


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
    elif name in blockwise.PER_BLOCK_GROUPS:
      active = {b: v for b, v in sub.items() if _block_trainable(spec, b)}
      rest = {b: v for b, v in sub.items() if not _block_trainable(spec, b)}
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
  for name in blockwise.PER_BLOCK_GROUPS:
    if name in frozen and name in trainable:
      full[name] = {**frozen[name], **trainable[name]}
  return full


def _depth(stack) -> int:
  leaves = jax.tree.leaves(stack)
  return int(leaves[0].shape[0]) if leaves else 0


def _path_str(path) -> str:
  return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def transfer_opt_state(old_state, new_state, old_layers=None, new_layers=None):
  """Carry optimizer state across a re-split.

  For every leaf of the freshly initialised `new_state`: if the same path existed before with the
  same shape (counters, decoder moments) it is copied; if it is a stacked encoder moment whose
  leading axis shrank from n_old to n_new (blocks froze), the last n_new layers are kept — those are
  exactly the still-trainable blocks. Leaves of newly trainable sub-trees keep their fresh zeros.

  With `old_layers`/`new_layers` = (start, stop) encoder layer ranges of the trainable stack before
  and after, encoder moments are aligned by layer instead: layers trainable both before and after
  keep their moments, all others start from zero. That is the same as above when only the start
  moves (LayerLock), and also right when the window moves past its old end (blockwise sequential:
  block j+1 must not inherit block j's moments although the shapes agree).
  """
  old = {_path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(old_state)[0]}
  paths, treedef = jax.tree_util.tree_flatten_with_path(new_state)
  leaves = []
  for path, new in paths:
    key = _path_str(path)
    prev = old.get(key)
    if (prev is not None and old_layers is not None and prev.ndim == new.ndim >= 1
        and STACKED in key.split("/") and prev.shape[1:] == new.shape[1:]):
      lo, hi = max(old_layers[0], new_layers[0]), min(old_layers[1], new_layers[1])
      if lo < hi:
        new = new.at[lo - new_layers[0]:hi - new_layers[0]].set(
            prev[lo - old_layers[0]:hi - old_layers[0]])
      leaves.append(new)
    elif prev is None or prev.ndim != new.ndim:
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
  old_start = _depth(state.frozen.get(STACKED, {}))
  old_layers = (old_start, old_start + _depth(state.params[STACKED]))
  full = merge(state.params, state.frozen)
  params, frozen = partition(full, spec)
  new_layers = (spec.frozen_layers, spec.frozen_layers + _depth(params[STACKED]))
  opt_state = transfer_opt_state(state.opt_state, tx.init(params), old_layers, new_layers)
  return state.replace(params=params, frozen=frozen, opt_state=opt_state)
