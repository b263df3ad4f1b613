r"""python -m layerlock_jax.main --config=configs/vjepa_l.py --workdir=/tmp/vjepa_l
python -m layerlock_jax.main --config=configs/vjepa_l.py:layerlock --workdir=/tmp/vjepa_l_ll
python -m layerlock_jax.aot --config=configs/vjepa_l.py --num_devices=8 --accelerator=h100

V-JEPA with a ViT-L/16 encoder (1024 wide, 24 deep, MLP 4096, 16 heads) on 16 frames x 224^2 with
2x16x16 tubelets (8x14x14 = 1568 tokens), sized for one 8-GPU H100 node.

Recipe as far as it is known (V-JEPA configs/pretrain/vitl16.yaml [P-code]): predictor 384 wide and
12 deep; multi-block masks (8 blocks at 0.15 spatial scale, 2 at 0.7, aspect 0.75-1.5, a tube over
time); L1 loss on the LayerNormed teacher output; EMA momentum 0.998 -> 1.0; AdamW (0.9, 0.999),
peak LR 6.25e-4 after a warmup of 40/300 of the run, cosine to 1e-6; gradient clip 10; 90K steps.
Differences, all knobs:
  - batch 512 (64 clips per GPU) instead of 3072 on 128 GPUs; the LR is scaled linearly with the
    batch, 6.25e-4 * 512 / 3072 ~= 1.04e-4 [I];
  - weight decay constant 0.04 (V-JEPA raises it 0.04 -> 0.4 over the run; no decay schedule here);
  - one mask per clip: clips alternate between the short- and long-range groups (V-JEPA runs the
    encoder once per group), with fixed counts per frame: 70% targets, 15% context
    (layerlock_jax/masking.py `sample_multiblock`);
  - V-JEPA's initial LR (2e-4 at the start of its warmup) is not modelled: warmup starts at 0.

Variants (the text after ':'):
  (none)     plain V-JEPA: the target is the teacher's last block.
  layerlock  V-JEPA + LayerLock: 3-D RoPE after the first norm; the target starts at the teacher's
             block 1; from step 20K one more student block freezes every interval, the target
             moving to the newest frozen block, a 500-step LR mini-warmup at each switch; cap and
             interval derived as for the size configs (layerlock_jax/config/sizes.py
             `layerlock_schedule`). [I: the paper gives no V-JEPA schedule.]
"""
from layerlock_jax.config import defaults as config_defaults
from layerlock_jax.config import sizes as size_configs

VARIANTS = ("", "layerlock")


def get_config(variant: str = ""):
  config_defaults.check_variant(variant, VARIANTS)
  c = config_defaults.vit_config("L")
  c.model.dtype = "bfloat16"       # compute dtype; parameters, teacher and Adam state stay float32
  c.model.posemb = "sincos"        # V-JEPA's fixed 3-D sin-cos table [P-code]

  c.total_steps = 90_000
  c.batch_size = 512
  c.checkpoint_every = 2_000
  c.keep_every = 10_000

  vj = c.vjepa
  vj.enabled = True
  vj.ema = True
  vj.ema_start, vj.ema_end = 0.998, 1.0
  vj.loss = "l1"
  vp = vj.predictor
  vp.width, vp.depth, vp.num_heads, vp.mlp_dim = 384, 12, 12, 1536

  c.masking.type = "multiblock"
  c.masking.blocks = ((8, 0.15), (2, 0.7))
  c.masking.block_aspect = (0.75, 1.5)
  c.masking.ratio = 0.7
  c.masking.context_ratio = 0.15

  o = c.optimizer
  o.lr = 6.25e-4 * 512 / 3072
  o.min_lr = 1e-6
  o.warmup_steps = 12_000          # 40 of 300 "epochs"
  o.weight_decay = 0.04
  o.b1, o.b2 = 0.9, 0.999
  o.grad_clip = 10.0

  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  c.mesh.preset = "fsdp"

  if variant == "layerlock":
    size_configs.enable_layerlock(c, pixel_steps=20_000, mini_warmup_steps=500)
  return c
