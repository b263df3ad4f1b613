"""The ViT size configs (configs/vit_s.py ... vit4b.py) as rows of one table.

Every size trains the same recipe: video MAE on 16 frames x 224^2 with 2x16x16 tubelets (8x14x14 =
1568 tokens) and 95% random masking; AdamW with peak LR 1.5e-4 x batch/256 (the MAE scaling rule;
the papers give no LR [R]), linear warmup, cosine decay; checkpoints every 5K steps and permanent
snapshots every 50K for depth-wise analysis of the frozen prefix. What differs per size is a row
of `RECIPES` (the encoder dimensions are config_defaults.VIT_SIZES):
  - the decoder: VideoMAE's light decoder (S, B: the 4DS query decoder would take 4 of only 12
    blocks away from the encoder) or the 4DS query decoder (L and up: position-only query tokens
    join the sequence before the last 4 backbone blocks, which decode);
  - the mesh: from H up, ZeRO-3 style FSDP over every device (mesh.data=1, mesh.fsdp=-1), since
    float32 parameters, gradients and Adam moments (16 B per parameter) of >= 630M parameters
    crowd out activations on 16 GiB devices; on a multi-slice pod put the slow (DCN) axis first,
    e.g. --config.mesh.data=2;
  - the step budget and batch, and the LayerLock pixel stage.

Variants (the text after ':' in --config=configs/vit_l.py:layerlock):
  mae        plain video MAE: normalised-pixel target, learned 3-D position embedding (4DS).
  layerlock  LayerLock: 3-D RoPE after the first norm, the latent target, and the freeze schedule
             `layerlock_schedule` derives from the encoder depth and the step budget.

The data source stays the embedded Moving-MNIST set so the commands run anywhere; for real
pretraining add e.g. --config.data.source=video_folder --config.data.path=/data/videos
(or data.source=array_record / tfds). Any field can be overridden with --config.<field>=value.
"""
import dataclasses

import ml_collections

from layerlock_jax.config import defaults as config_defaults
from layerlock_jax import plan

VARIANTS = ("mae", "layerlock")


@dataclasses.dataclass(frozen=True)
class Recipe:
  total_steps: int
  batch_size: int
  warmup_steps: int
  pixel_steps: int               # LayerLock: pixel-only steps before the first freeze
  decoder: str                   # light | query (the last 4 backbone blocks decode)
  fsdp: bool = True              # FSDP over every device instead of the default mesh
  dtype: str = "bfloat16"        # compute dtype; parameters and optimizer state stay float32
  mini_warmup_steps: int = 500   # LayerLock: LR re-warmup at each target switch


# Size -> recipe. Only ViT-G's pixel stage is the paper's (160K steps, then a freeze every 10K
# [S]); the other sizes keep a pixel stage of ~30% of training [I]. ViT-e (~3.8B, the size of 4DS-e)
# keeps ViT-G's pacing: 550K steps of 256 clips are about one pass over the ~170M 4DS clips [S].
RECIPES = {
    "S": Recipe(100_000, 512, 5_000, 30_000, "light", fsdp=False, dtype="float32",
                mini_warmup_steps=250),  # ~22M parameters: exact numerics cost little
    "B": Recipe(200_000, 512, 10_000, 60_000, "light", fsdp=False, mini_warmup_steps=250),
    "L": Recipe(300_000, 1024, 15_000, 100_000, "query", fsdp=False),  # ~303M
    "H": Recipe(400_000, 2048, 20_000, 130_000, "query"),  # ~630M
    "g": Recipe(450_000, 2048, 20_000, 150_000, "query"),  # ~1.0B
    "G": Recipe(500_000, 2048, 20_000, 160_000, "query"),  # ~1.85B
    "e": Recipe(550_000, 256, 20_000, 160_000, "query"),   # ~3.8B
}

LAST_FREEZE_FRACTION = 0.9  # the last ~10% of training adapts to the final target
INTERVAL_ROUNDING = 500


def layerlock_schedule(encoder_depth: int, total_steps: int, pixel_steps: int) -> dict[str, int]:
  """Freeze cap and interval of a size config's LayerLock variant.

  One block per event (jump 1), the first at the end of the pixel stage, up to floor(2/3 x encoder
  depth) blocks (the paper's cap: 32 of ViT-G's 48 [S]; taken of the encoder blocks, because a
  query decoder's blocks must stay trainable). The interval is the longest multiple of 500 steps
  that lands the last freeze, pixel_steps + (max_frozen - 1) x interval, by 90% of training. [I:
  the papers give the schedule only for ViT-G; the other sizes are scaled to fit.]
  """
  max_frozen = 2 * encoder_depth // 3
  room = int(LAST_FREEZE_FRACTION * total_steps) - pixel_steps
  interval = room // (max_frozen - 1) // INTERVAL_ROUNDING * INTERVAL_ROUNDING
  if interval <= 0:
    raise ValueError(f"no room for {max_frozen} freezes between step {pixel_steps} and "
                     f"{LAST_FREEZE_FRACTION:.0%} of {total_steps} steps")
  return {"max_frozen": max_frozen, "interval": interval}


def enable_layerlock(c: ml_collections.ConfigDict, *, pixel_steps: int,
                     mini_warmup_steps: int) -> ml_collections.ConfigDict:
  """LayerLock on `c` with the freeze schedule derived from its encoder depth and total_steps."""
  schedule = layerlock_schedule(plan.encoder_depth(c), c.total_steps, pixel_steps)
  return config_defaults.enable_layerlock(c, pixel_steps=pixel_steps,
                                          mini_warmup_steps=mini_warmup_steps, **schedule)


def get_config(size: str, variant: str) -> ml_collections.ConfigDict:
  """The config of a VIT_SIZES size; `variant` is one of VARIANTS."""
  config_defaults.check_variant(variant, VARIANTS)
  r = RECIPES[size]
  c = config_defaults.vit_config(size)
  c.model.decoder.type = r.decoder
  if r.decoder == "query":
    c.model.decoder.depth = 4
  c.model.dtype = r.dtype

  c.total_steps = r.total_steps
  c.batch_size = r.batch_size
  c.optimizer.lr = 1.5e-4 * r.batch_size / 256
  c.optimizer.warmup_steps = r.warmup_steps
  c.checkpoint_every = 5_000
  c.keep_every = 50_000
  if r.fsdp:
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.mesh.preset = "fsdp"

  if variant == "layerlock":
    enable_layerlock(c, pixel_steps=r.pixel_steps, mini_warmup_steps=r.mini_warmup_steps)
  return c
