"""Tiny LayerLock on embedded Moving-MNIST: several freeze stages in a few CPU minutes.

  python -m layerlock_jax.main --config=configs/layerlock_tiny.py --workdir=/tmp/layerlock_tiny

configs/tiny.py plus LayerLock: 3-D RoPE after the first norm of each block, a pixel phase, then
one more block frozen every `interval` steps (up to 4 of 6) with the prediction target moving to
the newest frozen block's output, a learning-rate mini-warmup at each switch. Baselines are one
override away:
  --config.layerlock.target=pixel        progressive freezing with the pixel target only
  --config.layerlock.enabled=False       plain MAE with the same model
"""
from layerlock_jax import config_defaults


def get_config():
  c = config_defaults.base_config()
  c.total_steps = 600
  c.batch_size = 16
  c.log_every = 20
  c.checkpoint_every = 200

  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 128, 6, 256, 4
  m.patch_size = (2, 8, 8)
  m.posemb = "rope"
  m.remat_policy = "none"
  m.decoder.type = "light"
  m.decoder.width, m.decoder.depth, m.decoder.num_heads, m.decoder.mlp_dim = 64, 1, 4, 128

  c.masking.type = "random"
  c.masking.ratio = 0.75
  c.objective.pixel_norm = "patch"

  c.optimizer.lr = 1e-3
  c.optimizer.min_lr = 1e-5
  c.optimizer.warmup_steps = 50
  c.optimizer.weight_decay = 0.05

  ll = c.layerlock
  ll.enabled = True
  ll.pixel_steps = 200             # pixel phase, then a freeze every 80 steps: stages at
  ll.interval = 80                 # 200, 280, 360, 440 (k = 1..4)
  ll.jump = 1
  ll.max_frozen = 4                # 2/3 of the 6 blocks
  ll.target = "latent"
  ll.target_norm = "layernorm"
  ll.keep_pixel_loss = True
  ll.mini_warmup_steps = 20

  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  c.mesh.preset = "data_parallel"

  c.data.source = "moving_mnist"
  c.data.num_frames = 16
  c.data.image_size = 32
  c.data.num_clips = 2048
  return c
