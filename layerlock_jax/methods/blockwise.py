"""Blockwise self-supervised learning (arXiv 2601.09040): the per-segment local losses.

The encoder's L blocks (layers) are cut into n contiguous *segments* at cumulative `boundaries`
b_1 < ... < b_n = L (b_0 = 0; planned in plan/segments.py); segment j is blocks b_{j-1}+1 .. b_j.
Every segment owns a light decoder and a per-patch pixel head (parameter trees
"blockwise_decoders" / "blockwise_heads", one "segment_j" entry each) and is trained by its own
masked-pixel reconstruction loss, logged as "segment_j_loss". The patch embedding belongs to
segment 1 (it is segment 1's input layer; detaching it would leave it untrained).

Regimes (config.blockwise.regime), all on ONE mask per clip and step shared by every segment:

  concurrent  every segment each step; the loss is the sum of the local losses, and a
              stop-gradient at every segment input (j >= 2) keeps each loss inside its segment,
              so the one backward pass never crosses a segment boundary ("detached_forward" in
              the paper's code [I]).
  sequential  one segment at a time: segment j trains alone for its step budget on the output of
              the frozen segments 1..j-1 (forward only, as LayerLock's frozen prefix), segments
              after it are idle (neither run nor updated). Stages come from plan.freeze_table, the
              trainable/frozen/idle split from state.partition (StageSpec.idle_layers).
  e2e         the end-to-end baseline ("e2e_attached"): no stop-gradient between segments, the
              encoder is trained by the LAST segment's loss only; every other segment's decoder
              reads stop_gradient(x_j), so its loss trains that decoder alone and only measures
              how well pixels decode from depth b_j.

Cost (bench/blockwise_bench.py, DeiT-Tiny at 16x128^2): concurrent and e2e run the same ops, so
their FLOPs, step time and memory agree to ~1%; the per-segment decoders, each over all 2048
positions while the encoder sees 208, make either ~3.5x a plain MAE step. What concurrent could
save, holding one segment's encoder activations instead of all, is small at 90% masking, and XLA
(seen on CPU) only realises it with unrolled layer scans.

The encoder stays the standard stacked "encoder" tree, so every tool that reads a plain MAE
checkpoint (VideoMAE.block_outputs, the probes, CKA) reads a blockwise one unchanged. The model
comes in as an argument: nothing below this module imports it.
"""
import jax
import jax.numpy as jnp

from layerlock_jax import masking
from layerlock_jax.methods import objectives
from layerlock_jax import plan
from layerlock_jax import state as state_lib

def _layers(stack, lo: int, hi: int):
  """Layers lo..hi-1 of a stacked parameter tree (the gradient of a slice is zero outside it)."""
  return jax.tree.map(lambda a: a[lo:hi], stack)


def _mask_and_target(video, key, *, model, config):
  """The step's mask (one for every segment) and the pixel targets at the masked positions.

  The mask key is derived exactly as in the plain MAE loss, so one segment reproduces plain MAE.
  """
  mask_key, _ = masking.split(key)
  visible, masked = masking.sample_mask(mask_key, video.shape[0], model.grid,
                                        config.masking.ratio, config.masking.type)
  target = objectives.pixel_targets(video, model.patch_size, config.objective.pixel_norm,
                                      masked)
  return visible, masked, target


def local_losses(params, frozen, video, key, *, model, config, spec):
  """Sum of the segment losses that train at this stage, per-segment metrics, last tokens.

  Differentiated w.r.t. `params` only (see the module docstring for what each regime isolates).
  Returns (loss, {"segment_j_loss": ...}, tokens of the last segment run (B, S_visible, D)).
  """
  regime, bounds = spec.regime, (0,) + tuple(spec.boundaries)
  n = len(bounds) - 1
  visible, masked, target = _mask_and_target(video, key, model=model, config=config)

  # only the visible tokens are ever used
  x = model.embed(state_lib.group(params, frozen, "embed"), video, visible)
  if spec.frozen_layers:  # sequential, j >= 2: the embedding froze with segment 1
    x = jax.lax.stop_gradient(x)

  if regime == "sequential":
    # Finished segments: forward only, no remat (nothing is saved for a backward that never comes).
    if spec.frozen_layers:
      x = jax.lax.stop_gradient(model.run_stack(frozen["encoder"], x, visible, remat=False))
    segments = [(spec.active_segment, params["encoder"])]
  else:
    segments = [(j, _layers(params["encoder"], bounds[j - 1], bounds[j]))
                for j in range(1, n + 1)]

  loss = jnp.zeros((), jnp.float32)
  metrics = {}
  for j, stack in segments:
    if regime == "concurrent" and j > 1:
      x = jax.lax.stop_gradient(x)  # the segment boundary: segment j-1 gets nothing from loss j
    x = model.run_stack(stack, x, visible, remat=True)
    # e2e: only the last segment's loss reaches the encoder; the others only train their decoders.
    readout = jax.lax.stop_gradient(x) if regime == "e2e" and j < n else x
    name = plan.segment_name(j)
    feats = model.decode(params[plan.DECODERS][name], readout, visible, masked)
    segment_loss = objectives.mse(model.predict_pixels(params[plan.HEADS][name], feats), target)
    metrics[f"{name}_loss"] = segment_loss
    loss = loss + segment_loss
  return loss, metrics, x


def loss_fn(params, frozen, teacher, video, key, step, *, model, config, spec,
            latent_weight_fn=None):
  """The train step's loss of a blockwise stage (spec.method == "blockwise"): the sum of the
  segments' local losses (`local_losses`), with the feature spread of the last segment's output.
  `key`: per-clip keys (B,)."""
  del teacher, step, latent_weight_fn
  loss, metrics, x = local_losses(params, frozen, video, key, model=model, config=config,
                                  spec=spec)
  metrics["feature_spread"] = objectives.feature_spread(x)
  return loss, metrics
