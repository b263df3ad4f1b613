"""Tiny video MAE on embedded Moving-MNIST: a CPU run of a few minutes.

  python -m layerlock_jax.main --config=configs/tiny.py --workdir=/tmp/tiny

Everything the big configs do (scanned + remat blocks, masking, sharding rules, AdamW with warmup and
cosine), at a size where a 2-core laptop trains it in minutes and the loss visibly falls.
Shrink further for smoke tests, e.g. --config.total_steps=20.
"""
from layerlock_jax.config import defaults as config_defaults


def get_config():
  c = config_defaults.base_config()
  c.total_steps = 600
  c.batch_size = 16
  c.log_every = 20
  c.checkpoint_every = 200

  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 128, 6, 256, 4
  m.patch_size = (2, 8, 8)
  m.posemb = "learned_3d"
  m.remat_policy = "none"          # activations are tiny here: nothing to save by recomputing
  m.decoder.type = "light"
  m.decoder.width, m.decoder.depth, m.decoder.num_heads, m.decoder.mlp_dim = 64, 1, 4, 128

  c.masking.type = "random"
  c.masking.ratio = 0.75           # 128 tokens per clip -> 32 visible (95% would leave 6)
  c.objective.pixel_norm = "patch"

  c.optimizer.lr = 1e-3
  c.optimizer.min_lr = 1e-5
  c.optimizer.warmup_steps = 50
  c.optimizer.weight_decay = 0.05

  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  c.mesh.preset = "data_parallel"

  c.data.source = "moving_mnist"
  c.data.num_frames = 16
  c.data.image_size = 32
  c.data.num_clips = 2048
  return c
