"""Analytic FLOP model of one training step (the MFU numerator; peaks and MFU: hardware.py).

Why analytic: the encoder is a scanned stack, and XLA's `cost_analysis()` counts a rolled
`lax.scan` body once. An XLA count of the real step therefore
under-reports by roughly the depth. Counting by hand, as maxtext does, is exact for what we model
and costs nothing at run time.

What is counted (see `step_flops` for the per-term rules):
- Matrix multiplications only, at 2*m*k*n FLOPs each (one multiply plus one add per MAC), which is
  also how XLA's HloCostAnalysis counts a dot. LayerNorm, GELU, softmax, RoPE rotations, bias adds,
  residual adds and the loss are OMITTED: together they are well under 1% of a ViT block at the
  widths we train, and MFU is conventionally quoted on matmul FLOPs (PaLM appendix B, maxtext).
- Attention cost does not depend on the number of heads: the H heads of size D/H together cost
  2*S*S*D for the scores and 2*S*S*D for the weighted values.
- Backward of a trainable matmul = 2x its forward: one matmul for the input gradient and one for
  the weight gradient. So a trainable computation costs 3x forward, a frozen one 1x.
- Where a matmul's input carries no gradient, JAX's autodiff does not form the input gradient,
  and we do not count it either (checked against XLA in tests/test_flops.py):
    * the patch embedding (its input is pixels): 2x forward when trainable;
    * the QKV projection of the first trainable encoder block when blocks 1..k are frozen (its
      input is the stop-gradient output of block k): 2x forward for that one matmul;
    * the light decoder's input projection when every encoder block is frozen.
  The real step's block stacks (flax nn.scan) form the input gradient of their first block even
  when its input is a stop-gradient (measured on the unrolled step: one QKV input gradient, about
  1.5% of a step at test size, tests/test_flops_model.py). That is wasted work, not model FLOPs:
  like remat recompute it is left out of the MFU numerator (XLA's count includes it).
- Remat recompute is reported separately (`remat_recompute`); MFU excludes it, hardware FLOPs
  include it.
- Per global step: gradient accumulation (config.grad_accum_steps) runs the same matmuls on
  micro-batches that add up to batch_size clips, so it changes neither count (nor clips/s).
- Blockwise SSL (config.blockwise.enabled, layerlock_jax/methods/blockwise.py) has its own rules: every
  segment that runs has its own light decoder and pixel head, and the sequential regime's idle
  suffix is not run at all (`_blockwise_step_flops`).
"""
from __future__ import annotations

from typing import Any

from layerlock_jax import plan

# Remat policies (config.model.remat_policy, plan.options.REMAT_POLICIES) differ in which part of
# a block's forward matmuls the backward pass recomputes. "dots_with_no_batch_dims_saveable" keeps
# the dense-layer outputs but not the attention einsums, whose (batch, heads) dims are dot_general
# batch dims, so those two einsums are recomputed.


def _matmul(m: int, k: int, n: int) -> int:
  """FLOPs of an (m, k) @ (k, n) product: one multiply and one add per multiply-accumulate."""
  return 2 * m * k * n


def _attention_core_flops(seq_len: int, width: int, batch: int) -> int:
  """Scores q.k^T (S x S x D) plus the weighted sum of values (S x S x D), all heads together."""
  return 2 * batch * _matmul(seq_len, width, seq_len)


def _qkv_flops(seq_len: int, width: int, batch: int) -> int:
  return _matmul(batch * seq_len, width, 3 * width)


def block_flops(seq_len: int, width: int, mlp_dim: int, *, batch: int) -> int:
  """Forward matmul FLOPs of one pre-LN transformer block on `batch` sequences of `seq_len`.

  QKV projection D->3D, attention scores and values, output projection D->D, MLP D->F->D:
  per token 2*(3D^2 + D^2 + 2DF) plus 4*S*D for attention, i.e. 8SD^2 + 4S^2D + 4SDF per sequence.
  """
  tokens = batch * seq_len
  return (_qkv_flops(seq_len, width, batch)
          + _attention_core_flops(seq_len, width, batch)
          + _matmul(tokens, width, width)
          + 2 * _matmul(tokens, width, mlp_dim))


def step_flops(config: Any, spec: plan.StageSpec | None = None, *,
               batch_size: int | None = None) -> dict[str, int]:
  """FLOPs of one training step on the global batch, split by where they are spent.

  Args:
    config: a config following layerlock_jax/config/defaults.py.
    spec: the stage (plan.stage_spec; default: the first stage, nothing frozen). What it says is
      used as is: spec.frozen_layers = k, the number of frozen encoder blocks (the patch embedding
      freezes with them); spec.method; spec.latent (a latent target: LayerLock's from the frozen
      prefix when k >= 1, the naive baseline's when k = 0) and spec.pixel_loss.
    batch_size: clips per step; defaults to config.batch_size (the global batch).

  Returns a dict of Python ints:
    patch_embed        P->D on the N_vis visible tokens (the student embeds only those), or on
                       all N tokens where a latent target needs the whole clip embedded (a
                       LayerLock latent stage, the naive-latent baseline); 2x forward when
                       trainable (no pixel gradient), 1x when frozen (k >= 1).
    encoder_frozen     blocks 1..k on the N_vis visible tokens, forward only.
    encoder_trainable  blocks k+1..encoder_depth on N_vis tokens, 3x forward, less the QKV input
                       gradient of the first one when k >= 1.
    decoder            light: D->Dd projection on N_vis tokens + decoder blocks (width Dd) on
                       N_vis + Q tokens; query: the last decoder.depth backbone blocks (width D)
                       on N_vis + Q tokens. 3x forward.
    heads              pixel head Ddec->P on Q tokens (unless a latent stage drops the pixel
                       loss); latent head(s) Ddec->D on Q_lat tokens (k of them with
                       multi_target); the naive-latent head Ddec->D on Q tokens. 3x forward.
    target_forward     forward only, on the full clip (N tokens): the k frozen blocks for a
                       LayerLock latent stage; the first `layer` blocks for the naive-latent
                       baseline. No second patch embedding: such a stage embeds all N tokens
                       before dropping the masked ones, and the targets reuse those tokens.
    remat_recompute    forward matmuls the backward pass re-runs under config.model.remat_policy,
                       for every trained block stack: the trainable encoder blocks and the decoder
                       blocks (both decoders build their stacks with the model's remat policy).
                       The frozen prefix runs forward only and is never rematerialised.
    model_flops        everything except remat_recompute: the MFU numerator.
    hardware_flops     model_flops + remat_recompute.
  For blockwise stages the same keys are filled by `_blockwise_step_flops`, where
  `spec.frozen_layers` identifies the stage (0 for concurrent and e2e; b_{j-1} for sequential segment j,
  as in the freeze table and StageSpec.frozen_layers).
  """
  m, dec = config.model, config.model.decoder
  batch = config.batch_size if batch_size is None else batch_size
  geo = plan.token_geometry(config)
  n, p = geo["num_tokens"], geo["patch_dim"]
  n_vis, q = geo["num_visible"], geo["num_queries"]
  d, f = m.width, m.mlp_dim
  enc_depth = plan.encoder_depth(config)
  if spec is None:
    spec = plan.stage_spec(config, 0, plan.PIXELS)
  k = spec.frozen_layers
  if not 0 <= k <= enc_depth:
    raise ValueError(f"frozen_layers={k} outside [0, encoder depth {enc_depth}]")
  if spec.method == "blockwise":
    return _blockwise_step_flops(config, k, batch)
  if spec.method == "vjepa":
    return _vjepa_step_flops(config, k, batch)
  n_train = enc_depth - k

  # --- student encoder -------------------------------------------------------------------------
  ll = config.layerlock
  latent_stage = spec.latent and k >= 1      # LayerLock: targets from the frozen prefix
  naive_latent = spec.latent and k == 0      # the naive baseline: targets from its own blocks
  # A latent target is computed on every token of the clip, so only then is the whole clip embedded.
  embedded = n if spec.latent else n_vis
  embed_fwd = _matmul(batch * embedded, p, d)
  patch_embed = embed_fwd if k else 2 * embed_fwd
  enc_block = block_flops(n_vis, d, f, batch=batch)
  encoder_frozen = k * enc_block
  encoder_trainable = 3 * n_train * enc_block
  if k and n_train:
    # Block k+1 reads the stop-gradient output of block k: no input gradient for its QKV dense.
    encoder_trainable -= _qkv_flops(n_vis, d, batch)

  # --- decoder ---------------------------------------------------------------------------------
  s_dec = n_vis + q
  if dec.type == "light":
    dec_width = dec.width
    proj = _matmul(batch * n_vis, d, dec_width)
    blocks = dec.depth * block_flops(s_dec, dec_width, dec.mlp_dim, batch=batch)
    # With every encoder block frozen the projection's input is a stop-gradient: 2x, not 3x.
    decoder = 3 * blocks + (2 if n_train == 0 else 3) * proj
    dec_mlp = dec.mlp_dim
  else:
    # The 4DS decoder: its input mixes encoder tokens with trainable queries, so the first QKV
    # input gradient is always needed.
    dec_width = d
    decoder = 3 * dec.depth * block_flops(s_dec, d, f, batch=batch)
    dec_mlp = f

  # --- heads and targets -----------------------------------------------------------------------
  head_fwd = 0
  target_forward = 0
  if spec.pixel_loss:
    head_fwd += _matmul(batch * q, dec_width, p)
  if latent_stage:
    q_lat = plan.latent_queries(geo["num_masked"], ll.latent_patch_fraction)
    num_latent_heads = k if ll.multi_target else 1
    head_fwd += num_latent_heads * _matmul(batch * q_lat, dec_width, d)
    target_forward += k * block_flops(n, d, f, batch=batch)
  if naive_latent:
    layer = plan.naive_latent_layer(config)
    head_fwd += _matmul(batch * q, dec_width, d)
    target_forward += layer * block_flops(n, d, f, batch=batch)
  heads = 3 * head_fwd

  remat_recompute = _remat_recompute(config, batch, n_train, n_vis, s_dec, dec_width, dec_mlp)
  return _totals(patch_embed, encoder_trainable, encoder_frozen, decoder, heads, target_forward,
                 remat_recompute)


def _remat_recompute(config: Any, batch: int, n_train: int, n_vis: int, s_dec: int,
                     dec_width: int, dec_mlp: int, num_decoders: int = 1) -> int:
  """Forward matmuls re-run by the backward pass (config.model.remat_policy) in the n_train
  trainable encoder blocks and the blocks of `num_decoders` decoders; never a frozen prefix."""
  m, dec = config.model, config.model.decoder
  policy = m.remat_policy
  plan.fields.choice(config, "model.remat_policy", plan.options.REMAT_POLICIES)
  if policy == "nothing_saveable":
    return (n_train * block_flops(n_vis, m.width, m.mlp_dim, batch=batch)
            + num_decoders * dec.depth * block_flops(s_dec, dec_width, dec_mlp, batch=batch))
  if policy == "dots_with_no_batch_dims_saveable":
    return (n_train * _attention_core_flops(n_vis, m.width, batch)
            + num_decoders * dec.depth * _attention_core_flops(s_dec, dec_width, batch))
  return 0  # none, everything_saveable, dots_saveable: every matmul output is kept.


def _totals(patch_embed: int, encoder_trainable: int, encoder_frozen: int, decoder: int,
            heads: int, target_forward: int, remat_recompute: int) -> dict[str, int]:
  model_flops = (patch_embed + encoder_frozen + encoder_trainable + decoder + heads
                 + target_forward)
  return {
      "patch_embed": patch_embed,
      "encoder_trainable": encoder_trainable,
      "encoder_frozen": encoder_frozen,
      "decoder": decoder,
      "heads": heads,
      "target_forward": target_forward,
      "remat_recompute": remat_recompute,
      "model_flops": model_flops,
      "hardware_flops": model_flops + remat_recompute,
  }


def _vjepa_step_flops(config: Any, k: int, batch: int) -> dict[str, int]:
  """`step_flops` of V-JEPA (layerlock_jax/methods/vjepa.py), stage k.

  The student encoder is counted as for MAE, on the N_ctx context tokens. The predictor (reported
  under "decoder"; "heads" is 0) projects the context tokens D->Dp, runs its blocks on
  N_ctx + M tokens and projects the M outputs Dp->D, all trained (3x forward). The teacher
  ("target_forward", forward only) embeds the full clip and runs its blocks up to the target
  (all of them; with LayerLock block max(1, k)) on all N tokens. Without EMA the target is the
  student's own stack on the full clip and is trained through (3x forward; the embedding is shared
  with the student).
  """
  m, vp = config.model, config.vjepa.predictor
  geo = plan.token_geometry(config)
  n, p, n_ctx, q = geo["num_tokens"], geo["patch_dim"], geo["num_visible"], geo["num_queries"]
  d, f = m.width, m.mlp_dim
  enc_depth = plan.encoder_depth(config)
  n_train = enc_depth - k
  embed_fwd = _matmul(batch * n, p, d)
  patch_embed = embed_fwd if k else 2 * embed_fwd
  enc_block = block_flops(n_ctx, d, f, batch=batch)
  encoder_frozen = k * enc_block
  encoder_trainable = 3 * n_train * enc_block
  if k and n_train:
    encoder_trainable -= _qkv_flops(n_ctx, d, batch)
  s_pred = n_ctx + q
  predictor = 3 * (_matmul(batch * n_ctx, d, vp.width)
                   + vp.depth * block_flops(s_pred, vp.width, vp.mlp_dim, batch=batch)
                   + _matmul(batch * q, vp.width, d))
  layer = max(1, k) if config.layerlock.enabled else enc_depth
  if config.vjepa.ema:
    target_forward = embed_fwd + layer * block_flops(n, d, f, batch=batch)
  else:
    # Blocks up to `layer` on the full clip; the frozen ones (k >= 1) forward only.
    frozen_part = min(k, layer)
    target_forward = (frozen_part + 3 * (layer - frozen_part)) * block_flops(n, d, f, batch=batch)
  policy = m.remat_policy
  remat = 0
  if policy == "nothing_saveable":
    remat = (n_train * enc_block
             + vp.depth * block_flops(s_pred, vp.width, vp.mlp_dim, batch=batch))
  elif policy == "dots_with_no_batch_dims_saveable":
    remat = (n_train * _attention_core_flops(n_ctx, d, batch)
             + vp.depth * _attention_core_flops(s_pred, vp.width, batch))
  return _totals(patch_embed, encoder_trainable, encoder_frozen, predictor, 0, target_forward,
                 remat)


def _blockwise_step_flops(config: Any, k: int, batch: int) -> dict[str, int]:
  """`step_flops` of blockwise SSL (layerlock_jax/methods/blockwise.py `local_losses`), stage given by k.

  The encoder's L layers are cut into segments at b_1 < ... < b_n = L; every segment that runs
  has its own light decoder (D->Dd projection on N_vis tokens, decoder blocks on N_vis + Q
  tokens) and pixel head (Dd->P on Q tokens), trained (3x). The embedding runs on the N_vis visible
  tokens only. No latent targets (blockwise excludes
  LayerLock and naive latent), so target_forward is 0. Per regime:
    concurrent  embedding 2x, all L encoder layers 3x less the QKV input gradient of the first
                layer of segments 2..n (each reads a stop-gradient; the module docstring says why
                XLA still counts it), n decoders 3x, n heads 3x.
    e2e         embedding 2x, all L encoder layers 3x (the last segment's loss reaches all of them),
                n decoder stacks and heads 3x; the input projection of decoders 1..n-1 reads
                stop_gradient(x_j), so it is 2x (decoder n's is 3x).
    sequential  stage of segment j, k = b_{j-1}: embedding 2x if j = 1 else 1x (frozen with
                segment 1); layers 1..k forward only; layers k+1..b_j 3x, less the first QKV input
                gradient when k >= 1; segment j's decoder and head only, 3x; the idle layers
                b_j+1..L and the other segments' decoders are not run (0).
  """
  m, dec = config.model, config.model.decoder
  regime = plan.fields.choice(config, "blockwise.regime", plan.options.BLOCKWISE_REGIMES)
  if dec.type != "light":
    raise ValueError(f"blockwise needs the light decoder, got {dec.type!r}")
  geo = plan.token_geometry(config)
  n_vis, q, p = geo["num_visible"], geo["num_queries"], geo["patch_dim"]
  s_dec = n_vis + q
  d, f = m.width, m.mlp_dim
  depth = plan.encoder_depth(config)
  bounds = plan.segments.boundaries(config, depth)
  num_segments = len(bounds)

  embed_fwd = _matmul(batch * n_vis, p, d)
  enc_block = block_flops(n_vis, d, f, batch=batch)
  qkv = _qkv_flops(n_vis, d, batch)
  proj = _matmul(batch * n_vis, d, dec.width)
  dec_blocks = dec.depth * block_flops(s_dec, dec.width, dec.mlp_dim, batch=batch)
  head = _matmul(batch * q, dec.width, p)

  if regime == "sequential":
    starts = (0,) + bounds[:-1]
    if k not in starts:
      raise ValueError(f"frozen_layers={k} is not a segment start {starts} of a sequential "
                       "blockwise run")
    n_train = bounds[starts.index(k)] - k
    num_decoders = 1
    patch_embed = embed_fwd if k else 2 * embed_fwd
    encoder_frozen = k * enc_block
    encoder_trainable = 3 * n_train * enc_block - (qkv if k else 0)
    decoder = 3 * (proj + dec_blocks)
  else:
    if k:
      raise ValueError(f"frozen_layers={k}: the {regime} blockwise regime freezes nothing")
    n_train, num_decoders = depth, num_segments
    patch_embed = 2 * embed_fwd
    encoder_frozen = 0
    encoder_trainable = 3 * depth * enc_block
    if regime == "concurrent":
      encoder_trainable -= (num_segments - 1) * qkv
      decoder = num_segments * 3 * (proj + dec_blocks)
    else:  # e2e
      decoder = num_segments * 3 * dec_blocks + (3 + 2 * (num_segments - 1)) * proj
  heads = 3 * num_decoders * head
  remat_recompute = _remat_recompute(config, batch, n_train, n_vis, s_dec, dec.width,
                                     dec.mlp_dim, num_decoders)
  return _totals(patch_embed, encoder_trainable, encoder_frozen, decoder, heads, 0,
                 remat_recompute)
