"""Video ViT building blocks: tubelet embedding, position encodings, pre-LN blocks, scanned stacks.

Every parameter carries logical axis names (`nn.with_logical_partitioning`) and activations carry
logical sharding constraints, so one rules table in the config decides data-parallel, FSDP or
FSDP+tensor layouts (see layerlock_jax/sharding.py).

Layers always live in an `nn.scan` (`BlockStack`): one compiled body however deep the model, and a
stacked `[layers, ...]` parameter layout that can be cut at any depth. That cut is how LayerLock
freezes a prefix for real (a frozen stack and a trainable stack, see layerlock_jax/state.py): the
same `BlockStack` class runs both, with or without remat, and the parameter trees are identical.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from layerlock_jax import plan
from layerlock_jax.models import attention as attention_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Named remat policies (maxtext style). "none" stores every activation for backward.
REMAT_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}

_xavier = nn.initializers.xavier_uniform()
lecun = nn.initializers.lecun_normal()
zeros = nn.initializers.zeros


def param_init(init, axes):
  return nn.with_logical_partitioning(init, axes)


def constrain(x, axes):
  """Activation sharding constraint by logical names (no-op outside a mesh/rules context)."""
  return nn.with_logical_constraint(x, axes)


# ------------------------------------------------------------------------------------------------
# Position encodings
# ------------------------------------------------------------------------------------------------
def token_grid(grid: Sequence[int]) -> np.ndarray:
  """(N, 3) int32 (t, h, w) coordinates of the N = t*h*w tokens in raster order."""
  t, h, w = grid
  coords = np.stack(np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij"), -1)
  return coords.reshape(-1, 3).astype(np.int32)


def sincos_1d(positions: np.ndarray, dim: int) -> np.ndarray:
  """Transformer sin-cos features of integer positions: (N,) -> (N, dim), dim even."""
  omega = 1.0 / 10_000 ** (np.arange(dim // 2, dtype=np.float64) / (dim // 2))
  angles = positions[:, None].astype(np.float64) * omega[None]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_3d(grid: Sequence[int], width: int) -> np.ndarray:
  """Fixed (N, width) sin-cos table: width split evenly over (t, h, w), zero-padded remainder.

  VideoMAE uses a 1-D table over the flattened index; a separable 3-D table keeps the geometry
  (neighbours in time/space are close) and is what MAE-style video models converged on.
  """
  coords = token_grid(grid)
  per_axis = (width // 3) // 2 * 2
  parts = [sincos_1d(coords[:, a], per_axis) for a in range(3)]
  table = np.concatenate(parts, axis=1)
  return np.pad(table, ((0, 0), (0, width - table.shape[1]))).astype(np.float32)


def sincos_1d_table(num_tokens: int, width: int) -> np.ndarray:
  """Fixed (N, width) table over the flattened raster index, sin and cos interleaved.

  The VideoMAE / original-Transformer layout: feature j of token p is sin (j even) or cos (j odd)
  of p / 10000 ** (2 * (j // 2) / width). Computed in float64, returned as float32, so imported
  VideoMAE weights see exactly the table they were trained with.
  """
  j = np.arange(width)
  angles = np.arange(num_tokens, dtype=np.float64)[:, None] / np.power(
      10_000.0, 2 * (j // 2) / width)[None]
  table = np.where(j % 2 == 0, np.sin(angles), np.cos(angles))
  return table.astype(np.float32)


def apply_rope(x, positions, fractions: Sequence[float], base: float):
  """3-D rotary position encoding over the last axis of x.

  x: (..., S, F); positions: (..., S, 3) integer (t, h, w). The feature axis is cut into
  [t-part | h-part | w-part | untouched]; each part of size d is rotated as d/2 pairs (i, i + d/2)
  by angle pos * base**(-2i/d). LayerLock's split is 10% / 25% / 25% / 40% none [S].
  """
  sections = plan.rope_sections(x.shape[-1], fractions)
  out, start = [], 0
  for axis, d in enumerate(sections):
    if d == 0:
      continue
    part = x[..., start:start + d].astype(jnp.float32)
    half = d // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / d)
    angle = positions[..., axis:axis + 1].astype(jnp.float32) * freqs  # (..., S, half)
    if x.ndim == positions.ndim + 1:  # x has a heads axis: (..., S, H, F)
      angle = angle[..., None, :]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x1, x2 = part[..., :half], part[..., half:]
    out.append(jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).astype(x.dtype))
    start += d
  out.append(x[..., start:])
  return jnp.concatenate(out, axis=-1)


# ------------------------------------------------------------------------------------------------
# Tubelet embedding
# ------------------------------------------------------------------------------------------------
def patchify(video, patch_size: Sequence[int]):
  """(B, T, H, W, C) -> (B, N, pt*ph*pw*C), tokens in raster (t, h, w) order, values (pt, ph, pw, C)."""
  b, t, h, w, c = video.shape
  pt, ph, pw = patch_size
  x = video.reshape(b, t // pt, pt, h // ph, ph, w // pw, pw, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, (t // pt) * (h // ph) * (w // pw), pt * ph * pw * c)


class TubeletEmbed(nn.Module):
  """Non-overlapping (pt, ph, pw) tubelets -> width-D tokens (+ absolute position encoding).

  A conv with kernel = stride = tubelet is exactly a dense layer on patchified input; the dense
  form keeps one code path for the embedding and the pixel target.

  With `ids` (B, S) only those tokens are embedded: the same values as embedding every token and
  gathering them, without the projection (and its backward) over the tokens masking drops - at
  90% masking that is 90% of the embedding's matmul, bias-gradient reduction and the scatter that
  would route gradients back to the full token array.
  """
  width: int
  patch_size: tuple[int, int, int]
  posemb: str  # learned_3d | sincos | sincos_1d | rope | none (rope is applied inside the blocks)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video, ids=None):
    b, t, h, w, _ = video.shape
    grid = (t // self.patch_size[0], h // self.patch_size[1], w // self.patch_size[2])
    patches = patchify(video, self.patch_size)
    if ids is not None:
      patches = jnp.take_along_axis(patches, ids[..., None], axis=1, mode="clip")
    x = dense_over_tokens(nn.Dense(self.width, dtype=self.dtype, name="patch",
                                   kernel_init=param_init(lecun, ("patch", "embed")),
                                   bias_init=param_init(zeros, ("embed",))), patches)
    if self.posemb == "learned_3d":
      table = self.param("pos", param_init(nn.initializers.normal(0.02),
                                            (None, None, None, "embed")),
                         (*grid, self.width), jnp.float32).reshape(-1, self.width)
    elif self.posemb == "sincos":
      table = jnp.asarray(sincos_3d(grid, self.width))
    elif self.posemb == "sincos_1d":
      table = jnp.asarray(sincos_1d_table(grid[0] * grid[1] * grid[2], self.width))
    else:
      table = None
    if table is not None:
      x = x + (table[None] if ids is None else table[ids]).astype(x.dtype)
    return constrain(x, ("batch", "length", "act_embed"))


# ------------------------------------------------------------------------------------------------
# Transformer block and scanned stack
# ------------------------------------------------------------------------------------------------
class Projection(nn.Module):
  """Dense map from the trailing `in_shape` axes to `out_shape` axes, kernel kept in full shape.

  (flax's DenseGeneral initialises a flattened kernel and reshapes it, which breaks logical
  sharding constraints of the multi-axis kernel when shapes are checked under a mesh.)
  """
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  in_axes: tuple
  out_axes: tuple
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                            in_axis=tuple(range(len(self.in_shape))),
                                            out_axis=tuple(range(len(self.in_shape),
                                                                 len(self.in_shape) +
                                                                 len(self.out_shape))))
    kernel = self.param("kernel", param_init(init, self.in_axes + self.out_axes),
                        self.in_shape + self.out_shape, jnp.float32)
    bias = self.param("bias", param_init(zeros, self.out_axes), self.out_shape, jnp.float32)
    n_in = len(self.in_shape)
    lead = x.shape[:x.ndim - n_in]
    tokens = x.reshape((-1, *self.in_shape))  # see `dense_over_tokens`
    y = jax.lax.dot_general(tokens.astype(self.dtype), kernel.astype(self.dtype),
                            ((tuple(range(1, n_in + 1)), tuple(range(n_in))), ((), ())))
    return (y + bias.astype(self.dtype)).reshape(*lead, *self.out_shape)


def dense_over_tokens(layer, x):
  """`layer` (a Dense on the last axis) applied to x's leading axes flattened into one.

  Same values, but the weight gradient then contracts one token axis instead of (batch, length):
  XLA:CPU runs a two-axis contraction much slower than the flattened one (measured:
  bench/README.md, "Against Hugging Face PyTorch VideoMAE"). The
  reshape is a bitcast everywhere, and batch, the only sharded activation axis, stays the major
  one of the merged axis, so sharded runs lay out the same.
  """
  lead = x.shape[:-1]
  y = layer(x.reshape(-1, x.shape[-1]))
  return y.reshape(*lead, y.shape[-1])


class Block(nn.Module):
  """Pre-LN transformer block (LN -> MHA -> residual, LN -> MLP -> residual), no final norm [P-code].

  With RoPE placed "after_norm" (LayerLock [S]), the first LayerNorm's output is rotated before the
  QKV projection; with "qk", q and k are rotated per head as in language models.
  """
  width: int
  mlp_dim: int
  num_heads: int
  posemb: str = "none"
  rope_base: float = 10_000.0
  rope_fractions: tuple[float, float, float] = (0.10, 0.25, 0.25)
  rope_placement: str = "after_norm"
  attention: str = "auto"
  attention_impl: str = ""
  layer_norm_eps: float = 1e-6
  gelu_approximate: bool = True  # tanh GELU (flax's default); False: exact erf GELU (VideoMAE)
  dtype: Any = jnp.float32
  return_output: bool = False  # also emit the block output as the scan's per-layer output

  @nn.compact
  def __call__(self, x, positions):
    head_dim = self.width // self.num_heads
    rope = self.posemb == "rope"
    ln = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name,
                                   scale_init=param_init(nn.initializers.ones, ("embed",)),
                                   bias_init=param_init(zeros, ("embed",)))
    y = ln("norm1")(x)
    if rope and self.rope_placement == "after_norm":
      y = apply_rope(y, positions, self.rope_fractions, self.rope_base)
    qkv = Projection((self.width,), (3, self.num_heads, head_dim), ("embed",),
                     (None, "heads", "kv"), self.dtype, name="qkv")(y)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    if rope and self.rope_placement == "qk":
      q = apply_rope(q, positions, self.rope_fractions, self.rope_base)
      k = apply_rope(k, positions, self.rope_fractions, self.rope_base)
    q = constrain(q, ("batch", "length", "act_heads", "kv"))
    k = constrain(k, ("batch", "length", "act_heads", "kv"))
    v = constrain(v, ("batch", "length", "act_heads", "kv"))
    y = attend(q, k, v, self.attention, self.attention_impl)
    y = Projection((self.num_heads, head_dim), (self.width,), ("heads", "kv"), ("embed",),
                   self.dtype, name="out")(y)
    x = constrain(x + y, ("batch", "length", "act_embed"))
    y = ln("norm2")(x)
    y = dense_over_tokens(nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp1",
                                   kernel_init=param_init(_xavier, ("embed", "mlp")),
                                   bias_init=param_init(zeros, ("mlp",))), y)
    y = constrain(nn.gelu(y, approximate=self.gelu_approximate), ("batch", "length", "act_mlp"))
    y = dense_over_tokens(nn.Dense(self.width, dtype=self.dtype, name="mlp2",
                                   kernel_init=param_init(_xavier, ("mlp", "embed")),
                                   bias_init=param_init(zeros, ("embed",))), y)
    x = constrain(x + y, ("batch", "length", "act_embed"))
    return x, (x if self.return_output else None)


def attend(q, k, v, attention: str, impl: str):
  """Multi-head attention on (B, S, H, Dh) inputs; softmax in float32."""
  if attention == "dot_product":
    return jax.nn.dot_product_attention(q, k, v, implementation=impl or None)
  if attention in ("auto", "pallas"):
    # pallas: the TPU kernel wherever the program is traced (with Pallas' TPU interpret mode on CPU).
    kernel = "pallas_tpu" if attention == "pallas" else attention_lib.choose(q)
    if kernel == "pallas_tpu":
      return attention_lib.flash_attention_tpu(q, k, v)
    if kernel == "cudnn":
      return attention_lib.cudnn_attention(q, k, v)
  return softmax_attention(q, k, v)


@jax.custom_vjp
def softmax_attention(q, k, v):
  """softmax(q k^T / sqrt(Dh)) v, with a hand-written backward.

  The values are those of the plain einsum-softmax-einsum; the formulation is what the compiler
  sees. Heads become a batch axis up front, the softmax's normalisation divides the (S, Dh)
  output instead of the (S, S) weights, and the backward is the textbook one (dS = P * (dP -
  rowsum(dO * O))) instead of autodiff through the softmax's max / exp / sum / divide. XLA:CPU
  runs this one about as fast as PyTorch's SDPA and the autodiff version much slower (measured:
  bench/README.md, "Against Hugging Face PyTorch VideoMAE"), because autodiff left it broadcasts of
  row statistics to (S, S) materialised in memory and (B, S, H, Dh) <-> (B, H, S, Dh) layout
  changes around each of the six matmuls. What is saved for backward is what autodiff saves: the
  (S, S) probabilities (plus the small output).
  """
  return _attention_fwd(q, k, v)[0]


def _attention_fwd(q, k, v):
  scale = q.shape[-1] ** -0.5
  q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # (B, H, S, Dh)
  # Scaling q (S, Dh) rather than the (S, S) logits: XLA:CPU otherwise materialised the scale as an
  # (S, S) array shared by every layer's fused q k^T. Same values where 1/sqrt(Dh) is a power of 2.
  q = q * jnp.asarray(scale, q.dtype)
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
  e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  denom = jnp.sum(e, axis=-1, keepdims=True)
  out = jnp.einsum("bhqk,bhkd->bhqd", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
  out = (out / denom).astype(v.dtype)
  probs = (e / denom).astype(v.dtype)
  return jnp.swapaxes(out, 1, 2), (q, k, v, probs, out)


def _attention_bwd(residuals, d_out):
  q, k, v, probs, out = residuals
  scale = q.shape[-1] ** -0.5
  d_out = jnp.swapaxes(d_out, 1, 2)  # (B, H, S, Dh)
  d_v = jnp.einsum("bhqk,bhqd->bhkd", probs, d_out)
  d_probs = jnp.einsum("bhqd,bhkd->bhqk", d_out, v, preferred_element_type=jnp.float32)
  row = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  d_logits = (probs.astype(jnp.float32) * (d_probs - row)).astype(q.dtype)
  d_q = jnp.einsum("bhqk,bhkd->bhqd", d_logits, k) * jnp.asarray(scale, q.dtype)
  d_k = jnp.einsum("bhqk,bhqd->bhkd", d_logits, q)  # q is saved already scaled
  return tuple(jnp.swapaxes(t, 1, 2) for t in (d_q, d_k, d_v))


softmax_attention.defvjp(_attention_fwd, _attention_bwd)


class BlockStack(nn.Module):
  """`num_layers` Blocks in one `nn.scan`; parameters stacked on a leading "layers" axis.

  remat_policy "none" keeps every activation (use it for forward-only stacks such as a frozen
  prefix: nothing is saved for backward there anyway). `return_all` additionally returns every
  block's output, stacked (L, B, S, D), for multi-target LayerLock and depth-wise evaluation.
  """
  num_layers: int
  block: dict  # Block keyword arguments
  remat_policy: str = "none"
  unroll: int = 1

  @nn.compact
  def __call__(self, x, positions, return_all: bool = False):
    block_cls = Block
    if self.remat_policy != "none":
      block_cls = nn.remat(Block, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=False)
    scanned = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast,), length=self.num_layers,
                      unroll=self.unroll, metadata_params={nn.PARTITION_NAME: "layers"})
    x, outputs = scanned(name="layers", return_output=return_all, **self.block)(x, positions)
    return (x, outputs) if return_all else x
