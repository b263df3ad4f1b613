"""The analytic FLOP model against XLA's own count of the REAL compiled train step.

XLA's cost_analysis counts the body of a rolled scan once, so the model is built with every block
stack unrolled (config.model.scan_unroll). XLA also counts element-wise work (norms, softmax,
GELU, AdamW) that the analytic model leaves out, so the check is a band, chosen from shapes where
matmuls dominate: XLA's count must lie within [1.0, 1.12] x the analytic model FLOPs.
"""
import dataclasses

import jax
import pytest

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax import flops
from layerlock_jax import plan
from layerlock_jax.trainer import Trainer

def step_flops(config, k: int = 0, **kwargs):
  """flops.step_flops at the stage with k frozen blocks (its spec as the freeze table makes it)."""
  target = plan.block_target(k) if k else plan.PIXELS
  return flops.step_flops(config, plan.stage_spec(config, k, target), **kwargs)



def unrolled_config(decoder, target):
  c = config_defaults.base_config()
  c.batch_size = 16
  c.model.width, c.model.depth, c.model.mlp_dim, c.model.num_heads = 64, 3, 256, 4
  c.model.patch_size = (2, 8, 8)
  c.model.remat_policy = "none"
  c.model.scan_unroll = 8
  c.model.decoder.type = decoder
  c.model.decoder.width, c.model.decoder.depth = 64, 1
  c.model.decoder.num_heads, c.model.decoder.mlp_dim = 4, 256
  c.masking.ratio = 0.5
  c.data.num_frames, c.data.image_size = 8, 32
  c.mesh.preset = "data_parallel"
  c.layerlock.enabled = True
  c.layerlock.target = target
  c.layerlock.pixel_steps, c.layerlock.interval, c.layerlock.max_frozen = 10, 10, 1
  return c


def xla_flops(config, frozen_layers, step=None):
  trainer = Trainer(config, jax.devices()[:1])
  spec = trainer.spec_at((0 if frozen_layers == 0 else 10) if step is None else step)
  assert spec.frozen_layers == frozen_layers
  return xla_step_flops(trainer, spec)


def xla_step_flops(trainer, spec):
  state = trainer.abstract_state(spec)
  video = jax.ShapeDtypeStruct((16, 8, 32, 32, 3), jax.numpy.uint8,
                               sharding=trainer.video_sharding)
  cost = trainer.step_fn(spec, state, video).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost["flops"]


@pytest.mark.parametrize("decoder,target,k", [
    pytest.param("light", "pixel", 0, marks=pytest.mark.slow), ("query", "pixel", 1),
    pytest.param("light", "latent", 1, marks=pytest.mark.slow)])
def test_analytic_flops_match_xla_on_the_unrolled_model(decoder, target, k):
  config = unrolled_config(decoder, target)
  analytic = step_flops(config, k)["model_flops"]
  measured = xla_flops(config, k)
  assert 1.0 <= measured / analytic <= 1.12, (measured, analytic, measured / analytic)


# --- blockwise SSL ---------------------------------------------------------------------------------

BW_BOUNDS = (1, 3, 4)  # blocks of 1, 2 and 1 layers: stage 2 of sequential has both a frozen layer
                       # and an idle one


def blockwise_config(regime):
  """configs/blockwise_tiny.py's structure at test size: 4 layers in 3 segments, per-segment light
  decoders, tube masking; the shapes of `unrolled_config` otherwise, every stack unrolled."""
  c = unrolled_config("light", "pixel")
  c.layerlock.enabled = False
  c.model.depth = 4
  c.masking.type = "tube"
  c.total_steps = 30
  c.blockwise.enabled = True
  c.blockwise.regime = regime
  c.blockwise.boundaries = BW_BOUNDS
  c.blockwise.sequential_steps = (10, 10, 10)
  return c


@pytest.mark.slow
@pytest.mark.parametrize("regime,step,k,idle", [("concurrent", 0, 0, 0), ("e2e", 0, 0, 0),
                                                ("sequential", 10, 1, 1)])
def test_blockwise_analytic_flops_match_xla(regime, step, k, idle):
  config = blockwise_config(regime)
  trainer = Trainer(config, jax.devices()[:1])
  spec = trainer.spec_at(step)
  assert (spec.regime, spec.frozen_layers, spec.idle_layers) == (regime, k, idle)
  analytic = trainer.flops_per_step(spec)
  assert analytic == step_flops(config, k)["model_flops"]
  measured = xla_step_flops(trainer, spec)
  assert 1.0 <= measured / analytic <= 1.12, (measured, analytic, measured / analytic)


def test_blockwise_regimes_by_hand():
  """The regimes against each other, from the same per-piece counts the plain model uses."""
  config = blockwise_config("concurrent")
  geo = plan.token_geometry(config)   # 4x4x4 = 64 tokens, tube 0.5: 4 x 8 = 32 masked
  assert (geo["num_tokens"], geo["num_visible"], geo["num_queries"]) == (64, 32, 32)
  b, d, n_vis, s_dec, p = 16, 64, 32, 64, geo["patch_dim"]
  block = flops.block_flops(n_vis, d, 256, batch=b)
  qkv = 2 * (b * n_vis) * d * (3 * d)
  proj = 2 * (b * n_vis) * d * 64
  dec_block = flops.block_flops(s_dec, 64, 256, batch=b)
  head = 2 * (b * 32) * 64 * p
  embed = 2 * (b * n_vis) * p * d   # only the visible tokens are embedded
  by_regime = {}
  for regime in ("concurrent", "e2e", "sequential"):
    config.blockwise.regime = regime
    by_regime[regime] = {kk: step_flops(config, kk) for kk in ((0, 1, 3) if regime ==
                                                                      "sequential" else (0,))}
  con, e2e = by_regime["concurrent"][0], by_regime["e2e"][0]
  # Three decoders and heads either way; concurrent drops the QKV input gradient at the 2 inner
  # block boundaries, e2e the input-projection gradient of the 2 measuring decoders.
  assert con["heads"] == e2e["heads"] == 3 * 3 * head
  assert e2e["encoder_trainable"] - con["encoder_trainable"] == 2 * qkv
  assert con["decoder"] - e2e["decoder"] == 2 * proj
  assert e2e["decoder"] == 3 * 3 * dec_block + (3 + 2 + 2) * proj
  assert con["model_flops"] - e2e["model_flops"] == 2 * proj - 2 * qkv
  assert con["patch_embed"] == e2e["patch_embed"] == 2 * embed
  # Sequential: one decoder and head per stage; the idle suffix costs nothing.
  seq = by_regime["sequential"]
  one_decoder = 3 * (proj + dec_block + head)
  assert seq[0]["model_flops"] == 2 * embed + 3 * block + one_decoder        # block 1 = layer 1
  assert seq[1]["model_flops"] == embed + block + 6 * block - qkv + one_decoder   # layers 2-3
  assert seq[3]["model_flops"] == embed + 3 * block + 3 * block - qkv + one_decoder  # layer 4
  assert all(s["model_flops"] < e2e["model_flops"] for s in seq.values())
  assert all(s["target_forward"] == 0 for s in seq.values())
  # Stages that do not exist in the regime are refused.
  with pytest.raises(ValueError):
    step_flops(config, 2)       # layer 2 is inside block 2, not a block start
  config.blockwise.regime = "e2e"
  e2e_spec = plan.stage_spec(config, 0, plan.PIXELS)
  with pytest.raises(ValueError):
    flops.step_flops(config, dataclasses.replace(e2e_spec, frozen_layers=1))
  # Remat recomputes the trained layers and every decoder that runs, never the frozen prefix.
  config.model.remat_policy = "nothing_saveable"
  assert step_flops(config, 0)["remat_recompute"] == 4 * block + 3 * dec_block
  config.blockwise.regime = "sequential"
  assert step_flops(config, 1)["remat_recompute"] == 2 * block + dec_block
