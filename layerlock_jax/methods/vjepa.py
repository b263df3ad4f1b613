"""V-JEPA latent prediction with an EMA teacher, and V-JEPA + LayerLock, in the common train step.

V-JEPA (arXiv 2404.08471): a context encoder (the student) sees the visible tokens of a
multi-block mask; a narrow predictor (models/predictor.py) turns them plus mask tokens into
features at the masked positions; the target is the LayerNormed output of a *teacher* encoder on
the FULL clip, gathered at the masked positions, under stop-gradient; loss L1 (knob: L2). The
teacher is an exponential moving average of the student, updated after every optimizer step with
a momentum rising linearly from `vjepa.ema_start` to `vjepa.ema_end` over the run:

  teacher <- m * teacher + (1 - m) * student

State: the teacher (the student's "embed" and "encoder" groups, unsplit) lives in
`TrainState.teacher`, sharded like the student's parameters, saved and restored with it. It is
not differentiated and has no optimizer state.

V-JEPA + LayerLock (`layerlock.enabled`): the same freeze table as MAE LayerLock. With k student
blocks frozen the target is the teacher's block max(1, k) output: the run starts by predicting the
teacher's first block and the target moves one block deeper with every freeze, always to a block
whose student copy is frozen, which is what stops the target from drifting toward a collapsed
solution. The teacher only runs the blocks up to the target. Teacher blocks whose student block
is frozen are, by `vjepa.frozen_teacher`:
  ema   kept on the EMA update; since their student block no longer moves, they converge to it
        geometrically (the EMA of a constant), at the slow rate of a momentum near 1;
  copy  overwritten with the frozen student blocks (and embedding) at every step, so the target
        becomes exactly the frozen prefix's output, as in pixel-MAE LayerLock.

Without EMA (`vjepa.ema=False`, the collapse ablation) no teacher is kept: the target is the
student's own output on the full clip, and the gradient flows through it as well. With LayerLock
that target comes from the frozen prefix (from the first freeze on), which receives no gradient.

The train step calls `loss_fn` (spec.method == "vjepa") on the whole batch with one key (the
multi-block masks are drawn per batch), and `ema_update` after the optimizer update. The model comes
in as an argument.
"""
import jax
import jax.numpy as jnp

from layerlock_jax import masking
from layerlock_jax.methods import objectives
from layerlock_jax import plan
from layerlock_jax import state as state_lib

TEACHER_GROUPS = ("embed", "encoder")  # what the teacher holds: the student's encoder, unsplit


def enabled(config) -> bool:
  return plan.vjepa_enabled(config)


def keeps_teacher(config) -> bool:
  """Whether the train state carries an EMA teacher (V-JEPA with EMA)."""
  return enabled(config) and bool(config.vjepa.ema)


def init_teacher(full_params: dict, config) -> dict:
  """The teacher at step 0: a copy of the student's encoder (empty when no teacher is kept)."""
  if not keeps_teacher(config):
    return {}
  return {name: full_params[name] for name in TEACHER_GROUPS}


def momentum(config, step):
  """EMA momentum at `step` (traced or not): linear from ema_start to ema_end over total_steps."""
  vj = config.vjepa
  frac = jnp.minimum(jnp.asarray(step, jnp.float32) / max(1, int(config.total_steps)), 1.0)
  return jnp.float32(vj.ema_start) + (jnp.float32(vj.ema_end) - jnp.float32(vj.ema_start)) * frac


def ema_update(teacher, params, frozen, m, *, frozen_layers: int, copy_frozen: bool):
  """teacher <- m * teacher + (1 - m) * student, leaf by leaf; with `copy_frozen` the frozen
  student blocks 1..k (and the embedding when k >= 1) are copied in instead."""
  ema = lambda t, s: m * t + (1.0 - m) * s
  student = {"embed": state_lib.group(params, frozen, "embed"), "encoder": state_lib.encoder_stack(params, frozen)}
  new = jax.tree.map(ema, teacher, student)
  k = frozen_layers
  if copy_frozen and k:
    new["embed"] = frozen["embed"]
    new["encoder"] = jax.tree.map(lambda t, f: t.at[:k].set(f), new["encoder"], frozen["encoder"])
  return new


def sample_masks(key, batch: int, model, config):
  """(context_ids, target_ids) of a step: multi-block, or the MAE mask types (context = visible)."""
  mk = config.masking
  if mk.type == "multiblock":
    return masking.sample_multiblock(key, batch, model.grid, mk.ratio, mk.context_ratio,
                                     mk.blocks, mk.block_aspect)
  return masking.sample_mask(key, batch, model.grid, mk.ratio, mk.type)


def targets(teacher, params, frozen, tokens, video, *, model, config, spec):
  """Target features (B, N, D) of every token: the teacher's (or, without EMA, the student's own)
  block-`plan.vjepa_target_layer` output on the full clip, LayerNormed over features (no affine)."""
  layer = plan.vjepa_target_layer(config, spec.frozen_layers)
  batch, num_tokens = video.shape[0], model.num_tokens
  all_ids = jnp.broadcast_to(jnp.arange(num_tokens, dtype=jnp.int32), (batch, num_tokens))
  if keeps_teacher(config):
    stack = jax.tree.map(lambda a: a[:layer], teacher["encoder"])
    out = model.run_stack(stack, model.embed(teacher["embed"], video), all_ids, remat=False)
    out = jax.lax.stop_gradient(out)
  else:
    # The ablation: the student's own blocks, differentiated (remat: they are trained through).
    stack = jax.tree.map(lambda a: a[:layer], state_lib.encoder_stack(params, frozen))
    out = model.run_stack(stack, tokens, all_ids, remat=True)
  return objectives.normalize_latent(out, "layernorm")


def predict(params, frozen, video, context_ids, target_ids, *, model, spec):
  """Student side: (embedded tokens of the full clip (B, N, D), context encoder output (B, C, D),
  predicted features (B, M, D)). The encoder runs on the context tokens only; the predictor gets
  those plus mask tokens at `target_ids`."""
  k = spec.frozen_layers
  tokens = model.embed(state_lib.group(params, frozen, "embed"), video)
  if k:
    tokens = jax.lax.stop_gradient(tokens)
  x = masking.gather_tokens(tokens, context_ids)
  if k:
    x = jax.lax.stop_gradient(model.run_stack(frozen["encoder"], x, context_ids, remat=False))
  x = model.run_stack(params["encoder"], x, context_ids, remat=True)
  return tokens, x, model.predict_features(params["predictor"], x, context_ids, target_ids)


def loss(params, frozen, teacher, video, key, *, model, config, spec):
  """V-JEPA loss, metrics, and (context encoder output, targets) for the collapse statistics.

  Differentiated w.r.t. `params` only; the teacher enters under stop-gradient.
  """
  mask_key, _ = jax.random.split(key)
  context_ids, target_ids = sample_masks(mask_key, video.shape[0], model, config)
  tokens, x, prediction = predict(params, frozen, video, context_ids, target_ids, model=model,
                                  spec=spec)
  target = masking.gather_tokens(
      targets(teacher, params, frozen, tokens, video, model=model, config=config, spec=spec),
      target_ids)
  diff = prediction - target
  value = jnp.mean(jnp.abs(diff)) if config.vjepa.loss == "l1" else jnp.mean(jnp.square(diff))
  return value, {"latent_loss": value}, (x, target)


def loss_fn(params, frozen, teacher, video, key, step, *, model, config, spec,
            latent_weight_fn=None):
  """The V-JEPA loss (`loss`) with collapse statistics of the context encoder's output and of
  the (LayerNormed) targets: target_spread is 0 exactly when every token's target is the same.
  `key`: one key for the batch."""
  del step, latent_weight_fn
  value, metrics, (x, target) = loss(params, frozen, teacher, video, key, model=model,
                                     config=config, spec=spec)
  metrics["feature_spread"] = objectives.feature_spread(x)
  metrics["target_spread"] = objectives.feature_spread(target)
  return value, metrics
