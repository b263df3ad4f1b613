"""Blockwise self-supervised learning (arXiv 2601.09040): the per-group local losses.

The encoder's L layers are cut into n contiguous groups of blocks at cumulative `boundaries`
b_1 < ... < b_n = L (b_0 = 0; planned in plan/segments.py); group j is layers b_{j-1}+1 .. b_j.
Every group owns a light decoder and a per-patch pixel head (parameter trees "block_decoders" /
"block_heads", one "block_j" entry each) and is trained by its own masked-pixel reconstruction
loss. The patch embedding belongs to group 1 (it is group 1's input layer; detaching it would
leave it untrained).

Regimes (config.blockwise.regime), all on ONE mask per clip and step shared by every group:

  concurrent  every group each step; the loss is the sum of the local losses, and a stop-gradient
              at every group input (j >= 2) keeps each loss inside its group, so the one backward
              pass never crosses a group boundary ("detached_forward" in the paper's code [I]).
  sequential  one group at a time: group j trains alone for its step budget on the output of the
              frozen groups 1..j-1 (forward only, as LayerLock's frozen prefix), groups after it
              are idle (neither run nor updated). Stages come from plan.freeze_table, the
              trainable/frozen/idle split from state.partition (StageSpec.idle_layers).
  e2e         the end-to-end baseline ("e2e_attached"): no stop-gradient between groups, the
              encoder is trained by the LAST group's loss only; every other group's decoder reads
              stop_gradient(x_j), so its loss trains that decoder alone and only measures how well
              pixels decode from depth b_j.

Cost (bench/blockwise_bench.py, DeiT-Tiny at 16x128^2): concurrent and e2e run the same ops, so
their FLOPs, step time and memory agree to ~1%; the per-group decoders, each over all 2048
positions while the encoder sees 208, make either ~3.5x a plain MAE step. What concurrent could
save, holding one group's encoder activations instead of all, is small at 90% masking, and XLA
(seen on CPU) only realises it with unrolled layer scans.

The encoder stays the standard stacked "encoder" tree, so every tool that reads a plain MAE
checkpoint (VideoMAE.block_outputs, the probes, CKA) reads a blockwise one unchanged. The model
comes in as an argument: nothing below this module imports it.
"""
import jax
import jax.numpy as jnp

from layerlock_jax import masking
from layerlock_jax import objectives
from layerlock_jax import plan

def _layers(stack, lo: int, hi: int):
  """Layers lo..hi-1 of a stacked parameter tree (the gradient of a slice is zero outside it)."""
  return jax.tree.map(lambda a: a[lo:hi], stack)


def _mask_and_target(video, key, *, model, config):
  """The step's mask (one for every block) and the pixel targets at the masked positions.

  The mask key is derived exactly as in the plain MAE loss, so one block reproduces plain MAE.
  """
  mask_key, _ = masking.split(key)
  visible, masked = masking.sample_mask(mask_key, video.shape[0], model.grid,
                                        config.masking.ratio, config.masking.type)
  target = masking.gather_tokens(
      objectives.pixel_targets(video, model.patch_size, config.objective.pixel_norm), masked)
  return visible, masked, target


def local_losses(params, frozen, video, key, *, model, config, spec):
  """Sum of the block losses that train at this stage, per-block metrics, last block's tokens.

  Differentiated w.r.t. `params` only (see the module docstring for what each regime isolates).
  Returns (loss, {"block_j_loss": ...}, tokens of the last block run (B, S_visible, D)).
  """
  regime, bounds = spec.regime, (0,) + tuple(spec.boundaries)
  n = len(bounds) - 1
  visible, masked, target = _mask_and_target(video, key, model=model, config=config)

  embed = params["embed"] if "embed" in params else frozen["embed"]
  tokens = model.embed(embed, video)
  if spec.frozen_layers:  # sequential, j >= 2: the embedding froze with block 1
    tokens = jax.lax.stop_gradient(tokens)
  x = masking.gather_tokens(tokens, visible)

  if regime == "sequential":
    # Finished blocks: forward only, no remat (nothing is saved for a backward that never comes).
    if spec.frozen_layers:
      x = jax.lax.stop_gradient(model.run_stack(frozen["encoder"], x, visible, remat=False))
    blocks = [(spec.active_block, params["encoder"])]
  else:
    blocks = [(j, _layers(params["encoder"], bounds[j - 1], bounds[j])) for j in range(1, n + 1)]

  loss = jnp.zeros((), jnp.float32)
  metrics = {}
  for j, stack in blocks:
    if regime == "concurrent" and j > 1:
      x = jax.lax.stop_gradient(x)  # the block boundary: block j-1 gets nothing from loss j
    x = model.run_stack(stack, x, visible, remat=True)
    # e2e: only the last block's loss reaches the encoder; the others only train their decoders.
    readout = jax.lax.stop_gradient(x) if regime == "e2e" and j < n else x
    name = plan.block_name(j)
    feats = model.decode(params[plan.DECODERS][name], readout, visible, masked)
    block_loss = objectives.mse(model.predict_pixels(params[plan.HEADS][name], feats), target)
    metrics[f"{name}_loss"] = block_loss
    loss = loss + block_loss
  return loss, metrics, x

