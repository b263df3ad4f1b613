"""LayerLock (arXiv 2509.10156): progressive freezing with the prediction target moving to the
newest frozen block's output; and the naive-latent baseline (a fixed latent target, the collapse
ablation)."""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import ml_collections

from layerlock_jax import plan


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
