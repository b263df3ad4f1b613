r"""The small video ViT behind the blockwise claim of `python -m layerlock_jax.reproduce`.

  python -m layerlock_jax.main --config=configs/experiments/blockwise_claims.py:concurrent \
      --config.seed=0 --workdir=/tmp/claims/blockwise_concurrent_s0

configs/blockwise_tiny.py (drifting gratings at 16 x 48^2, tube masking at 0.9, 2x8x8 tubelets,
one light decoder + pixel head per block) cut to 6 layers of width 64 in 3 blocks of 2, so that the
three regimes fit the reproduction's CPU budget. The text after ':' is the regime (concurrent |
sequential | e2e), optionally followed by `,quick` (CI-sized smoke run: 24 steps, 256 clips).
"""
from layerlock_jax import config_defaults

REGIMES = ("concurrent", "sequential", "e2e")


def get_config(variant: str = "concurrent"):
  regime, *mods = [p.strip() for p in variant.split(",")]
  config_defaults.check_variant(regime, REGIMES)
  if any(mod != "quick" for mod in mods):
    raise ValueError(f"unknown modifiers {mods} in {variant!r}; the only one is quick")
  c = config_defaults.base_config()
  c.total_steps = 600
  c.batch_size = 16
  c.log_every = 20
  c.checkpoint_every = 0

  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 64, 6, 256, 2
  m.patch_size = (2, 8, 8)
  m.posemb = "learned_3d"
  m.remat_policy = "none"
  m.attention = "dot_product"
  m.decoder.type = "light"
  m.decoder.width, m.decoder.depth, m.decoder.num_heads, m.decoder.mlp_dim = 32, 1, 2, 128

  c.masking.type = "tube"
  c.masking.ratio = 0.9
  c.objective.pixel_norm = "patch"

  c.optimizer.lr = 1e-3
  c.optimizer.min_lr = 1e-5
  c.optimizer.warmup_steps = 50
  c.optimizer.weight_decay = 0.05
  c.optimizer.grad_clip = 0.0      # a global clip would couple the blocks (blockwise_tiny.py)

  bw = c.blockwise
  bw.enabled = True
  bw.regime = regime
  bw.num_blocks = 3

  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  c.mesh.preset = "data_parallel"

  c.data.source = "gratings"
  c.data.num_frames = 16
  c.data.image_size = 48
  c.data.num_clips = 2048

  if "quick" in mods:
    c.total_steps, c.log_every = 24, 4
    c.optimizer.warmup_steps = 4
    c.data.num_clips = 256
  return c
