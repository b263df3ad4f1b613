"""Token counts of one clip: the patch grid, how many tokens each mask hides or shows, and how
many features 3-D RoPE rotates along each axis.

Every count is static (jit needs fixed shapes), so it is a function of the config alone, and the
mask sampler (masking.py), the FLOP model (flops.py) and the validator read it from here.
"""
from __future__ import annotations

from typing import Any

from layerlock_jax.plan.fields import choice, fail, get, integer, is_int, is_num, is_seq, number
from layerlock_jax.plan import options


def token_grid(config: Any) -> tuple[int, int, int]:
  """(time, height, width) patches of one clip; the clip must divide into whole tubelets."""
  pt, ph, pw = get(config, "model.patch_size")
  frames = integer(config, "data.num_frames", lo=1)
  size = integer(config, "data.image_size", lo=1)
  if frames % pt:
    raise fail("data.num_frames", frames,
               f"is not divisible by the tubelet length model.patch_size[0]={pt}",
               f"use a multiple of {pt}, e.g. {max(pt, frames - frames % pt)}")
  for i, p in ((1, ph), (2, pw)):
    if size % p:
      raise fail("data.image_size", size, f"is not divisible by model.patch_size[{i}]={p}",
                 f"use a multiple of {p}, e.g. {max(p, size - size % p)}")
  return frames // pt, size // ph, size // pw


def rope_sections(dim: int, fractions) -> tuple[int, ...]:
  """Features rotated along (t, h, w) by 3-D RoPE: each share of `dim` rounded down to an even
  count (a rotation acts on pairs); the remaining features carry no position."""
  return tuple(int(f * dim) // 2 * 2 for f in fractions)


def share(n: int, ratio: float) -> int:
  """How many of n positions a ratio selects: round(n * ratio), Python's round (half to even).

  The one rounding rule of every mask count (and of LayerLock's latent-patch subsample).
  """
  return int(round(n * ratio))


def num_masked(grid, ratio: float, mask_type: str) -> int:
  """Masked tokens per clip of a random or tube mask.

  A tube mask hides whole spatial columns across time, so its count is rounded per frame.
  """
  t, h, w = grid
  if mask_type == "tube":
    return t * share(h * w, ratio)
  return share(t * h * w, ratio)


def _check_masked_and_visible(grid, ratio: float, mask_type: str) -> None:
  """A random or tube mask must leave >= 1 token masked and >= 1 visible."""
  t, h, w = grid
  # Tube masks pick spatial positions once and repeat them over time, so they count per frame.
  n = t * h * w if mask_type != "tube" else h * w
  masked = share(n, ratio)
  where = (f"{n} tokens ({t}x{h}x{w})" if mask_type != "tube"
           else f"{n} spatial positions ({h}x{w}, tube masking)")
  if n - masked < 1:
    raise fail("masking.ratio", ratio, f"leaves no visible token of {where}",
               f"lower it below {(n - 1) / n:.4g} or use a larger clip/smaller patch")
  if masked < 1:
    raise fail("masking.ratio", ratio, f"masks no token of {where}",
               f"raise it to >= {1 / n:.4g}")


def multiblock_frame_counts(grid, ratio: float, context_ratio: float) -> tuple[int, int]:
  """(targets, context positions) per frame of V-JEPA's multi-block mask: disjoint, each >= 1."""
  _, h, w = grid
  hw = h * w
  m, c = share(hw, ratio), share(hw, context_ratio)
  if m < 1 or c < 1 or m + c > hw:
    raise fail("masking.context_ratio", context_ratio,
               f"with masking.ratio={ratio} gives {c} context + {m} target positions of the "
               f"{hw} per frame ({h}x{w}); each needs >= 1 and together <= {hw}",
               "lower masking.ratio or masking.context_ratio, or use a finer patch grid")
  return m, c


def multiblock_counts(grid, ratio: float, context_ratio: float) -> tuple[int, int]:
  """(context, target) tokens per clip of a multi-block mask: fixed, so shapes are static."""
  t, h, w = grid
  return t * share(h * w, context_ratio), t * share(h * w, ratio)


def latent_queries(num_masked_tokens: int, fraction: float) -> int:
  """Masked tokens that get a latent target when LayerLock subsamples them (at least one)."""
  return max(1, share(num_masked_tokens, fraction))


def token_geometry(config: Any) -> dict[str, int]:
  """Token counts of one clip: N tokens, patch dim P, masked / visible / query counts.

  Counts only: `check_masking` says whether they make a trainable mask (tools such as a dry
  run on a shrunken clip count FLOPs of degenerate ones too)."""
  grid = token_grid(config)
  pt, ph, pw = config.model.patch_size
  n = grid[0] * grid[1] * grid[2]
  mask_type = config.masking.get("type", "random")
  if mask_type == "multiblock":
    # Tokens in neither the context nor the target set are dropped: visible + masked may be < N.
    num_visible, masked = multiblock_counts(grid, config.masking.ratio,
                                            config.masking.context_ratio)
  else:
    masked = num_masked(grid, config.masking.ratio, mask_type)
    num_visible = n - masked
  # The decoder (or predictor) holds one query per masked position.
  return {"num_tokens": n, "patch_dim": pt * ph * pw * 3, "num_masked": masked,
          "num_visible": num_visible, "num_queries": masked}


def check_masking(config: Any, grid: tuple[int, int, int]) -> None:
  """The mask fields: a known type, and a ratio leaving tokens on both sides."""
  mtype = choice(config, "masking.type", options.MASKING_TYPES)
  if mtype == "multiblock" and not get(config, "vjepa.enabled"):
    raise fail("masking.type", "multiblock", "is V-JEPA's mask (the MAE losses need every "
               "token either visible or masked)",
               "use random or tube, or --config.vjepa.enabled=True")
  ratio = number(config, "masking.ratio", 0, 1, lo_open=True, hi_open=True)
  if mtype != "multiblock":
    _check_masked_and_visible(grid, ratio, mtype)
    return
  context = number(config, "masking.context_ratio", 0, 1, lo_open=True, hi_open=True)
  multiblock_frame_counts(grid, ratio, context)
  blocks = get(config, "masking.blocks")
  ok = is_seq(blocks) and len(blocks) > 0 and all(
      is_seq(b) and len(b) == 2 and is_int(b[0]) and b[0] >= 1 and is_num(b[1])
      and 0 < b[1] <= 1 for b in blocks)
  if not ok:
    raise fail("masking.blocks", blocks, "is not a non-empty list of (count >= 1, scale in "
               "(0, 1]) pairs", "pass e.g. --config.masking.blocks='((8, 0.15), (2, 0.7))'")
  aspect = get(config, "masking.block_aspect")
  if not (is_seq(aspect) and len(aspect) == 2 and all(is_num(a) for a in aspect)
          and 0 < aspect[0] <= aspect[1]):
    raise fail("masking.block_aspect", aspect, "is not a (low, high) range with 0 < low <= high",
               "pass e.g. --config.masking.block_aspect='(0.75, 1.5)'")
