"""Tiny V-JEPA on the embedded camera-motion clips: latent prediction with an EMA teacher in CPU
minutes.

  python -m layerlock_jax.main --config=configs/vjepa_tiny.py --workdir=/tmp/vjepa_tiny
  python -m layerlock_jax.main --config=configs/vjepa_tiny.py:layerlock --workdir=/tmp/vjepa_ll

The encoder of configs/tiny.py (sin-cos positions), a 2-block predictor, V-JEPA multi-block masks
on a 2x6x6 token grid (4 frames of 48^2), L1 loss on the
LayerNormed teacher output, EMA momentum 0.99 -> 1.0 (V-JEPA's 0.998 start barely moves the
teacher in a 300-step run).

Variants:
  (none)      plain V-JEPA: the target is the teacher's last block.
  layerlock   V-JEPA + LayerLock: the target starts at the teacher's block 1 and moves one block
              deeper at every freeze (90, 135, 180, 225: k = 1..4 of 6), as student blocks freeze.
The collapse ablation is one override away: --config.vjepa.ema=False (no teacher; the target is
the student's own output, with the gradient flowing through it).

Data: the camera-motion set (pans and zooms over photographs), not Moving MNIST. About two thirds
of a Moving-MNIST clip is black background, whose tokens are alike in a healthy encoder too, so
`feature_spread` stays near 0.03 there with or without the EMA teacher and cannot tell collapse
apart. Over photographs, 300 steps end at feature_spread 0.42 (EMA), 0.54 (`:layerlock`) and 0.019
(ema=False, collapsed).
"""
from layerlock_jax.config import defaults as config_defaults

VARIANTS = ("", "layerlock")


def get_config(variant: str = ""):
  config_defaults.check_variant(variant, VARIANTS)
  c = config_defaults.base_config()
  c.total_steps = 300
  c.batch_size = 16
  c.log_every = 20
  c.checkpoint_every = 100
  c.optimizer.warmup_steps = 30

  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 128, 6, 256, 4
  m.patch_size = (2, 8, 8)
  # Fixed sin-cos positions added to the tokens (V-JEPA [P-code]). Not RoPE: with nothing added,
  # the many all-black Moving-MNIST patches embed to exact zeros, a LayerNorm's worst point
  # (its gradient there scales by 1/sqrt(eps)), and the gradient norm overflows.
  m.posemb = "sincos"
  m.remat_policy = "none"

  vj = c.vjepa
  vj.enabled = True
  vj.ema = True
  vj.ema_start, vj.ema_end = 0.99, 1.0
  vj.loss = "l1"
  vj.frozen_teacher = "ema"
  vp = vj.predictor
  vp.width, vp.depth, vp.num_heads, vp.mlp_dim = 64, 2, 4, 128

  c.masking.type = "multiblock"
  c.masking.blocks = ((8, 0.15), (2, 0.7))
  c.masking.block_aspect = (0.75, 1.5)
  c.masking.ratio = 0.75           # 27 of 36 positions per frame are targets
  c.masking.context_ratio = 0.2    # 7 of 36 are context

  c.optimizer.lr = 1e-3
  c.optimizer.min_lr = 1e-5
  c.optimizer.weight_decay = 0.05

  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  c.mesh.preset = "data_parallel"

  c.data.source = "camera_motion"
  c.data.num_frames = 4
  c.data.image_size = 48
  c.data.num_clips = 2048

  if variant == "layerlock":
    ll = c.layerlock
    ll.enabled = True
    ll.target = "latent"
    ll.pixel_steps = 90            # first stage: predicting the teacher's block 1
    ll.interval = 45
    ll.jump = 1
    ll.max_frozen = 4
    ll.mini_warmup_steps = 20
  return c
