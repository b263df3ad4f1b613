"""The plan of a run: everything that follows from its config alone, in pure Python (no JAX).

Encoder depth, the freeze table (LayerLock) or the segment stages (blockwise SSL), the stage specs
the train step is compiled for, token and mask counts, the option lists and the names of targets,
parameter groups and metrics are each derived here, once. The validator (config/validation.py)
runs the same derivations before JAX starts and reports their first `ConfigError`; the schedule,
state, models, FLOP model, blockwise loss and checkpoints read the results. Nothing here imports
JAX, so launch scripts and config tools can use it too.

  options     every named option a config field accepts
  fields      ConfigError and the checked field readers
  tokens      patch grid, mask counts (one rounding rule), token geometry, RoPE sections
  stages      encoder depth, Stage / StageSpec records, names
  layerlock   LayerLock's freeze table and its rules
  segments    blockwise SSL's segments (runs of blocks), budgets and stages
"""
from __future__ import annotations

from typing import Any, Sequence

from layerlock_jax.plan.fields import ConfigError, fail, format_error, get, integer
from layerlock_jax.plan import layerlock
from layerlock_jax.plan.layerlock import check_layerlock, freeze_events, frozen_cap
from layerlock_jax.plan import options
from layerlock_jax.plan import segments
from layerlock_jax.plan import stages
from layerlock_jax.plan.stages import (DECODERS, HEADS, PER_SEGMENT_GROUPS, PIXELS, Stage,
                                       StageSpec, block_target, encoder_depth, format_table,
                                       method_enabled, query_decoder_depth, segment_name,
                                       stage_index_at)
from layerlock_jax.plan.tokens import (check_masking, latent_queries, multiblock_counts,
                                       num_masked, rope_sections, share, token_geometry,
                                       token_grid)

blockwise_enabled = segments.enabled


def vjepa_enabled(config: Any) -> bool:
  return method_enabled(config, "vjepa")


def freeze_table(config: Any, encoder_depth: int | None = None,
                 decided: Sequence = ()) -> tuple[Stage, ...]:
  """All stages of the run, ordered by start step; the first starts at step 0.

  `encoder_depth` defaults to the config's. With the convergence trigger, `decided` holds the
  (step, k) events decided so far (methods/layerlock.py).
  """
  depth = stages.encoder_depth(config) if encoder_depth is None else encoder_depth
  if segments.enabled(config):
    return segments.blockwise_table(config, depth)
  return layerlock.layerlock_table(config, depth, decided)


def naive_latent_layer(config: Any) -> int:
  """The naive-latent baseline's target block (1-based); -1 in the config means the middle."""
  layer = get(config, "naive_latent.layer")
  return layer if layer > 0 else max(1, encoder_depth(config) // 2)


def vjepa_target_layer(config: Any, frozen_layers: int) -> int:
  """The teacher block whose output is V-JEPA's target: the last one for plain V-JEPA; with
  LayerLock block max(1, k), the newest frozen student block (block 1 before the first freeze)."""
  if get(config, "layerlock.enabled"):
    return max(1, frozen_layers)
  return encoder_depth(config)


def source_names(data) -> list[str]:
  """Names of the mixture's sources (data.sources), as used in metrics: "name" or "<i>_<source>"."""
  return [str(e.get("name", f"{i}_{e.get('source', data['source'])}"))
          for i, e in enumerate(data["sources"])]


def method_name(config: Any) -> str:
  """The method a run's train step computes (StageSpec.method): blockwise, vjepa or mae."""
  if segments.enabled(config):
    return "blockwise"
  return "vjepa" if vjepa_enabled(config) else "mae"


def convergence_trigger(config: Any) -> bool:
  """Whether LayerLock's freezes are decided while training by the convergence trigger."""
  ll = config["layerlock"]
  return bool(ll["enabled"]) and ll.get("trigger", "schedule") == "convergence"


def stage_spec(config: Any, frozen_layers: int, target: str) -> StageSpec:
  """The StageSpec of a freeze-table stage (or of plain MAE / the naive-latent baseline)."""
  if segments.enabled(config):
    depth = encoder_depth(config)
    bounds = segments.boundaries(config, depth)
    regime = get(config, "blockwise.regime")
    if regime != "sequential":
      return StageSpec(0, target=target, regime=regime, boundaries=bounds, method="blockwise")
    # A sequential stage starts where a segment starts: frozen_layers = b_{j-1}.
    starts = (0,) + bounds[:-1]
    if frozen_layers not in starts:
      raise ValueError(f"frozen_layers={frozen_layers} is not a segment start {starts}")
    j = starts.index(frozen_layers) + 1
    return StageSpec(frozen_layers, target=target, idle_layers=depth - bounds[j - 1],
                     regime=regime, boundaries=bounds, active_segment=j, method="blockwise")
  if vjepa_enabled(config):
    layer = vjepa_target_layer(config, frozen_layers)
    return StageSpec(frozen_layers, latent=True, pixel_loss=False,
                     target=f"teacher_block_{layer}", method="vjepa")
  if get(config, "naive_latent.enabled"):
    return StageSpec(0, latent=True, pixel_loss=True,
                     target=f"pixels+naive_block_{get(config, 'naive_latent.layer')}")
  ll = get(config, "layerlock")
  latent = ll["enabled"] and ll["target"] == "latent" and frozen_layers > 0
  pixel = (not latent) or ll["keep_pixel_loss"]
  return StageSpec(frozen_layers, latent=latent, pixel_loss=pixel, target=target)


def num_latent_heads(config: Any) -> int:
  """Latent prediction heads: one per freezable block with LayerLock's multi_target, else one."""
  ll = get(config, "layerlock")
  if ll["enabled"] and ll["multi_target"]:
    return frozen_cap(config, encoder_depth(config))
  return 1

