r"""python -m layerlock_jax.main --config=configs/vit_l.py --workdir=/tmp/vit_l
python -m layerlock_jax.main --config=configs/vit_l.py:layerlock --workdir=/tmp/vit_l_layerlock

ViT-L/16 (1024 wide, 24 deep, MLP 4096, 16 heads; ~303M backbone parameters) video pretraining on
16 frames x 224^2 with 2x16x16 tubelets (8x14x14 = 1568 tokens) and 95% random masking.
Decoder: the 4DS query decoder - position-only query tokens join the sequence before the
last 4 backbone blocks, which act as the decoder - so the encoder is 20 of 24 blocks.

The text after ':' in --config picks the variant (default "mae"):
  mae        plain video MAE: normalised-pixel target, learned 3D position embedding (4DS).
  layerlock  LayerLock: 3D RoPE after the first norm; 100K pixel-only steps, then one more encoder
             block frozen every 14K steps (up to 13 = floor(2/3 x 20)), the target switching to
             the newest frozen block's output with a 500-step LR mini-warmup at each switch.

Schedule: 300K steps of 1024 clips (307.2M clips seen), AdamW with peak LR 6e-4 = 1.5e-4 x
batch/256 (the MAE scaling rule; the papers give no LR [R]), 15K warmup steps, cosine decay.

The data source stays the embedded Moving-MNIST set so the commands run anywhere; for real
pretraining add e.g. --config.data.source=video_folder --config.data.path=/data/videos
(or data.source=array_record / tfds). Any field can be overridden with --config.<field>=value.
"""
from layerlock_jax import config_defaults

VARIANTS = ("mae", "layerlock")


def get_config(variant: str = "mae"):
  """The ViT-L/16 config; `variant` is "mae" or "layerlock" (see the module docstring)."""
  config_defaults.check_variant(variant, VARIANTS)
  c = config_defaults.vit_config("L")
  # The 4DS decoder: query tokens enter before the last 4 backbone blocks, which decode.
  c.model.decoder.type = "query"
  c.model.decoder.depth = 4
  c.model.dtype = "bfloat16"  # compute dtype; parameters and optimizer state stay float32

  c.total_steps = 300_000
  c.batch_size = 1024
  c.optimizer.lr = 6e-4  # 1.5e-4 * 1024 / 256
  c.optimizer.warmup_steps = 15_000
  c.checkpoint_every = 5_000
  c.keep_every = 50_000  # permanent snapshots for depth-wise analysis of the frozen prefix

  if variant == "layerlock":
    # Encoder depth 20 (24 blocks minus the 4 decoder blocks); cap = 2/3 * 20 -> 13 frozen
    # blocks, one per event (jump 1), so 13 freeze events. With the first freeze at the end of
    # the pixel stage the last one lands at
    #   pixel_steps + (13 - 1) * interval = 100K + 12 * 14K = 268K = 89.3% of 300K,
    # leaving the last ~10% of training to adapt to the final target. [I: the papers give the
    # schedule only for ViT-G (160K pixel steps, 10K interval); other sizes are scaled to fit.]
    config_defaults.enable_layerlock(c, pixel_steps=100_000, interval=14_000,
                                     max_frozen=13, mini_warmup_steps=500)
  return c
