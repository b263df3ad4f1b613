"""The analytic FLOP model against XLA's own count of the REAL compiled train step.

XLA's cost_analysis counts the body of a rolled scan once, so the model is built with every block
stack unrolled (config.model.scan_unroll). XLA also counts element-wise work (norms, softmax,
GELU, AdamW) that the analytic model leaves out, so the check is a band, chosen from shapes where
matmuls dominate: XLA's count must lie within [1.0, 1.12] x the analytic model FLOPs.
"""
import jax
import pytest

from layerlock_jax import config_defaults
from layerlock_jax import flops
from layerlock_jax import train


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


def xla_flops(config, frozen_layers):
  trainer = train.Trainer(config, jax.devices()[:1])
  spec = trainer.spec_at(0 if frozen_layers == 0 else 10)
  assert spec.frozen_layers == frozen_layers
  state = trainer.abstract_state(spec)
  video = jax.ShapeDtypeStruct((16, 8, 32, 32, 3), jax.numpy.uint8,
                               sharding=trainer.video_sharding)
  cost = trainer.step_fn(spec, state, video).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost["flops"]


@pytest.mark.parametrize("decoder,target,k", [("light", "pixel", 0), ("query", "pixel", 1),
                                              ("light", "latent", 1)])
def test_analytic_flops_match_xla_on_the_unrolled_model(decoder, target, k):
  config = unrolled_config(decoder, target)
  analytic = flops.step_flops(config, k)["model_flops"]
  measured = xla_flops(config, k)
  assert 1.0 <= measured / analytic <= 1.12, (measured, analytic, measured / analytic)
