"""The video MAE as a set of Linen modules composed by pure functions.

Why not one Linen module: LayerLock runs the *same* encoder blocks as two stacks whose split point
moves during training (a frozen prefix, forward only, and a trainable suffix), runs the frozen prefix
a second time on the full clip to make latent targets, and the naive-latent baseline runs the first
j trainable blocks on the full clip. With the parameters of the encoder stacked `[layers, ...]`,
each of these is "apply a BlockStack to a slice of the stack", which is simplest as plain functions
over parameter dicts. The parameter tree is:

  {"embed":       TubeletEmbed      (patch projection, learned 3-D position table if any),
   "encoder":     BlockStack        (encoder_depth blocks, stacked),
   "decoder":     LightDecoder | QueryDecoder,
   "pixel_head":  PatchHead         (decoder features -> tubelet pixels),
   "latent_head": PatchHead         (decoder features -> encoder width; LayerLock targets)}

With blockwise SSL (config.blockwise.enabled, layerlock_jax/blockwise.py) every encoder segment (a
run of blocks) has its own light decoder and pixel head instead of the single decoder and heads:

  {"embed", "encoder" (unchanged: the same stacked tree, so evaluation tools read it as is),
   "blockwise_decoders": {"segment_1": LightDecoder, ..., "segment_n": ...},
   "blockwise_heads":    {"segment_1": PatchHead, ..., "segment_n": ...}}

The per-segment sub-trees are applied with the same `decode` / `predict_pixels` as the plain ones.

With V-JEPA (config.vjepa.enabled, layerlock_jax/vjepa.py) a predictor replaces decoder and heads:

  {"embed", "encoder" (unchanged), "predictor": Predictor (context + mask tokens -> features)}
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from layerlock_jax import plan
from layerlock_jax.models import decoders
from layerlock_jax.models import predictor
from layerlock_jax.models import vit


def stack_depth(stack_params) -> int:
  """Number of blocks held by a stacked BlockStack parameter tree (0 for an empty tree)."""
  leaves = jax.tree.leaves(stack_params)
  return int(leaves[0].shape[0]) if leaves else 0


# Unroll factor that unrolls any stack (lax.scan unrolls fully when it exceeds the length).
FULL_UNROLL = 1 << 16


def resolve_scan_unroll(scan_unroll: int, platform: str | None = None) -> int:
  """config.model.scan_unroll -> the unroll factor of the encoder / predictor scans.

  0 (auto): unrolled where the step is compiled for CPU, rolled (1) elsewhere. XLA:CPU runs the
  unrolled steps faster than the rolled ones at about the same compile time and temporary memory
  (measured with bench/option_ab.py: bench/README.md, "Our step against itself"): a rolled
  stack slices each layer's weights out of the stacked parameters, writes every layer's
  residuals into stacked buffers and zero-fills stacked gradient buffers, which an unrolled one
  does not. On GPU/TPU a rolled scan keeps compile time flat in depth (a 40-block encoder compiles
  once, not 40 times), which is what large runs need. `platform`: where the step is compiled
  (default: JAX's default backend; aot.py plans for accelerators on fake CPU devices, and says
  so).
  """
  if scan_unroll:
    return int(scan_unroll)
  if platform is None:
    platform = jax.default_backend()
  return FULL_UNROLL if platform == "cpu" else 1


class VideoMAE:
  """Static description of the model (hashable config values) plus pure apply functions."""

  def __init__(self, config):
    m, d = config.model, config.data
    self.patch_size = tuple(m.patch_size)
    self.video_shape = (d.num_frames, d.image_size, d.image_size, 3)
    self.grid = (d.num_frames // self.patch_size[0], d.image_size // self.patch_size[1],
                 d.image_size // self.patch_size[2])
    self.num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
    self.patch_dim = self.patch_size[0] * self.patch_size[1] * self.patch_size[2] * 3
    self.width = m.width
    self.encoder_depth = plan.encoder_depth(config)
    self.remat_policy = m.remat_policy
    self.unroll = resolve_scan_unroll(m.scan_unroll)
    self.decoder_unroll = m.decoder.scan_unroll
    self.dtype = vit.DTYPES[m.dtype]
    self.block = dict(width=m.width, mlp_dim=m.mlp_dim, num_heads=m.num_heads, posemb=m.posemb,
                      rope_base=float(m.rope_base), rope_fractions=tuple(m.rope_fractions),
                      rope_placement=m.rope_placement, attention=m.attention,
                      attention_impl=m.attention_impl, layer_norm_eps=m.layer_norm_eps,
                      gelu_approximate=bool(m.gelu_approximate), dtype=self.dtype)
    # Input normalisation; None when it is the identity (no op is added to the graph then).
    mean, std = tuple(map(float, m.input_mean)), tuple(map(float, m.input_std))
    self.input_norm = None if (mean, std) == ((0.0,) * 3, (1.0,) * 3) else (mean, std)
    self.coords = vit.token_grid(self.grid)
    # Blockwise SSL: regime ("" when off) and cumulative segment ends b_1 < ... < b_n.
    self.blockwise = config.blockwise.regime if plan.blockwise_enabled(config) else ""
    self.boundaries = plan.segments.boundaries(config) if self.blockwise else ()
    self.num_latent_heads = plan.num_latent_heads(config)
    dec = m.decoder
    if dec.type == "light":
      self.decoder = decoders.LightDecoder(dec.width, dec.depth, dec.num_heads, dec.mlp_dim,
                                           self.grid, self.block, self.remat_policy,
                                           self.decoder_unroll)
      self.decoder_width = dec.width
    else:
      self.decoder = decoders.QueryDecoder(dec.depth, self.grid, self.block, self.remat_policy,
                                           self.decoder_unroll)
      self.decoder_width = m.width
    self.vjepa = plan.vjepa_enabled(config)
    if self.vjepa:
      vp = config.vjepa.predictor
      self.predictor = predictor.Predictor(vp.width, vp.depth, vp.num_heads, vp.mlp_dim, m.width,
                                           self.grid, self.block, self.remat_policy, self.unroll)
    self.embed_module = vit.TubeletEmbed(m.width, self.patch_size, m.posemb, self.dtype)
    # Optional LayerNorm on the full encoder's output ("encoder_norm" parameters).
    self.final_norm = bool(m.final_norm)
    boxed = vit._param_init  # pylint: disable=protected-access
    self.norm_module = nn.LayerNorm(epsilon=m.layer_norm_eps, dtype=self.dtype,
                                    scale_init=boxed(nn.initializers.ones, ("embed",)),
                                    bias_init=boxed(nn.initializers.zeros, ("embed",)))
    self.pixel_head = decoders.PatchHead(self.patch_dim, 1, self.dtype)
    self.latent_head = decoders.PatchHead(m.width, self.num_latent_heads, self.dtype)

  def stack(self, num_layers: int, remat: bool) -> vit.BlockStack:
    return vit.BlockStack(num_layers, self.block, self.remat_policy if remat else "none",
                          self.unroll)

  # --- parameters ------------------------------------------------------------------------------
  def init(self, rng):
    """Boxed (logically partitioned) parameters of the whole model; use under jax.eval_shape/jit."""
    keys = jax.random.split(rng, 5)
    video = jnp.zeros((1, *self.video_shape), jnp.float32)
    ids = jnp.arange(self.num_tokens, dtype=jnp.int32)[None]
    enc_ids, query_ids = ids[:, :1], ids[:, 1:2]
    tokens = jnp.zeros((1, 1, self.width), self.dtype)
    positions = jnp.asarray(self.coords)[enc_ids]
    feats = jnp.zeros((1, 1, self.decoder_width), self.dtype)
    if self.blockwise:
      return self._init_blockwise(rng, video, tokens, positions, enc_ids, query_ids, feats)
    if self.vjepa:  # (model.final_norm is refused with V-JEPA by config validation)
      return {
          "embed": self.embed_module.init(keys[0], video)["params"],
          "encoder": self.stack(self.encoder_depth, remat=False).init(keys[1], tokens,
                                                                       positions)["params"],
          "predictor": self.predictor.init(keys[2], tokens, enc_ids, query_ids)["params"],
      }
    extra = {}
    if self.final_norm:  # its own key, so the other groups' initial values do not depend on it
      extra["encoder_norm"] = self.norm_module.init(jax.random.fold_in(rng, 5), tokens)["params"]
    return {**extra,
        "embed": self.embed_module.init(keys[0], video)["params"],
        "encoder": self.stack(self.encoder_depth, remat=False).init(keys[1], tokens,
                                                                     positions)["params"],
        "decoder": self.decoder.init(keys[2], tokens, enc_ids, query_ids)["params"],
        "pixel_head": self.pixel_head.init(keys[3], feats)["params"],
        "latent_head": self.latent_head.init(keys[4], feats)["params"],
    }

  def _init_blockwise(self, rng, video, tokens, positions, enc_ids, query_ids, feats):
    """Embedding and encoder as in plain MAE, then one decoder and one pixel head per segment."""
    names = [plan.segment_name(j) for j in range(1, len(self.boundaries) + 1)]
    embed_key, encoder_key, *keys = jax.random.split(rng, 2 + 2 * len(names))
    return {
        "embed": self.embed_module.init(embed_key, video)["params"],
        "encoder": self.stack(self.encoder_depth, remat=False).init(encoder_key, tokens,
                                                                     positions)["params"],
        plan.DECODERS: {
            name: self.decoder.init(keys[2 * i], tokens, enc_ids, query_ids)["params"]
            for i, name in enumerate(names)},
        plan.HEADS: {name: self.pixel_head.init(keys[2 * i + 1], feats)["params"]
                          for i, name in enumerate(names)},
    }

  # --- forward pieces (pure functions of parameter dicts) ----------------------------------------
  def embed(self, params, video, ids=None):
    """uint8 or float video (B, T, H, W, 3) -> tokens (B, N, D) with absolute position code;
    with token ids (B, S), only those tokens: (B, S, D), equal to the gather of the full result.

    uint8 is scaled to [0, 1] (float input is taken as already scaled), then normalised by
    config.model.input_mean / input_std."""
    if video.dtype == jnp.uint8:
      video = video.astype(jnp.float32) / 255.0
    if self.input_norm is not None:
      mean, std = self.input_norm
      video = (video.astype(jnp.float32) - jnp.asarray(mean)) / jnp.asarray(std)
    return self.embed_module.apply({"params": params}, video.astype(self.dtype), ids)

  def positions(self, ids):
    """(B, S) token ids -> (B, S, 3) grid coordinates (for RoPE)."""
    return jnp.asarray(self.coords)[ids]

  def run_stack(self, stack_params, x, ids, *, remat: bool, return_all: bool = False):
    """Apply a stacked BlockStack parameter tree (any number of blocks, 0 = identity)."""
    n = stack_depth(stack_params)
    if n == 0:
      return (x, x[None, :0]) if return_all else x
    return self.stack(n, remat).apply({"params": stack_params}, x, self.positions(ids),
                                      return_all=return_all)

  def encoder_output(self, norm_params, x):
    """The final LayerNorm (config.model.final_norm) on the last block's output; identity when
    the model has none (norm_params None)."""
    return x if norm_params is None else self.norm_module.apply({"params": norm_params}, x)

  def decode(self, params, enc_tokens, enc_ids, query_ids):
    return self.decoder.apply({"params": params}, enc_tokens, enc_ids, query_ids)

  def predict_features(self, params, context, context_ids, target_ids):
    """V-JEPA predictor: encoder-width features (B, M, D) at the target positions."""
    return self.predictor.apply({"params": params}, context, context_ids, target_ids)

  def predict_pixels(self, params, feats):
    return self.pixel_head.apply({"params": params}, feats)[:, :, 0]

  def predict_latents(self, params, feats):
    return self.latent_head.apply({"params": params}, feats)

  def block_outputs(self, embed_params, stacks, video):
    """Every encoder block's output on the full clip (no masking), for evaluation.

    `stacks` are stacked block parameter trees applied in order (e.g. frozen then trainable).
    Returns (encoder_depth + 1, B, N, D): index 0 is the embedding, index j the output of block j.
    """
    x = self.embed(embed_params, video)
    ids = jnp.broadcast_to(jnp.arange(self.num_tokens, dtype=jnp.int32), x.shape[:2])
    outs = [x[None]]
    for p in stacks:
      if stack_depth(p):
        x, ys = self.run_stack(p, x, ids, remat=False, return_all=True)
        outs.append(ys)
    return jnp.concatenate(outs, axis=0)


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(nn.unbox(tree)))
