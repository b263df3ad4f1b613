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

Blockwise SSL (layerlock_jax/methods/blockwise.py) adds two things. An *idle* suffix: in the sequential
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
import numpy as np
import optax

from layerlock_jax import plan
from layerlock_jax.plan import StageSpec

STACKED = "encoder"  # the one sub-tree that is cut by depth
IDLE = "encoder_idle"  # frozen-tree key of the idle encoder suffix (blockwise sequential)


# What a checkpoint holds of a TrainState: every field but `seed`, which is config.seed and is set
# again on restore (checkpoint/manager.py). The saved tree is therefore the same as before the seed joined
# the state, and checkpoints written then restore unchanged.
CHECKPOINTED = ("step", "params", "frozen", "opt_state", "teacher")


@flax.struct.dataclass
class TrainState:
  """The state of one freeze stage: the full parameter tree cut into `params` and `frozen`.

  Build it with `TrainState.create` (never field by field, so the split rule stays in one place);
  `full_params()` is the inverse, `group(name)` one sub-tree wherever it sits.
  """
  step: jax.Array          # int32 scalar: optimizer steps taken
  params: dict             # trainable parameters (the only tree the optimizer sees)
  frozen: dict             # parameters used but never updated at this stage
  opt_state: Any
  # V-JEPA's EMA teacher ({"embed", "encoder"}, vjepa.py): never differentiated, no optimizer
  # state. Empty for every other objective, which leaves their states and checkpoints unchanged.
  teacher: dict = flax.struct.field(default_factory=dict)
  # uint32 scalar, the run's seed: every random draw of a step derives from it (train_step.py:
  # key = fold_in(key(seed), step)). A leaf rather than a constant of the compiled program, so
  # runs that differ only in their seed compile to the same program (one persistent-cache entry
  # for a seed sweep).
  seed: Any = None

  @classmethod
  def create(cls, full: dict, spec: StageSpec, *, seed, tx: optax.GradientTransformation = None,
             opt_state=None, step=None, teacher=None) -> "TrainState":
    """The state of stage `spec` at step 0 from the model's full parameter tree: `full` split by
    `partition`, fresh optimizer state `tx.init(trainable)`, `teacher` (default none).

    The same call describes trees whose leaves are not arrays (shardings, abstract arrays): pass
    the matching `opt_state`, `step` and `seed` leaves instead of `tx` and integers.
    """
    params, frozen = partition(full, spec)
    if opt_state is None:
      opt_state = tx.init(params)
    if isinstance(seed, (int, np.integer)):
      seed = np.asarray(seed, np.uint32)
    return cls(step=np.zeros((), np.int32) if step is None else step, params=params,
               frozen=frozen, opt_state=opt_state, teacher={} if teacher is None else teacher,
               seed=seed)

  def full_params(self) -> dict:
    """The model's full parameter tree (one encoder stack), as the model's init returns it."""
    return merge(self.params, self.frozen)

  def group(self, name: str):
    """The top-level sub-tree `name`, trainable or frozen at this stage."""
    return group(self.params, self.frozen, name)

  def checkpointed(self) -> dict:
    """The fields a checkpoint saves (all but the seed; see CHECKPOINTED)."""
    return {name: getattr(self, name) for name in CHECKPOINTED}


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


def group(trainable: dict, frozen: dict, name: str):
  """The top-level sub-tree `name` of a split parameter tree, whichever part holds it."""
  return trainable[name] if name in trainable else frozen[name]


def encoder_stacks(trainable: dict, frozen: dict) -> list:
  """The encoder's stacked parts in depth order: frozen blocks 1..k, the trainable ones, then the
  idle suffix (blockwise sequential: segments not trained yet)."""
  return [tree[key] for tree, key in ((frozen, STACKED), (trainable, STACKED), (frozen, IDLE))
          if key in tree]


def encoder_stack(trainable: dict, frozen: dict):
  """The whole encoder stack: its parts (`encoder_stacks`) concatenated along the layers axis."""
  parts = encoder_stacks(trainable, frozen)
  if len(parts) == 1:
    return parts[0]
  return jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *parts)


def merge(trainable: dict, frozen: dict) -> dict:
  """Inverse of `partition`: one tree, the encoder rejoined in depth order (`encoder_stack`)."""
  full = {**frozen, **trainable}
  full.pop(IDLE, None)
  if encoder_stacks(trainable, frozen):
    full[STACKED] = encoder_stack(trainable, frozen)
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
  params, frozen = partition(state.full_params(), spec)
  new_layers = (spec.frozen_layers, spec.frozen_layers + stack_depth(params[STACKED]))
  opt_state = transfer_opt_state(state.opt_state, tx.init(params), old_layers, new_layers)
  return state.replace(params=params, frozen=frozen, opt_state=opt_state)
