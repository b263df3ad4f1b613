"""The training step: one pure function `(state, video) -> (state, metrics)` per stage.

The stage (how many blocks are frozen, which losses are on) is static: each stage is its own
compiled program, built by `make_train_step`. Stages are rare (tens per run), steps are not.

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
layerlock_jax/vjepa.py, and after the optimizer update moves the EMA teacher toward the student.

Blockwise SSL (spec.regime set) takes the same step with a different loss: the per-segment local
losses of layerlock_jax/blockwise.py, logged as "segment_j_loss".

Gradient accumulation (config.grad_accum_steps = N) wraps the gradient function (`accumulate`): the
global batch is cut into N micro-batches that are scanned, gradients summed in float32, one
optimizer update. Each clip's randomness comes from its row in the global batch, so the masks, and
hence the losses and the update, are those of the unsplit batch up to float summation order.
"""
import jax
import jax.numpy as jnp
import optax

from layerlock_jax import blockwise
from layerlock_jax import guard
from layerlock_jax import masking
from layerlock_jax.models import video_mae
from layerlock_jax import objectives
from layerlock_jax import plan
from layerlock_jax.plan import StageSpec
from layerlock_jax import state as state_lib
from layerlock_jax.state import TrainState
from layerlock_jax import vjepa


def feature_spread(x):
  """Scale-free collapse indicator of tokens x (B, S, D): mean per-dim std over all tokens divided
  by the RMS of the features. ~1 for isotropic features, 0 when every token is the same vector."""
  flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  std = jnp.mean(jnp.std(flat, axis=0))
  return std / (jnp.sqrt(jnp.mean(jnp.square(flat))) + 1e-6)


# Below this final feature_spread a run is reported as collapsed (summary.json "collapsed", a
# warning): healthy encoders sit well above it (e.g. 0.4-0.5 for V-JEPA on camera-motion clips),
# a V-JEPA without its EMA teacher ends near 0.02.
COLLAPSE_SPREAD = 0.1


def looks_collapsed(metrics: dict) -> bool | None:
  """Whether a logged metrics row says collapsed (feature_spread < COLLAPSE_SPREAD); None when
  the row has no feature_spread."""
  spread = metrics.get("feature_spread")
  return None if spread is None else bool(spread < COLLAPSE_SPREAD)


def loss_fn(params, frozen, video, key, step, *, model: video_mae.VideoMAE, config,
            spec: StageSpec, latent_weight_fn=None):
  """Scalar loss and metrics; differentiated w.r.t. `params` only. `key`: per-clip keys (B,)."""
  if spec.regime:
    loss, metrics, x = blockwise.local_losses(params, frozen, video, key, model=model,
                                              config=config, spec=spec)
    metrics["feature_spread"] = feature_spread(x)
    return loss, metrics
  k = spec.frozen_layers
  batch = video.shape[0]
  mask_key, latent_key = masking.split(key)
  visible, masked = masking.sample_mask(mask_key, batch, model.grid, config.masking.ratio,
                                        config.masking.type)
  embed = state_lib.group(params, frozen, "embed")
  if spec.latent:  # the latent targets are computed on every token of the clip
    tokens = model.embed(embed, video)
    x = masking.gather_tokens(tokens, visible)
  else:  # only the visible tokens are ever used: embed just those
    tokens, x = None, model.embed(embed, video, visible)
  if k:  # the embedding froze with block 1
    tokens = None if tokens is None else jax.lax.stop_gradient(tokens)
    x = jax.lax.stop_gradient(model.run_stack(frozen["encoder"], jax.lax.stop_gradient(x),
                                              visible, remat=False))
  x = model.run_stack(params["encoder"], x, visible, remat=True)
  if model.final_norm:
    x = model.encoder_output(state_lib.group(params, frozen, "encoder_norm"), x)
  feats = model.decode(params["decoder"], x, visible, masked)

  metrics = {"feature_spread": feature_spread(x)}
  loss = jnp.zeros((), jnp.float32)
  if spec.pixel_loss:
    target = objectives.pixel_targets(video, model.patch_size, config.objective.pixel_norm,
                                        masked)
    pixel_loss = objectives.mse(model.predict_pixels(params["pixel_head"], feats), target)
    metrics["pixel_loss"] = pixel_loss
    loss = loss + pixel_loss
  if spec.latent:
    latent_loss, weight = _latent_loss(params, frozen, tokens, feats, masked, latent_key, step,
                                       model=model, config=config, spec=spec,
                                       latent_weight_fn=latent_weight_fn)
    metrics["latent_loss"] = latent_loss
    loss = loss + weight * latent_loss
  return loss, metrics


def vjepa_loss_fn(params, frozen, teacher, video, key, *, model, config, spec):
  """The V-JEPA loss (vjepa.py) with collapse statistics of the context encoder's output and of
  the (LayerNormed) targets: target_spread is 0 exactly when every token's target is the same."""
  loss, metrics, (x, target) = vjepa.loss(params, frozen, teacher, video, key, model=model,
                                          config=config, spec=spec)
  metrics["feature_spread"] = feature_spread(x)
  metrics["target_spread"] = feature_spread(target)
  return loss, metrics


def _latent_loss(params, frozen, tokens, feats, masked, key, step, *, model, config, spec,
                 latent_weight_fn):
  """MSE between the latent head's predictions and (normalised) block activations."""
  batch, num_tokens = tokens.shape[:2]
  all_ids = jnp.broadcast_to(jnp.arange(num_tokens, dtype=jnp.int32), (batch, num_tokens))
  if config.naive_latent.enabled:
    nl = config.naive_latent
    layer = plan.naive_latent_layer(config)
    own_blocks = jax.tree.map(lambda a: a[:layer], params["encoder"])
    targets = model.run_stack(jax.lax.stop_gradient(own_blocks), jax.lax.stop_gradient(tokens),
                              all_ids, remat=False)[:, :, None]  # (B, N, 1, D)
    norm, fraction = nl.target_norm, 1.0
    weight = latent_weight_fn(step)
  else:
    ll = config.layerlock
    targets = layerlock_targets(model, frozen["encoder"], tokens, multi_target=ll.multi_target)
    if ll.get("target_center", "none") == "clip":
      targets = objectives.center_over_tokens(targets)
    norm, fraction = ll.target_norm, ll.latent_patch_fraction
    weight = ll.latent_loss_weight
  # Optionally only a random fraction of the masked positions (LayerLock's 5% ablation).
  columns = jnp.broadcast_to(jnp.arange(masked.shape[1], dtype=jnp.int32), masked.shape)
  columns = masking.subsample(key, columns, fraction)
  ids = jnp.take_along_axis(masked, columns, axis=1)
  sub_feats = masking.gather_tokens(feats, columns)
  targets = objectives.normalize_latent(masking.gather_tokens(targets, ids), norm)
  predictions = model.predict_latents(params["latent_head"], sub_feats)[:, :, :targets.shape[2]]
  return objectives.mse(predictions, targets), weight


def layerlock_targets(model, frozen_encoder, tokens, *, multi_target: bool):
  """Block-k output (or blocks 1..k) of the frozen prefix on the FULL, unmasked clip.

  Tokens the student never sees still get targets, like V-JEPA's teacher on the full clip [I].
  Forward only, under stop-gradient. tokens (B, N, D) -> targets (B, N, 1 or k, D).
  """
  batch, num_tokens = tokens.shape[:2]
  all_ids = jnp.broadcast_to(jnp.arange(num_tokens, dtype=jnp.int32), (batch, num_tokens))
  full = model.run_stack(frozen_encoder, tokens, all_ids, remat=False, return_all=multi_target)
  targets = jnp.moveaxis(full[1], 0, 2) if multi_target else full[:, :, None]
  return jax.lax.stop_gradient(targets)


LAYER_NORMS = "encoder_layer_norms"  # metrics key: (trainable blocks,) parameter norms


def encoder_layer_norms(params) -> jax.Array:
  """L2 norm of each trainable encoder block's parameters, in depth order: (blocks,) float32."""
  squares = [jnp.sum(jnp.square(x.astype(jnp.float32)), axis=tuple(range(1, x.ndim)))
             for x in jax.tree.leaves(params["encoder"])]
  return jnp.sqrt(sum(squares))


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

  # The convergence trigger (freeze_trigger.py) reads the trainable blocks' norms at its checks.
  ll = config.layerlock
  track_layer_norms = bool(ll.enabled and ll.get("trigger", "schedule") == "convergence"
                           and not spec.regime)

  def train_step(state: TrainState, video):
    key = jax.random.fold_in(jax.random.key(state.seed), state.step)
    if vjepa.enabled(config):
      # V-JEPA's multi-block masks come from one key per batch (not per clip), so its step runs
      # unsplit; config validation refuses grad_accum_steps > 1 with it.
      grad_fn = jax.value_and_grad(vjepa_loss_fn, has_aux=True)
      (loss, metrics), grads = grad_fn(state.params, state.frozen, state.teacher, video, key,
                                       model=model, config=config, spec=spec)
    else:
      def batch_loss(params, video, rows):
        return loss_fn(params, state.frozen, video, masking.clip_keys(key, rows), state.step,
                       model=model, config=config, spec=spec, latent_weight_fn=latent_weight_fn)

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
      metrics[LAYER_NORMS] = encoder_layer_norms(params)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    if vjepa.keeps_teacher(config):  # after the update: the teacher follows the new student
      m = vjepa.momentum(config, state.step)
      new_state = new_state.replace(teacher=vjepa.ema_update(
          state.teacher, params, state.frozen, m, frozen_layers=spec.frozen_layers,
          copy_frozen=config.vjepa.frozen_teacher == "copy"))
      metrics["ema_momentum"] = m
    return new_state, metrics

  return train_step
