"""MAE decoders and per-patch heads.

Both decoders take the encoded visible tokens and the ids of the positions to predict ("queries")
and return one feature vector per query; a per-patch linear head maps features to targets (pixels
of a tubelet, or a frozen block's activation for LayerLock). Predicting only at query positions
means the decoder never pays for positions that carry no loss.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from layerlock_jax.models import vit


class LightDecoder(nn.Module):
  """VideoMAE-style decoder: project to a narrow width, append mask tokens, a few blocks, LN.

  Visible tokens and mask tokens both get a fixed sin-cos position code of the decoder width
  (VideoMAE); with RoPE the decoder blocks also rotate by position.
  """
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  grid: tuple[int, int, int]
  block: dict  # Block kwargs shared with the encoder (posemb, rope, attention, dtype, eps)
  remat_policy: str = "none"
  unroll: int = 1

  @nn.compact
  def __call__(self, enc_tokens, enc_ids, query_ids):
    coords = jnp.asarray(vit.token_grid(self.grid))
    table = jnp.asarray(vit.sincos_3d(self.grid, self.width))
    x = nn.Dense(self.width, dtype=self.block["dtype"], name="proj",
                 kernel_init=vit.param_init(vit.lecun, ("embed", "decoder_embed")),
                 bias_init=vit.param_init(vit.zeros, ("decoder_embed",)))(enc_tokens)
    mask_token = self.param("mask_token", vit.param_init(nn.initializers.normal(0.02),
                                                          ("decoder_embed",)),
                            (self.width,), jnp.float32)
    queries = jnp.broadcast_to(mask_token.astype(x.dtype), (*query_ids.shape, self.width))
    x = jnp.concatenate([x + table[enc_ids].astype(x.dtype),
                         queries + table[query_ids].astype(x.dtype)], axis=1)
    positions = coords[jnp.concatenate([enc_ids, query_ids], axis=1)]
    block = dict(self.block, width=self.width, mlp_dim=self.mlp_dim, num_heads=self.num_heads)
    x = vit.BlockStack(self.depth, block, self.remat_policy, self.unroll, name="blocks")(
        x, positions)
    x = x[:, enc_ids.shape[1]:]
    return nn.LayerNorm(epsilon=self.block["layer_norm_eps"], dtype=self.block["dtype"],
                        name="norm")(x)


class QueryDecoder(nn.Module):
  """4DS-style decoder: learned position-only query tokens prepended to the encoded tokens, then
  the last `depth` backbone blocks (same width as the encoder) [P-code 4DS history].

  One learned query per grid position (a (N, D) table); only the requested positions are used.
  """
  depth: int
  grid: tuple[int, int, int]
  block: dict  # full encoder Block kwargs (width, mlp_dim, num_heads, ...)
  remat_policy: str = "none"
  unroll: int = 1

  @nn.compact
  def __call__(self, enc_tokens, enc_ids, query_ids):
    coords = jnp.asarray(vit.token_grid(self.grid))
    width = self.block["width"]
    n = coords.shape[0]
    table = self.param("queries", vit.param_init(nn.initializers.normal(0.02),
                                                  (None, "embed")), (n, width), jnp.float32)
    x = jnp.concatenate([table[query_ids].astype(enc_tokens.dtype), enc_tokens], axis=1)
    positions = coords[jnp.concatenate([query_ids, enc_ids], axis=1)]
    x = vit.BlockStack(self.depth, self.block, self.remat_policy, self.unroll, name="blocks")(
        x, positions)
    x = x[:, :query_ids.shape[1]]
    return nn.LayerNorm(epsilon=self.block["layer_norm_eps"], dtype=self.block["dtype"],
                        name="norm")(x)


class PatchHead(nn.Module):
  """Per-patch linear map from decoder features to `heads` targets of size `features` each."""
  features: int
  heads: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = vit.Projection((x.shape[-1],), (self.heads, self.features), ("decoder_embed",),
                       (None, None), self.dtype, name="proj")(x)
    return y.astype(jnp.float32)  # (B, Q, heads, features); losses in float32
