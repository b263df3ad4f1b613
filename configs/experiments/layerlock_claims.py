r"""The small video ViT behind the LayerLock claims of `python -m layerlock_jax.reproduce`.

  python -m layerlock_jax.main --config=configs/experiments/layerlock_claims.py:layerlock \
      --config.seed=0 --workdir=/tmp/claims/layerlock_s0

configs/layerlock_tiny.py's model and data (6 blocks of width 128, 3-D RoPE, 16 x 32^2 Moving
MNIST, 600 steps of 16 clips), with in-training evaluation every 150 steps so that probe accuracy
and effective rank can be followed over training. The text after ':' is the arm, optionally
followed by comma-separated modifiers:

  mae                       plain pixel MAE (the baseline of every claim)
  freeze_pixel              progressive freezing with the pixel target only (claim 2)
  layerlock                 progressive freezing + latent target switching (claims 3, 4)
  naive_latent              MAE + the model's own unfrozen middle block as a latent target (claim 3)
  layerlock_no_miniwarmup   LayerLock without the LR mini-warmup at target switches (ablation)
  mae_learned_posemb        MAE with learned 3-D position embeddings instead of RoPE (ablation)
modifiers:
  freeze=L@T                freeze blocks 1..L (and the embedding) at step T, pixel target: one
                            cell of the convergence-order grid (claim 1); only with `mae`
  quick                     CI-sized: 30 steps, 3 freeze stages, 256 clips (a smoke run, not a
                            result)
e.g. `layerlock_claims.py:mae,freeze=2@150` or `layerlock_claims.py:layerlock,quick`.
"""
from layerlock_jax import config_defaults
from layerlock_jax.evaluation import convergence

ARMS = ("mae", "freeze_pixel", "layerlock", "naive_latent", "layerlock_no_miniwarmup",
        "mae_learned_posemb")


def parse_variant(variant: str) -> tuple[str, dict]:
  """'arm[,freeze=L@T][,quick]' -> (arm, {"freeze": (L, T) or None, "quick": bool})."""
  arm, *mods = [p.strip() for p in variant.split(",")]
  config_defaults.check_variant(arm, ARMS)
  out = {"freeze": None, "quick": False}
  for mod in mods:
    if mod == "quick":
      out["quick"] = True
    elif mod.startswith("freeze=") and "@" in mod:
      layers, step = mod.removeprefix("freeze=").split("@")
      out["freeze"] = (int(layers), int(step))
    else:
      raise ValueError(f"unknown modifier {mod!r} in {variant!r}; use freeze=L@T or quick")
  if out["freeze"] and arm != "mae":
    raise ValueError(f"freeze=L@T is a cell of the convergence grid: only with mae, got {arm!r}")
  return arm, out


def get_config(variant: str = "layerlock"):
  arm, mods = parse_variant(variant)
  c = config_defaults.base_config()
  c.total_steps = 600
  c.batch_size = 16
  c.log_every = 20
  c.checkpoint_every = 0           # only the final state: these runs are minutes long
  c.eval_every = 150

  m = c.model
  m.width, m.depth, m.mlp_dim, m.num_heads = 128, 6, 256, 4
  m.patch_size = (2, 8, 8)
  m.posemb = "learned_3d" if arm == "mae_learned_posemb" else "rope"
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
  ll.pixel_steps = 200             # freezes at 200, 280, 360, 440 (k = 1..4)
  ll.interval = 80
  ll.jump = 1
  ll.max_frozen = 4
  ll.target_norm = "layernorm"
  ll.keep_pixel_loss = True
  ll.mini_warmup_steps = 20
  if arm in ("freeze_pixel", "layerlock", "layerlock_no_miniwarmup"):
    ll.enabled = True
    ll.target = "pixel" if arm == "freeze_pixel" else "latent"
  if arm == "layerlock_no_miniwarmup":
    ll.mini_warmup_steps = 0
  if arm == "naive_latent":        # LayerLock §1.9: predict the unfrozen middle block, weight 1
    c.naive_latent.enabled = True
    c.naive_latent.layer = -1
    c.naive_latent.weight = 1.0
    c.naive_latent.target_norm = "none"

  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  c.mesh.preset = "data_parallel"

  c.data.source = "moving_mnist"
  c.data.num_frames = 16
  c.data.image_size = 32
  c.data.num_clips = 2048

  if mods["quick"]:
    c.total_steps, c.log_every, c.eval_every = 30, 5, 30
    c.optimizer.warmup_steps = 5
    ll.pixel_steps, ll.interval, ll.max_frozen, ll.mini_warmup_steps = 10, 6, 2, 2
    c.data.num_clips = 256
  if mods["freeze"]:
    layers, step = mods["freeze"]
    c = convergence.frozen_config(c, layers, step)
  return c
