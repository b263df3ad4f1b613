"""The training step: one pure function `(state, video) -> (state, metrics)` per stage.

The stage (how many blocks are frozen, which losses are on) is static: each stage is its own
compiled program, built by `make_train_step`. Stages are rare (tens per run), steps are not.
The step picks its method once, from the stage spec (StageSpec.method), and calls that method's
`loss_fn` (layerlock_jax/methods/): "mae" (methods/layerlock.py), "blockwise", "vjepa".

Forward of one step (k frozen blocks):
  embed(video)               stop-gradient when k >= 1 (the embedding froze with block 1)
  -> keep visible tokens     in-graph mask, one key per clip: fold_in(fold_in(seed, step), row)
  -> frozen blocks 1..k      forward only, no remat, stop-gradient at the boundary
  -> trainable blocks k+1..  scanned + remat
  -> decoder at masked ids   -> pixel head (MSE vs normalised tubelets)
                             -> latent head (MSE vs block-k output of the frozen prefix on the FULL
                                clip, gathered at masked ids; LayerLock) or vs the model's own
                                block-j output (naive latent baseline; collapses)

V-JEPA (config.vjepa.enabled) takes the same step with the latent-prediction loss of
layerlock_jax/methods/vjepa.py, and after the optimizer update moves the EMA teacher toward the student.

Blockwise SSL (spec.regime set) takes the same step with a different loss: the per-segment local
losses of layerlock_jax/methods/blockwise.py, logged as "segment_j_loss".

Gradient accumulation (config.grad_accum_steps = N) wraps the gradient function (`accumulate`): the
global batch is cut into N micro-batches that are scanned, gradients summed in float32, one
optimizer update. Each clip's randomness comes from its row in the global batch, so the masks, and
hence the losses and the update, are those of the unsplit batch up to float summation order.
"""
import functools

import jax
import jax.numpy as jnp
import optax

from layerlock_jax import guard
from layerlock_jax import masking
from layerlock_jax.methods import blockwise
from layerlock_jax.methods import layerlock
from layerlock_jax.methods import vjepa
from layerlock_jax import plan
from layerlock_jax.plan import StageSpec
from layerlock_jax.state import TrainState

# StageSpec.method -> the module whose `loss_fn(params, frozen, teacher, video, key, step, *,
# model, config, spec, latent_weight_fn)` computes the stage's loss and metrics.
METHODS = {"mae": layerlock, "blockwise": blockwise, "vjepa": vjepa}


# Below this final feature_spread a run is reported as collapsed (summary.json "collapsed", a
# warning): healthy encoders sit well above it (e.g. 0.4-0.5 for V-JEPA on camera-motion clips),
# a V-JEPA without its EMA teacher ends near 0.02.
COLLAPSE_SPREAD = 0.1


def looks_collapsed(metrics: dict) -> bool | None:
  """Whether a logged metrics row says collapsed (feature_spread < COLLAPSE_SPREAD); None when
  the row has no feature_spread."""
  spread = metrics.get("feature_spread")
  return None if spread is None else bool(spread < COLLAPSE_SPREAD)


def micro_batches(x, num_micro: int):
  """(B, ...) -> (num_micro, B / num_micro, ...), micro-batch i = rows i, i + N, i + 2N, ...

  Strided, not contiguous: the batch axis is split over devices in contiguous blocks, so each
  device's block holds B / (devices * N) rows of every micro-batch and the scan over micro-batches
  needs no data movement (the per-device batch must be a multiple of N; config_validation).
  """
  return jnp.moveaxis(x.reshape((x.shape[0] // num_micro, num_micro) + x.shape[1:]), 1, 0)


def accumulate(grad_fn, num_micro: int):
  """`grad_fn(params, *batch) -> ((loss, metrics), grads)` over the whole batch, computed as a
  `lax.scan` over `num_micro` micro-batches: only one micro-batch's activations are live at a time.

  Every `batch` argument has the batch axis first. Losses and gradients are batch means, so the
  mean over equal micro-batches is the full-batch value; they are summed in float32. Metrics that
  are not batch means (feature_spread) become the mean of their micro-batch values.
  """
  if num_micro == 1:
    return grad_fn

  def accumulated(params, *batch):
    micro = jax.tree.map(lambda x: micro_batches(x, num_micro), batch)
    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(grad_fn, params, *first)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32)),
                         shapes)

    def body(total, one):
      out = grad_fn(params, *one)
      return jax.tree.map(lambda t, o: t + o.astype(t.dtype), total, out), None

    total, _ = jax.lax.scan(body, zeros, micro)
    return jax.tree.map(lambda t: t / num_micro, total)

  return accumulated


def make_train_step(model, config, spec: StageSpec, tx: optax.GradientTransformation,
                    learning_rate_fn, latent_weight_fn=None):
  """The (unjitted) pure step function for one stage: `(state, video) -> (state, metrics)`.

  The random key of a step is fold_in(key(state.seed), state.step), and clip r of the global batch
  draws from fold_in(that, r). The seed is read from the state, not baked in, so runs differing
  only in their seed compile to the same program (one persistent-cache entry for a seed sweep).

  metrics["nonfinite"] is 1.0 when the loss or the gradient norm is NaN/inf (guard.py reads it).
  With config.skip_nonfinite_updates > 0 such a step leaves parameters and optimizer state as they
  were (the step counter still advances, so the next step draws new masks and data).
  """
  num_micro = int(config.get("grad_accum_steps", 1))
  skip_nonfinite = int(config.get("skip_nonfinite_updates", 0)) > 0

  method = METHODS[spec.method]  # picked once, from the stage spec
  loss_fn = functools.partial(method.loss_fn, model=model, config=config, spec=spec,
                              latent_weight_fn=latent_weight_fn)
  # The convergence trigger (methods/layerlock.py) reads the trainable blocks' norms at its checks.
  track_layer_norms = plan.convergence_trigger(config) and spec.method != "blockwise"

  def train_step(state: TrainState, video):
    key = jax.random.fold_in(jax.random.key(state.seed), state.step)
    if spec.method == "vjepa":
      # V-JEPA's multi-block masks come from one key per batch (not per clip), so its step runs
      # unsplit; config validation refuses grad_accum_steps > 1 with it.
      grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
      (loss, metrics), grads = grad_fn(state.params, state.frozen, state.teacher, video, key,
                                       state.step)
    else:
      def batch_loss(params, video, rows):
        return loss_fn(params, state.frozen, state.teacher, video, masking.clip_keys(key, rows),
                       state.step)

      rows = jnp.arange(video.shape[0], dtype=jnp.uint32)
      grad_fn = accumulate(jax.value_and_grad(batch_loss, has_aux=True), num_micro)
      (loss, metrics), grads = grad_fn(state.params, video, rows)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
      params, opt_state = guard.keep_if(finite, (params, opt_state),
                                        (state.params, state.opt_state))
    metrics.update(loss=loss, grad_norm=grad_norm, param_norm=optax.tree.norm(params),
                   lr=learning_rate_fn(state.step), nonfinite=1.0 - finite.astype(jnp.float32))
    if track_layer_norms:
      metrics[layerlock.LAYER_NORMS] = layerlock.encoder_layer_norms(params)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    if vjepa.keeps_teacher(config):  # after the update: the teacher follows the new student
      m = vjepa.momentum(config, state.step)
      new_state = new_state.replace(teacher=vjepa.ema_update(
          state.teacher, params, state.frozen, m, frozen_layers=spec.frozen_layers,
          copy_frozen=config.vjepa.frozen_teacher == "copy"))
      metrics["ema_momentum"] = m
    return new_state, metrics

  return train_step
