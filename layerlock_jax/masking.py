"""Token masks for MAE, generated in-graph from a key folded with the step.

The train step passes one key per clip (`clip_keys`: the step key folded with the clip's row in the
global batch), so a clip's mask depends on (seed, step, row) only: splitting the batch into
micro-batches (gradient accumulation) or over devices draws the same masks. A single key for the
whole batch is also accepted (one draw of shape (B, ...), as used by analysis code and tests).

Every clip keeps the same number of visible tokens, so shapes are static and the encoder runs on a
dense (B, N_vis, D) array (MAE token dropping). Masks are returned as index arrays (ids of visible
tokens, ids of masked tokens), each sorted ascending so that gathers walk memory in order.
"""
import jax
import jax.numpy as jnp

from layerlock_jax import plan


def clip_keys(key, rows):
  """Per-clip keys (B,): `key` folded with each clip's row index in the global batch."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rows)


def split(key):
  """jax.random.split into two, for one key or per-clip keys (B,) (split clip by clip)."""
  if key.shape:
    pair = jax.vmap(jax.random.split)(key)
    return pair[:, 0], pair[:, 1]
  first, second = jax.random.split(key)
  return first, second


def _uniform(key, batch: int, size: int):
  """Uniform noise (batch, size); with per-clip keys each row comes from its own clip's key."""
  if key.shape:
    return jax.vmap(lambda k: jax.random.uniform(k, (size,)))(key)
  return jax.random.uniform(key, (batch, size))


def sample_mask(key, batch: int, grid, ratio: float, mask_type: str):
  """Returns (visible_ids (B, N - M), masked_ids (B, M)), int32, each sorted ascending.

  key: one key for the batch, or per-clip keys of shape (B,) (see `clip_keys`).

  random: every token independently ranked by uniform noise (MAE / 4DS [S]).
  tube:   one spatial mask per clip, repeated over all time steps (VideoMAE [P-code]).
  The counts are plan.num_masked's (plan/tokens.py).
  """
  t, h, w = grid
  if mask_type == "tube":
    m = plan.share(h * w, ratio)
    noise = _uniform(key, batch, h * w)
    order = jnp.argsort(noise, axis=1)
    spatial_masked = jnp.sort(order[:, :m], axis=1)
    spatial_visible = jnp.sort(order[:, m:], axis=1)
    offsets = (jnp.arange(t, dtype=jnp.int32) * h * w)[None, :, None]
    expand = lambda s: (offsets + s[:, None, :]).reshape(batch, -1)
    return expand(spatial_visible).astype(jnp.int32), expand(spatial_masked).astype(jnp.int32)
  n = t * h * w
  m = plan.share(n, ratio)
  noise = _uniform(key, batch, n)
  order = jnp.argsort(noise, axis=1)
  masked = jnp.sort(order[:, :m], axis=1).astype(jnp.int32)
  visible = jnp.sort(order[:, m:], axis=1).astype(jnp.int32)
  return visible, masked


def subsample(key, ids, fraction: float):
  """A random `fraction` of the columns of ids (B, M) per row, sorted (LayerLock's 5% option)."""
  b, m = ids.shape
  k = plan.latent_queries(m, fraction)
  if k == m:
    return ids
  order = jnp.argsort(_uniform(key, b, m), axis=1)[:, :k]
  return jnp.take_along_axis(ids, jnp.sort(order, axis=1), axis=1)


def gather_tokens(x, ids):
  """x (B, N, ...) gathered at ids (B, S) -> (B, S, ...).

  Ids come from the samplers above, always in range: "clip" spares the out-of-range select that
  take_along_axis's default "fill" mode adds (a pass over the gathered array, and one over its
  gradient)."""
  return jnp.take_along_axis(x, ids.reshape(ids.shape + (1,) * (x.ndim - 2)), axis=1,
                             mode="clip")


# ------------------------------------------------------------------------------------------------
# V-JEPA multi-block masks
# ------------------------------------------------------------------------------------------------
def sample_blocks(key, batch: int, spatial, blocks, aspect):
  """Rectangles of V-JEPA's multi-block masks on an (h, w) grid, and the union they cover.

  `blocks` is ((count, scale), ...): clip i draws `count` rectangles of group i mod len(blocks),
  each of about `scale` * h * w positions, height/width ratio uniform in `aspect`, position uniform
  among the places where it fits (short-range: many small blocks; long-range: few large ones).
  Alternating groups over the batch gives both kinds in every step with ONE encoder pass, where
  V-JEPA runs the encoder once per group.

  Returns (union (B, h*w) bool, rects) with rects = (height, width, top, left, active), each
  (B, max_count); `active` marks the rectangles a clip's group really has.
  """
  h, w = spatial
  counts = jnp.asarray([int(n) for n, _ in blocks], jnp.int32)
  scales = jnp.asarray([float(s) for _, s in blocks], jnp.float32)
  max_count = max(int(n) for n, _ in blocks)
  group = jnp.arange(batch) % len(blocks)
  ratio_key, top_key, left_key = jax.random.split(key, 3)
  shape = (batch, max_count)
  ratio = jax.random.uniform(ratio_key, shape, minval=aspect[0], maxval=aspect[1])
  area = scales[group][:, None] * (h * w)
  height = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, h).astype(jnp.int32)
  width = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, w).astype(jnp.int32)
  top = jnp.floor(jax.random.uniform(top_key, shape) * (h - height + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(left_key, shape) * (w - width + 1)).astype(jnp.int32)
  active = jnp.arange(max_count)[None] < counts[group][:, None]
  rows = jnp.arange(h)[None, None, :, None]
  cols = jnp.arange(w)[None, None, None, :]
  e = lambda a: a[:, :, None, None]
  inside = ((rows >= e(top)) & (rows < e(top + height)) & (cols >= e(left))
            & (cols < e(left + width)) & e(active))
  union = jnp.any(inside, axis=1).reshape(batch, h * w)
  return union, (height, width, top, left, active)


def sample_multiblock(key, batch: int, grid, ratio: float, context_ratio: float, blocks, aspect):
  """V-JEPA multi-block mask with static shapes: (context_ids (B, C), target_ids (B, M)), sorted.

  jit needs the same number of tokens in every clip, but a union of random rectangles varies in
  size. So per frame exactly m = round(ratio * h * w) targets and c = round(context_ratio * h * w)
  context positions are taken by priority: targets are drawn from the union first (a random
  subset when it is larger than m, topped up with random outside positions when smaller), context
  from outside the union first and never from the targets. Positions in neither set are dropped
  (V-JEPA likewise truncates its masks to the smallest count in the batch). The spatial mask is
  repeated over all time steps (a tube: blocks span the whole clip, as in V-JEPA).
  """
  t, h, w = grid
  hw = h * w
  m, c = plan.tokens.multiblock_frame_counts(grid, ratio, context_ratio)
  block_key, target_key, context_key = jax.random.split(key, 3)
  union, _ = sample_blocks(block_key, batch, (h, w), blocks, aspect)
  in_union = union.astype(jnp.float32)
  # Scores in [0, 2): the priority set (+1) always ranks above the rest, ties broken at random.
  order = jnp.argsort(-(in_union + jax.random.uniform(target_key, (batch, hw))), axis=1)
  is_target = jnp.argsort(order, axis=1) < m  # rank of each position < m
  score = (1.0 - in_union) + jax.random.uniform(context_key, (batch, hw)) - 4.0 * is_target
  context = jnp.sort(jnp.argsort(-score, axis=1)[:, :c], axis=1)
  target = jnp.sort(order[:, :m], axis=1)
  offsets = (jnp.arange(t, dtype=jnp.int32) * hw)[None, :, None]
  expand = lambda s: (offsets + s[:, None, :]).reshape(batch, -1).astype(jnp.int32)
  return expand(context), expand(target)
