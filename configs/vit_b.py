r"""python -m layerlock_jax.main --config=configs/vit_b.py --workdir=/tmp/vit_b
python -m layerlock_jax.main --config=configs/vit_b.py:layerlock --workdir=/tmp/vit_b_layerlock

ViT-B/16 (768 wide, 12 deep, MLP 3072, 12 heads; ~86M backbone parameters) video pretraining on
16 frames x 224^2 with 2x16x16 tubelets (8x14x14 = 1568 tokens) and 95% random masking.
Decoder: the VideoMAE-style light decoder (384 wide, 4 blocks, 6 heads, MLP 1536), so
all 12 backbone blocks are encoder blocks.

The text after ':' in --config picks the variant (default "mae"):
  mae        plain video MAE: normalised-pixel target, learned 3D position embedding (4DS).
  layerlock  LayerLock: 3D RoPE after the first norm; 60K pixel-only steps, then one more encoder
             block frozen every 17K steps (up to 8 = floor(2/3 x 12)), the target switching to
             the newest frozen block's output with a 250-step LR mini-warmup at each switch.

Schedule: 200K steps of 512 clips (102.4M clips seen), AdamW with peak LR 3e-4 = 1.5e-4 x
batch/256 (the MAE scaling rule; the papers give no LR [R]), 10K warmup steps, cosine decay.

The data source stays the embedded Moving-MNIST set so the commands run anywhere; for real
pretraining add e.g. --config.data.source=video_folder --config.data.path=/data/videos
(or data.source=array_record / tfds). Any field can be overridden with --config.<field>=value.
"""
from layerlock_jax import config_defaults

VARIANTS = ("mae", "layerlock")


def get_config(variant: str = "mae"):
  """The ViT-B/16 config; `variant` is "mae" or "layerlock" (see the module docstring)."""
  config_defaults.check_variant(variant, VARIANTS)
  c = config_defaults.vit_config("B")
  # The light VideoMAE decoder (the base_config dims: 384 wide, 4 deep, 6 heads, MLP 1536): at
  # this size the 4DS query decoder would take 4 of only 12 blocks away from the encoder.
  c.model.decoder.type = "light"
  c.model.dtype = "bfloat16"  # compute dtype; parameters and optimizer state stay float32

  c.total_steps = 200_000
  c.batch_size = 512
  c.optimizer.lr = 3e-4  # 1.5e-4 * 512 / 256
  c.optimizer.warmup_steps = 10_000
  c.checkpoint_every = 5_000
  c.keep_every = 50_000  # permanent snapshots for depth-wise analysis of the frozen prefix

  if variant == "layerlock":
    # Encoder depth 12; cap = 2/3 * 12 -> 8 frozen
    # blocks, one per event (jump 1), so 8 freeze events. With the first freeze at the end of
    # the pixel stage the last one lands at
    #   pixel_steps + (8 - 1) * interval = 60K + 7 * 17K = 179K = 89.5% of 200K,
    # leaving the last ~10% of training to adapt to the final target. [I: the papers give the
    # schedule only for ViT-G (160K pixel steps, 10K interval); other sizes are scaled to fit.]
    config_defaults.enable_layerlock(c, pixel_steps=60_000, interval=17_000,
                                     max_frozen=8, mini_warmup_steps=250)
  return c
