"""Losses: MAE pixel reconstruction (with target normalisations) and latent (LayerLock) targets.

All losses are means of squared errors over the predicted positions and target values, computed in
float32.
"""
import jax.numpy as jnp

from layerlock_jax.models import vit

_EPS = 1e-6


def pixel_targets(video, patch_size, norm: str, ids=None):
  """Per-patch pixel targets (B, N, pt*ph*pw*3) from a uint8 or [0, 1] video; with token ids
  (B, S) those tokens' targets only, (B, S, pt*ph*pw*3) (normalised after the gather: every
  normalisation is per patch, so only the patches that carry a loss are normalised).

  none:          raw values in [0, 1].
  patch:         MAE's norm_pix_loss: whole patch standardised, (x - mean) / sqrt(var + 1e-6)
                 with the unbiased variance (PyTorch's default var, as in the MAE code).
  patch_channel: VideoMAE: each channel of the tubelet standardised over its pt*ph*pw values,
                 (x - mean) / (std + 1e-6) with the unbiased std [P-code].
  """
  x = vit.patchify(video, patch_size)  # (B, N, P*3), values (pt,ph,pw,C)
  if ids is not None:
    x = jnp.take_along_axis(x, ids[..., None], axis=1, mode="clip")
  x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
  if norm == "none":
    return x
  if norm == "patch":
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True, ddof=1)
    return (x - mean) / jnp.sqrt(var + _EPS)
  if norm == "patch_channel":
    b, n, pc = x.shape
    y = x.reshape(b, n, pc // 3, 3)
    mean = y.mean(2, keepdims=True)
    std = jnp.sqrt(y.var(2, keepdims=True, ddof=1))
    return ((y - mean) / (std + _EPS)).reshape(b, n, pc)
  raise ValueError(f"unknown pixel target norm {norm!r}")


def normalize_latent(x, norm: str):
  """Latent target normalisation over the feature axis.

  none:        raw block activations.
  layernorm:   LayerNorm without affine parameters (V-JEPA's target norm), biased variance.
  standardize: per-token standardisation with the unbiased std, (x - mean) / (std + 1e-6).
  """
  x = x.astype(jnp.float32)
  if norm == "none":
    return x
  mean = x.mean(-1, keepdims=True)
  if norm == "layernorm":
    return (x - mean) / jnp.sqrt(x.var(-1, keepdims=True) + _EPS)
  if norm == "standardize":
    return (x - mean) / (jnp.sqrt(x.var(-1, keepdims=True, ddof=1)) + _EPS)
  raise ValueError(f"unknown latent target norm {norm!r}")


def center_over_tokens(targets):
  """Subtract each clip's mean over all its tokens, per feature channel: (B, N, ...) -> same.

  Early in training a block's output is mostly one vector shared by every token of a clip; the
  per-token LayerNorm keeps that vector, and a latent loss on it teaches the student to broadcast
  it. Centring over the clip's tokens (all of them, masked or not, before any gather) leaves only
  what differs between positions.
  """
  targets = targets.astype(jnp.float32)
  return targets - targets.mean(axis=1, keepdims=True)


def mse(prediction, target):
  """Mean squared error over every element (positions and values), float32."""
  return jnp.mean(jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32)))


def feature_spread(x):
  """Scale-free collapse indicator of tokens x (B, S, D): mean per-dim std over all tokens divided
  by the RMS of the features. ~1 for isotropic features, 0 when every token is the same vector."""
  flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  std = jnp.mean(jnp.std(flat, axis=0))
  return std / (jnp.sqrt(jnp.mean(jnp.square(flat))) + 1e-6)
