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


def num_masked(grid, ratio: float, mask_type: str) -> int:
  """Masked tokens per clip; for tube masks whole spatial columns are masked across time."""
  t, h, w = grid
  if mask_type == "tube":
    return t * int(round(h * w * ratio))
  return int(round(t * h * w * ratio))


def sample_mask(key, batch: int, grid, ratio: float, mask_type: str):
  """Returns (visible_ids (B, N - M), masked_ids (B, M)), int32, each sorted ascending.

  key: one key for the batch, or per-clip keys of shape (B,) (see `clip_keys`).

  random: every token independently ranked by uniform noise (MAE / 4DS [S]).
  tube:   one spatial mask per clip, repeated over all time steps (VideoMAE [P-code]).
  """
  t, h, w = grid
  if mask_type == "tube":
    m = int(round(h * w * ratio))
    noise = _uniform(key, batch, h * w)
    order = jnp.argsort(noise, axis=1)
    spatial_masked = jnp.sort(order[:, :m], axis=1)
    spatial_visible = jnp.sort(order[:, m:], axis=1)
    offsets = (jnp.arange(t, dtype=jnp.int32) * h * w)[None, :, None]
    expand = lambda s: (offsets + s[:, None, :]).reshape(batch, -1)
    return expand(spatial_visible).astype(jnp.int32), expand(spatial_masked).astype(jnp.int32)
  n = t * h * w
  m = int(round(n * ratio))
  noise = _uniform(key, batch, n)
  order = jnp.argsort(noise, axis=1)
  masked = jnp.sort(order[:, :m], axis=1).astype(jnp.int32)
  visible = jnp.sort(order[:, m:], axis=1).astype(jnp.int32)
  return visible, masked


def subsample(key, ids, fraction: float):
  """A random `fraction` of the columns of ids (B, M) per row, sorted (LayerLock's 5% option)."""
  b, m = ids.shape
  k = max(1, int(round(m * fraction)))
  if k == m:
    return ids
  order = jnp.argsort(_uniform(key, b, m), axis=1)[:, :k]
  return jnp.take_along_axis(ids, jnp.sort(order, axis=1), axis=1)


def gather_tokens(x, ids):
  """x (B, N, ...) gathered at ids (B, S) -> (B, S, ...)."""
  return jnp.take_along_axis(x, ids.reshape(ids.shape + (1,) * (x.ndim - 2)), axis=1)
