"""The V-JEPA predictor: a narrow transformer from context tokens to target features.

It sees exactly two kinds of input: the context encoder's output at the visible positions
(projected to the predictor width) and one shared learned mask token per target position; both
carry a fixed sin-cos position code of their grid position (and RoPE in the blocks when the model
uses it). Its own width, depth and heads (V-JEPA: 384 wide, 12 deep for a ViT-L [P-code]); a final
LayerNorm and a linear map back to the encoder width give one predicted feature per target.

This is the MAE light decoder's computation (decoders.LightDecoder: project, append mask tokens
with positions, blocks, LN, per-query outputs) plus the output projection, so it reuses it.
"""
import flax.linen as nn

from layerlock_jax.models import decoders
from layerlock_jax.models import vit


class Predictor(nn.Module):
  """(context tokens (B, C, D), context ids (B, C), target ids (B, M)) -> (B, M, out_width)."""
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  out_width: int
  grid: tuple[int, int, int]
  block: dict  # Block kwargs shared with the encoder (posemb, rope, attention, dtype, eps)
  remat_policy: str = "none"
  unroll: int = 1

  @nn.compact
  def __call__(self, context, context_ids, target_ids):
    feats = decoders.LightDecoder(self.width, self.depth, self.num_heads, self.mlp_dim, self.grid,
                                  self.block, self.remat_policy, self.unroll, name="body")(
                                      context, context_ids, target_ids)
    out = vit.Projection((self.width,), (self.out_width,), ("decoder_embed",), ("embed",),
                         self.block["dtype"], name="out")(feats)
    return out.astype("float32")
