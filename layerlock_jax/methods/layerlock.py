"""LayerLock (arXiv 2509.10156) on masked video modelling: the MAE loss of a stage (pixels, plus the
latent targets of the frozen prefix), the naive-latent baseline (a fixed latent target, the collapse
ablation) and its loss weight, and the convergence trigger that decides freezes while training.

The freeze table itself (which blocks freeze when, and what each stage predicts) is planned in
pure Python by plan/layerlock.py; `plan.stage_spec` gives each stage's StageSpec.

Loss (`loss_fn`, spec.method == "mae"):
  pixel loss    MSE of the pixel head vs normalised tubelets at the masked positions
  latent loss   MSE of the latent head vs the block-k output of the frozen prefix on the FULL clip,
                gathered at the masked positions (LayerLock), or vs the model's own block-j output
                (naive latent baseline; collapses)

Convergence trigger.

The LayerLock paper starts freezing "when the parameter norms of the first layers plateau" and picks
its intervals by hand. `config.layerlock.trigger = "convergence"` makes that heuristic automatic:
every `check_every` steps the train loop hands this module the per-layer parameter norms of the
trainable encoder stack; the signal is the relative change of the norm of the next `jump` blocks
(the ones the next freeze would take) since the previous check, per step,

    signal = | ||theta_t|| - ||theta_{t - n}|| | / (||theta_{t - n}|| * n),   n = check_every,

so that a threshold does not depend on how often it is checked. It does depend on the learning rate
(a block moves less as the cosine decays), which is why min_interval / max_interval bound it.

When it stays below `threshold` for `patience` consecutive checks, and at least `min_interval` steps
have passed since the previous freeze (for the first freeze: `layerlock.pixel_steps`), the blocks
freeze from the next step on. `max_interval` (> 0) forces a freeze that many steps after the previous
one whatever the signal says, so a block that never settles cannot stall the schedule. Freezing stops
at the frozen-block cap and never starts a stage at or after `total_steps`.

Determinism: the norms come from the replicated metrics of the compiled step, so every process sees
the same values. Different device counts may sum the squares in a different order; the signal is
rounded to SIGNAL_DIGITS significant digits before it is compared, which makes a decision flip only
if the signal lands within that rounding of the threshold.

The decisions are the schedule: `plan.freeze_table(config, depth, decided=events)` turns them
into the same table an explicit schedule would give. The trigger's whole state (events, the last
norm, the calm-check count) is plain JSON, saved with every checkpoint, so a resumed run replays the
same decisions exactly. The trigger is pure Python (no JAX).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from layerlock_jax import masking
from layerlock_jax.methods import objectives
from layerlock_jax import plan
from layerlock_jax.plan import StageSpec
from layerlock_jax import state as state_lib


# --- the loss of a stage --------------------------------------------------------------------------
def loss_fn(params, frozen, teacher, video, key, step, *, model, config, spec: StageSpec,
            latent_weight_fn=None):
  """Scalar loss and metrics of a stage: the pixel loss and/or the latent loss (LayerLock's
  targets from the frozen prefix, or the naive baseline's); differentiated w.r.t. `params` only.
  `key`: per-clip keys (B,). No teacher (None)."""
  del teacher
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

  metrics = {"feature_spread": objectives.feature_spread(x)}
  loss = jnp.zeros((), jnp.float32)
  if spec.pixel_loss:
    target = objectives.pixel_targets(video, model.patch_size, config.objective.pixel_norm,
                                        masked)
    pixel_loss = objectives.mse(model.predict_pixels(params["pixel_head"], feats), target)
    metrics["pixel_loss"] = pixel_loss
    loss = loss + pixel_loss
  if spec.latent:
    latent_loss, weight = latent_loss_of(params, frozen, tokens, feats, masked, latent_key, step,
                                        model=model, config=config, spec=spec,
                                        latent_weight_fn=latent_weight_fn)
    metrics["latent_loss"] = latent_loss
    loss = loss + weight * latent_loss
  return loss, metrics


def latent_loss_of(params, frozen, tokens, feats, masked, key, step, *, model, config, spec,
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



# --- naive-latent baseline -------------------------------------------------------------------------
def naive_latent_weight_fn(config: ml_collections.ConfigDict) -> Callable:
  """Jittable `step -> weight` for the naive-latent loss (collapse ablation).

  "constant": always `weight`. "cosine": 0.5 * (1 - cos(pi * step / total_steps)) * weight, rising
  from 0 at step 0 to `weight` at total_steps and held there afterwards, so the latent loss only
  takes over once the pixel loss has shaped the encoder.
  """
  nl = config.naive_latent
  weight, total = float(nl.weight), int(config.total_steps)
  plan.fields.choice(config, "naive_latent.weight_schedule", plan.options.WEIGHT_SCHEDULES)
  if nl.weight_schedule == "constant":
    def constant(step):
      del step
      return jnp.asarray(weight, jnp.float32)
    return constant

  def cosine(step):
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total, 1), 0.0, 1.0)
    return weight * 0.5 * (1.0 - jnp.cos(jnp.pi * progress))
  return cosine


# --- convergence trigger --------------------------------------------------------------------------
# Metrics key of the convergence trigger's signal: (trainable blocks,) parameter norms.
LAYER_NORMS = "encoder_layer_norms"


def encoder_layer_norms(params) -> jax.Array:
  """L2 norm of each trainable encoder block's parameters, in depth order: (blocks,) float32."""
  squares = [jnp.sum(jnp.square(x.astype(jnp.float32)), axis=tuple(range(1, x.ndim)))
             for x in jax.tree.leaves(params["encoder"])]
  return jnp.sqrt(sum(squares))


SIGNAL_DIGITS = 4


@dataclasses.dataclass
class TriggerState:
  """Everything a resumed run needs to continue deciding exactly as an uninterrupted one."""
  events: list = dataclasses.field(default_factory=list)  # [[step, k], ...] decided so far
  last_norm: Optional[float] = None  # candidate blocks' norm at the previous check (None: no check
                                     # since the last freeze)
  calm_checks: int = 0               # consecutive checks with signal < threshold
  last_signal: Optional[float] = None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: Optional[dict]) -> "TriggerState":
    if not data:
      return cls()
    known = {f.name for f in dataclasses.fields(cls)}
    state = cls(**{k: v for k, v in data.items() if k in known})
    state.events = [[int(s), int(k)] for s, k in state.events]
    return state


def _round(x: float) -> float:
  if x == 0.0 or not math.isfinite(x):
    return x
  return round(x, SIGNAL_DIGITS - 1 - int(math.floor(math.log10(abs(x)))))


class ConvergenceTrigger:
  """Decides freeze events from the candidate blocks' parameter norms (see the module docstring)."""

  def __init__(self, config, frozen_cap: int, state: Optional[TriggerState] = None):
    ll, conv = config.layerlock, config.layerlock.convergence
    self.check_every = int(conv.check_every)
    self.threshold = float(conv.threshold)
    self.patience = int(conv.patience)
    self.min_interval = int(conv.min_interval)
    self.max_interval = int(conv.max_interval)
    self.pixel_steps = int(ll.pixel_steps)
    self.jump = int(ll.jump)
    self.cap = int(frozen_cap)
    self.total_steps = int(config.total_steps)
    self.state = state or TriggerState()

  @property
  def events(self) -> list:
    return self.state.events

  def frozen_layers(self) -> int:
    return self.state.events[-1][1] if self.state.events else 0

  def due(self, done: int) -> bool:
    """Whether the loop should hand over norms after `done` steps."""
    return (done % self.check_every == 0 and self.frozen_layers() < self.cap
            and done < self.total_steps)

  def observe(self, done: int, layer_norms: Sequence[float]) -> Optional[tuple[int, int]]:
    """Norms of the trainable encoder blocks (in depth order) after `done` steps -> a new event
    (step, k) if the next blocks freeze from step `done` on, else None."""
    st = self.state
    k = self.frozen_layers()
    candidate = math.sqrt(sum(float(n) ** 2 for n in layer_norms[:self.jump]))
    signal = None
    if st.last_norm is not None and st.last_norm > 0:
      signal = _round(abs(candidate - st.last_norm) / (st.last_norm * self.check_every))
    st.last_norm, st.last_signal = candidate, signal
    st.calm_checks = st.calm_checks + 1 if signal is not None and signal < self.threshold else 0
    previous = st.events[-1][0] if st.events else 0
    earliest = previous + self.min_interval if st.events else max(self.pixel_steps, 1)
    forced = self.max_interval > 0 and done >= max(previous + self.max_interval, earliest)
    if done < earliest or not (forced or st.calm_checks >= self.patience):
      return None
    event = (int(done), min(k + self.jump, self.cap))
    st.events.append(list(event))
    st.last_norm, st.calm_checks = None, 0  # a new candidate: its history starts now
    return event
