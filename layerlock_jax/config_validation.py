"""Rejects a bad config in milliseconds, before JAX initialises or anything compiles.

A wrong config on a pod otherwise surfaces as a shape error deep inside a jitted function, an XLA
sharding complaint, or - worst - a run that trains the wrong thing for hours (a LayerLock schedule
that never freezes, a mesh that leaves devices idle). `validate()` checks every field against the
schema in `config_defaults.py` and every cross-field constraint we know of, and raises the FIRST
problem as a `ConfigError` whose `.field` is the dotted path (`config.model.num_heads`) and whose
message is one line naming the bad value and the flag that fixes it. The entry point prints
`format_error(err)` and exits with status 2 (the usual "bad usage" code), so scripts can tell a
config mistake from a crash.

This module is pure Python on purpose: it must run before `jax.distributed.initialize()` and in
launch scripts that never import JAX, so the device count is passed in rather than queried.
"""
from __future__ import annotations

import glob
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

from layerlock_jax import config_defaults
from layerlock_jax.config_defaults import encoder_depth

MESH_AXES = ("data", "fsdp", "tensor")  # declaration order = slow to fast interconnect

POSEMBS = ("learned_3d", "sincos", "sincos_1d", "rope", "none")
ROPE_PLACEMENTS = ("after_norm", "qk")
DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")
ATTENTIONS = ("xla", "dot_product")
ATTENTION_IMPLS = ("", "xla", "cudnn")
DECODER_TYPES = ("light", "query")
MASKING_TYPES = ("random", "tube", "multiblock")  # multiblock: V-JEPA only
PIXEL_NORMS = ("none", "patch", "patch_channel")
FIRST_FREEZES = ("end_of_pixel", "one_interval_later")
LAYERLOCK_TARGETS = ("latent", "pixel")
FREEZE_TRIGGERS = ("schedule", "convergence")
TARGET_NORMS = ("none", "layernorm", "standardize")
WEIGHT_SCHEDULES = ("constant", "cosine")
BLOCKWISE_REGIMES = ("concurrent", "sequential", "e2e")
SYNTHETIC_SOURCES = ("moving_mnist", "gratings", "camera_motion")
FILE_SOURCES = ("video_folder", "array_record")
DATA_SOURCES = SYNTHETIC_SOURCES + FILE_SOURCES + ("tfds",)

_EPS = 1e-9  # tolerance for float sums/products such as 2/3 * 48 = 31.999...


class ConfigError(ValueError):
  """One config problem: `.field` is the dotted path, `.message` a single line with the fix."""

  def __init__(self, field: str, message: str):
    # Collapse whitespace so the error stays one line in logs even if a value contains a newline.
    self.field = field
    self.message = " ".join(str(message).split())
    super().__init__(f"{field}: {self.message}")


def format_error(err: ConfigError) -> str:
  """The line the entry point prints before exiting with status 2."""
  return f"Config error: {err.field}: {err.message}"


# --- small helpers -------------------------------------------------------------------------------


def _get(config: Any, path: str) -> Any:
  node = config
  for part in path.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      raise ConfigError(f"config.{path}", f"field {path!r} is missing; build configs from "
                        "layerlock_jax.config_defaults.base_config() so every field "
                        "exists") from None
  return node


def _leaf(path: str) -> str:
  return path.rsplit(".", 1)[-1]


def _is_int(v: Any) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _fail(path: str, value: Any, problem: str, fix: str) -> ConfigError:
  return ConfigError(f"config.{path}", f"{_leaf(path)}={value!r} {problem}; {fix}")


def _choice(config: Any, path: str, choices: Sequence[str]) -> str:
  v = _get(config, path)
  if v not in choices:
    raise _fail(path, v, "is not a known option",
                f"use one of {', '.join(repr(c) for c in choices)} via --config.{path}=NAME")
  return v


def _int(config: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
  """An integer in [lo, hi] (either bound optional)."""
  v = _get(config, path)
  if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
    if lo is None and hi is None:
      want = "an integer"
    elif hi is None:
      want = f"an integer >= {lo}"
    elif lo is None:
      want = f"an integer <= {hi}"
    else:
      want = f"an integer in [{lo}, {hi}]"
    example = lo if lo is not None else (hi if hi is not None else 0)
    raise _fail(path, v, f"is not {want}", f"pass e.g. --config.{path}={example}")
  return int(v)


def _num(config: Any, path: str, lo: float, hi: float | None = None, *, lo_open: bool = False,
         hi_open: bool = False, fix: str = "") -> float:
  """A real number between lo and hi; open/closed ends as given."""
  v = _get(config, path)
  ok = _is_num(v) and math.isfinite(v)
  ok = ok and (v > lo if lo_open else v >= lo)
  if hi is not None:
    ok = ok and (v < hi if hi_open else v <= hi)
  if not ok:
    left = "(" if lo_open else "["
    right = "inf)" if hi is None else (f"{hi})" if hi_open else f"{hi}]")
    raise _fail(path, v, f"is not a number in {left}{lo}, {right}",
                fix or f"pass a value in that range with --config.{path}=...")
  return float(v)


def _divisors_near(n: int, target: int, count: int = 3) -> list[int]:
  divs = [d for d in range(1, n + 1) if n % d == 0]
  return sorted(sorted(divs, key=lambda d: (abs(d - target), d))[:count])


# --- sections ------------------------------------------------------------------------------------


def _check_top_level(c: Any) -> None:
  _int(c, "seed")
  _int(c, "total_steps", lo=1)
  _int(c, "batch_size", lo=1)
  _int(c, "log_every", lo=1)
  _int(c, "checkpoint_every", lo=0)
  _int(c, "keep_checkpoints", lo=1)
  _int(c, "keep_every", lo=0)
  _int(c, "eval_every", lo=0)
  _int(c, "grad_accum_steps", lo=1)
  _int(c, "skip_nonfinite_updates", lo=0)
  steps = _get(c, "profile_steps")
  if steps and not (isinstance(steps, Sequence) and len(steps) == 2
                    and all(_is_int(s) for s in steps) and 1 <= steps[0] <= steps[1]):
    raise _fail("profile_steps", steps, "is not () or a pair (a, b) of steps with 1 <= a <= b",
                "pass e.g. --config.profile_steps='(5,7)'")


def _check_model(c: Any) -> None:
  width = _int(c, "model.width", lo=1)
  _int(c, "model.depth", lo=1)
  _int(c, "model.mlp_dim", lo=1)
  heads = _int(c, "model.num_heads", lo=1)
  if width % heads:
    raise _fail("model.num_heads", heads, f"does not divide model.width={width}",
                f"use a divisor of {width}, e.g. one of {_divisors_near(width, heads)}")

  patch = _get(c, "model.patch_size")
  if (not isinstance(patch, Sequence) or isinstance(patch, str) or len(patch) != 3
      or not all(_is_int(p) and p >= 1 for p in patch)):
    raise _fail("model.patch_size", patch, "is not 3 positive integers (time, height, width)",
                "pass e.g. --config.model.patch_size='(2, 16, 16)'")

  posemb = _choice(c, "model.posemb", POSEMBS)
  placement = _choice(c, "model.rope_placement", ROPE_PLACEMENTS)
  fractions = _get(c, "model.rope_fractions")
  if (not isinstance(fractions, Sequence) or isinstance(fractions, str) or len(fractions) != 3
      or not all(_is_num(f) and f >= 0 for f in fractions) or sum(fractions) > 1 + _EPS):
    raise _fail("model.rope_fractions", fractions,
                "is not 3 non-negative shares (time, height, width) summing to <= 1",
                "pass e.g. --config.model.rope_fractions='(0.1, 0.25, 0.25)'")
  if posemb == "rope":
    _num(c, "model.rope_base", 0, lo_open=True)
    if placement == "qk":
      # Rotating q and k works per head, on pairs of features, so the head dim must be even.
      dim, what = width // heads, f"per-head features (width {width} / {heads} heads)"
      if dim % 2:
        raise _fail("model.num_heads", heads,
                    f"gives an odd head dim {width}/{heads}={dim}, but rope_placement='qk' rotates "
                    "feature pairs inside each head",
                    "pick num_heads so width/num_heads is even, or use rope_placement='after_norm'")
    else:
      dim, what = width, "features of the width"
    for axis, f in zip(("time", "height", "width"), fractions):
      # A rotation acts on feature pairs: a non-zero share that rounds below one pair is a typo.
      # Same rounding as models/vit.py rope_sections: int(f * dim) rounded down to even.
      if f > 0 and int(f * dim) < 2:
        raise _fail("model.rope_fractions", tuple(fractions),
                    f"rotates {int(f * dim) // 2 * 2} of {dim} {what} along {axis}; each "
                    "rotated part needs >= 2 (one pair)",
                    f"raise the {axis} share to >= {2 / dim:.3g} or set it to 0")

  _num(c, "model.layer_norm_eps", 0, lo_open=True)
  for name, positive in (("model.input_mean", False), ("model.input_std", True)):
    value = _get(c, name)
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3
        or not all(_is_num(v) and (v > 0 or not positive) for v in value)):
      raise _fail(name, value, f"is not 3 {'positive ' if positive else ''}numbers (R, G, B)",
                  f"pass e.g. --config.{name}='(0.5, 0.5, 0.5)'")
  _choice(c, "model.dtype", DTYPES)
  _choice(c, "model.remat_policy", REMAT_POLICIES)
  _choice(c, "model.attention", ATTENTIONS)
  _choice(c, "model.attention_impl", ATTENTION_IMPLS)

  dec_type = _choice(c, "model.decoder.type", DECODER_TYPES)
  if dec_type == "light":
    dwidth = _int(c, "model.decoder.width", lo=1)
    _int(c, "model.decoder.depth", lo=1)
    _int(c, "model.decoder.mlp_dim", lo=1)
    dheads = _int(c, "model.decoder.num_heads", lo=1)
    if dwidth % dheads:
      raise _fail("model.decoder.num_heads", dheads,
                  f"does not divide model.decoder.width={dwidth}",
                  f"use a divisor of {dwidth}, e.g. one of {_divisors_near(dwidth, dheads)}")
  else:
    depth = _get(c, "model.depth")
    ddepth = _get(c, "model.decoder.depth")
    if not _is_int(ddepth) or not 1 <= ddepth < depth:
      raise _fail("model.decoder.depth", ddepth,
                  f"must be in [1, model.depth={depth}) for the query decoder, which reuses the "
                  "last decoder.depth backbone blocks and needs >= 1 encoder block before them",
                  f"pass e.g. --config.model.decoder.depth={min(4, max(depth - 1, 1))}")


def _token_grid(c: Any) -> tuple[int, int, int]:
  pt, ph, pw = _get(c, "model.patch_size")
  frames = _int(c, "data.num_frames", lo=1)
  size = _int(c, "data.image_size", lo=1)
  if frames % pt:
    raise _fail("data.num_frames", frames,
                f"is not divisible by the tubelet length model.patch_size[0]={pt}",
                f"use a multiple of {pt}, e.g. {max(pt, frames - frames % pt)}")
  for i, p in ((1, ph), (2, pw)):
    if size % p:
      raise _fail("data.image_size", size, f"is not divisible by model.patch_size[{i}]={p}",
                  f"use a multiple of {p}, e.g. {max(p, size - size % p)}")
  return frames // pt, size // ph, size // pw


def _check_masking(c: Any, grid: tuple[int, int, int]) -> None:
  mtype = _choice(c, "masking.type", MASKING_TYPES)
  if mtype == "multiblock":
    _check_multiblock(c, grid)
    return
  ratio = _num(c, "masking.ratio", 0, 1, lo_open=True, hi_open=True)
  # Tube masks pick spatial positions once and repeat them over time, so they count per frame.
  n = grid[0] * grid[1] * grid[2] if mtype == "random" else grid[1] * grid[2]
  where = (f"{n} tokens ({grid[0]}x{grid[1]}x{grid[2]})" if mtype == "random"
           else f"{n} spatial positions ({grid[1]}x{grid[2]}, tube masking)")
  # Same rounding as masking.num_masked: round(ratio * n) tokens (per frame for tubes) are hidden.
  masked = int(round(ratio * n))
  if n - masked < 1:
    raise _fail("masking.ratio", ratio, f"leaves no visible token of {where}",
                f"lower it below {(n - 1) / n:.4g} or use a larger clip/smaller patch")
  if masked < 1:
    raise _fail("masking.ratio", ratio, f"masks no token of {where}",
                f"raise it to >= {1 / n:.4g}")


def _check_multiblock(c: Any, grid: tuple[int, int, int]) -> None:
  """V-JEPA's multi-block masks (masking.sample_multiblock): per frame round(ratio * h * w)
  targets and round(context_ratio * h * w) context positions, disjoint."""
  if not _get(c, "vjepa.enabled"):
    raise _fail("masking.type", "multiblock", "is V-JEPA's mask (the MAE losses need every "
                "token either visible or masked)", "use random or tube, or --config.vjepa.enabled=True")
  hw = grid[1] * grid[2]
  ratio = _num(c, "masking.ratio", 0, 1, lo_open=True, hi_open=True)
  context = _num(c, "masking.context_ratio", 0, 1, lo_open=True, hi_open=True)
  m, n_ctx = int(round(hw * ratio)), int(round(hw * context))
  if m < 1 or n_ctx < 1 or m + n_ctx > hw:
    raise _fail("masking.context_ratio", context,
                f"with masking.ratio={ratio} gives {n_ctx} context + {m} target positions of the "
                f"{hw} per frame ({grid[1]}x{grid[2]}); each needs >= 1 and together <= {hw}",
                "lower masking.ratio or masking.context_ratio, or use a finer patch grid")
  blocks = _get(c, "masking.blocks")
  ok = isinstance(blocks, Sequence) and len(blocks) > 0 and all(
      isinstance(b, Sequence) and len(b) == 2 and _is_int(b[0]) and b[0] >= 1 and _is_num(b[1])
      and 0 < b[1] <= 1 for b in blocks)
  if not ok:
    raise _fail("masking.blocks", blocks, "is not a non-empty list of (count >= 1, scale in "
                "(0, 1]) pairs", "pass e.g. --config.masking.blocks='((8, 0.15), (2, 0.7))'")
  aspect = _get(c, "masking.block_aspect")
  if not (isinstance(aspect, Sequence) and len(aspect) == 2 and all(_is_num(a) for a in aspect)
          and 0 < aspect[0] <= aspect[1]):
    raise _fail("masking.block_aspect", aspect, "is not a (low, high) range with 0 < low <= high",
                "pass e.g. --config.masking.block_aspect='(0.75, 1.5)'")


def _check_vjepa(c: Any) -> None:
  if not _get(c, "vjepa.enabled"):
    return
  for other in ("blockwise.enabled", "naive_latent.enabled", "model.final_norm"):
    if _get(c, other):
      raise _fail(other, True, "cannot be combined with vjepa.enabled",
                  f"drop one of them (--config.{other}=False)")
  if _get(c, "grad_accum_steps") != 1:
    raise _fail("grad_accum_steps", _get(c, "grad_accum_steps"), "is not supported with V-JEPA "
                "yet (its multi-block masks are drawn per batch, not per clip)",
                "use --config.grad_accum_steps=1")
  if _get(c, "layerlock.enabled"):
    if _get(c, "layerlock.target") != "latent":
      raise _fail("layerlock.target", _get(c, "layerlock.target"),
                  "has no meaning for V-JEPA (there is no pixel target)",
                  "keep --config.layerlock.target=latent")
    if _get(c, "layerlock.multi_target"):
      raise _fail("layerlock.multi_target", True, "is not supported with V-JEPA",
                  "use --config.layerlock.multi_target=False")
  _choice(c, "vjepa.loss", ("l1", "l2"))
  _choice(c, "vjepa.frozen_teacher", ("ema", "copy"))
  start = _num(c, "vjepa.ema_start", 0, 1)
  end = _num(c, "vjepa.ema_end", 0, 1)
  if end < start:
    raise _fail("vjepa.ema_end", end, f"is below vjepa.ema_start={start}",
                "the momentum schedule rises: pass --config.vjepa.ema_end >= ema_start")
  width = _int(c, "vjepa.predictor.width", 1)
  _int(c, "vjepa.predictor.depth", 1)
  _int(c, "vjepa.predictor.mlp_dim", 1)
  heads = _int(c, "vjepa.predictor.num_heads", 1)
  if width % heads:
    raise _fail("vjepa.predictor.num_heads", heads,
                f"does not divide vjepa.predictor.width={width}",
                f"pick a divisor, e.g. {', '.join(map(str, _divisors_near(width, heads)))}")


def _check_optimizer(c: Any) -> None:
  lr = _num(c, "optimizer.lr", 0, lo_open=True)
  _num(c, "optimizer.min_lr", 0, lr, fix=f"use 0 <= min_lr <= optimizer.lr={lr}")
  _int(c, "optimizer.warmup_steps", lo=0)
  _num(c, "optimizer.weight_decay", 0)
  _num(c, "optimizer.grad_clip", 0, fix="use 0 (off) or a positive global-norm threshold")
  _num(c, "optimizer.b1", 0, 1, hi_open=True)
  _num(c, "optimizer.b2", 0, 1, hi_open=True)
  _num(c, "optimizer.eps", 0, lo_open=True)


def _check_layerlock(c: Any) -> None:
  if not _get(c, "layerlock.enabled"):
    return
  if _get(c, "naive_latent.enabled"):
    raise _fail("naive_latent.enabled", True, "together with layerlock.enabled=True mixes two "
                "latent objectives", "enable only one of --config.layerlock.enabled / "
                "--config.naive_latent.enabled")
  enc = encoder_depth(c)
  pixel_steps = _int(c, "layerlock.pixel_steps", lo=0)
  interval = _int(c, "layerlock.interval", lo=1)
  _int(c, "layerlock.jump", lo=1)
  first = _choice(c, "layerlock.first_freeze", FIRST_FREEZES)
  target = _choice(c, "layerlock.target", LAYERLOCK_TARGETS)
  _choice(c, "layerlock.target_norm", TARGET_NORMS)
  _choice(c, "layerlock.target_center", ("none", "clip"))
  _num(c, "layerlock.latent_patch_fraction", 0, 1, lo_open=True)
  _num(c, "layerlock.latent_loss_weight", 0)
  _int(c, "layerlock.mini_warmup_steps", lo=0)
  if target == "pixel" and not _get(c, "layerlock.keep_pixel_loss"):
    raise _fail("layerlock.keep_pixel_loss", False, "with layerlock.target='pixel' leaves no loss "
                "at all", "set --config.layerlock.keep_pixel_loss=True or use target='latent'")
  if enc < 2:
    raise _fail("model.depth", _get(c, "model.depth"), f"leaves an encoder of {enc} block(s) "
                "(query decoder blocks excluded), but LayerLock needs one block to freeze and one "
                "to train", "raise --config.model.depth or lower --config.model.decoder.depth")

  # The cap on frozen blocks, computed as schedule.frozen_cap does (floor, with an epsilon so that
  # e.g. 2/3 * 48 = 31.999... still gives 32).
  max_frozen = _get(c, "layerlock.max_frozen")
  if max_frozen != -1:
    if not _is_int(max_frozen) or not 1 <= max_frozen < enc:
      raise _fail("layerlock.max_frozen", max_frozen,
                  f"must be -1 or in [1, encoder depth={enc}) (the last encoder block must stay "
                  "trainable)", f"pass e.g. --config.layerlock.max_frozen={2 * enc // 3 or 1}")
    cap = max_frozen
  else:
    frac = _num(c, "layerlock.max_frozen_fraction", 0, 1, lo_open=True, hi_open=True)
    cap = math.floor(frac * enc + _EPS)
    if cap < 1:
      raise _fail("layerlock.max_frozen_fraction", frac,
                  f"of encoder depth {enc} caps frozen blocks at 0, so nothing would ever freeze",
                  f"raise it to >= {1 / enc:.3g} or set --config.layerlock.max_frozen")

  explicit = _get(c, "layerlock.explicit")
  if _choice(c, "layerlock.trigger", FREEZE_TRIGGERS) == "convergence":
    _check_convergence_trigger(c, explicit, pixel_steps)
    return
  if explicit:
    prev = (0, 0)  # step 0 is the pixel stage; both step and k must rise from there
    for i, pair in enumerate(explicit):
      if (not isinstance(pair, Sequence) or len(pair) != 2 or not all(_is_int(x) for x in pair)
          or pair[0] <= prev[0] or not prev[1] < pair[1] <= cap):
        raise _fail("layerlock.explicit", tuple(explicit),
                    f"has entry {i} {pair!r}, but entries must be (step, frozen_blocks) pairs with "
                    f"steps >= 1 and both strictly increasing, frozen_blocks <= the cap {cap}",
                    "pass e.g. --config.layerlock.explicit='((1000, 1), (2000, 2))'")
      prev = tuple(pair)
    field, value, first_step = "layerlock.explicit", tuple(explicit), explicit[0][0]
  else:
    field, value = "layerlock.pixel_steps", pixel_steps
    first_step = pixel_steps + (interval if first == "one_interval_later" else 0)
    if first_step < 1:
      # A freeze at step 0 would make the first latent target an untrained block's output.
      raise _fail(field, value, "with first_freeze='end_of_pixel' freezes block 1 at step 0, "
                  "before it has trained", "pass --config.layerlock.pixel_steps >= 1")
  total = _get(c, "total_steps")
  if first_step >= total:
    raise _fail(field, value, f"puts the first freeze at step {first_step} (first_freeze="
                f"{first!r}), not before total_steps={total}, so LayerLock would never freeze a "
                "block",
                f"lower --config.{field} or raise --config.total_steps")


def _check_convergence_trigger(c: Any, explicit, pixel_steps: int) -> None:
  if explicit:
    raise _fail("layerlock.explicit", tuple(explicit), "is a fixed freeze table, but "
                "layerlock.trigger='convergence' decides the table while training",
                "drop --config.layerlock.explicit or use --config.layerlock.trigger=schedule")
  check_every = _int(c, "layerlock.convergence.check_every", lo=1)
  _num(c, "layerlock.convergence.threshold", 0, lo_open=True)
  _int(c, "layerlock.convergence.patience", lo=1)
  min_interval = _int(c, "layerlock.convergence.min_interval", lo=1)
  max_interval = _int(c, "layerlock.convergence.max_interval", lo=0)
  if max_interval and max_interval < min_interval:
    raise _fail("layerlock.convergence.max_interval", max_interval, f"is below min_interval="
                f"{min_interval}, so every freeze would be forced", "pass 0 (never forced) or a "
                f"value >= {min_interval}")
  first = max(pixel_steps, 1)
  total = _get(c, "total_steps")
  if first + check_every > total:
    raise _fail("layerlock.pixel_steps", pixel_steps, f"leaves no convergence check between the "
                f"end of the pixel phase and total_steps={total}, so nothing would ever freeze",
                "lower --config.layerlock.pixel_steps or raise --config.total_steps")


def _check_blockwise(c: Any) -> None:
  """Blockwise SSL (layerlock_jax/blockwise.py); the same rules as blockwise.block_boundaries and
  sequential_budgets, restated here because this module must not import JAX."""
  if not _get(c, "blockwise.enabled"):
    return
  for other in ("layerlock", "naive_latent"):
    if _get(c, f"{other}.enabled"):
      raise _fail("blockwise.enabled", True, f"together with {other}.enabled=True mixes two "
                  "training methods (blockwise trains each block by its own pixel loss)",
                  f"enable only one of --config.blockwise.enabled / --config.{other}.enabled")
  _choice(c, "blockwise.regime", BLOCKWISE_REGIMES)
  if _get(c, "model.decoder.type") != "light":
    raise _fail("model.decoder.type", _get(c, "model.decoder.type"),
                "cannot be a per-block decoder: the query decoder borrows the last encoder blocks",
                "use --config.model.decoder.type=light with blockwise.enabled")
  if _get(c, "model.final_norm"):
    raise _fail("model.final_norm", True, "has no place in blockwise training (every block feeds "
                "its own decoder directly)", "use --config.model.final_norm=False")
  enc = encoder_depth(c)
  bounds = _get(c, "blockwise.boundaries")
  if not isinstance(bounds, Sequence) or isinstance(bounds, str):
    raise _fail("blockwise.boundaries", bounds, "is not a sequence of cumulative block ends",
                f"pass e.g. --config.blockwise.boundaries='(2, 6, {enc})'")
  if len(bounds):
    if (not all(_is_int(b) for b in bounds) or bounds[0] < 1 or bounds[-1] != enc
        or any(b <= a for a, b in zip(bounds, bounds[1:]))):
      raise _fail("blockwise.boundaries", tuple(bounds), "must be strictly increasing integers "
                  f">= 1 ending at the encoder depth {enc}",
                  f"pass e.g. --config.blockwise.boundaries='({enc // 2}, {enc})'")
    num_blocks = len(bounds)
  else:
    num_blocks = _int(c, "blockwise.num_blocks", lo=1, hi=enc)
    if enc % num_blocks:
      raise _fail("blockwise.num_blocks", num_blocks, f"does not divide the encoder depth {enc}",
                  f"use one of {[d for d in range(1, enc + 1) if enc % d == 0]} or give uneven "
                  "blocks with --config.blockwise.boundaries")
  if _get(c, "blockwise.regime") != "sequential":
    return
  total = _get(c, "total_steps")
  steps = _get(c, "blockwise.sequential_steps")
  if not isinstance(steps, Sequence) or isinstance(steps, str):
    raise _fail("blockwise.sequential_steps", steps, "is not a sequence of steps per block",
                "pass e.g. --config.blockwise.sequential_steps='(100, 100)'")
  if not len(steps):
    if total < num_blocks:
      raise _fail("total_steps", total, f"cannot give each of {num_blocks} blocks a step in the "
                  "sequential regime", f"pass --config.total_steps >= {num_blocks}")
    return
  if (len(steps) != num_blocks or not all(_is_int(s) and s >= 1 for s in steps)
      or sum(steps) > total):
    raise _fail("blockwise.sequential_steps", tuple(steps), f"must be {num_blocks} budgets (one "
                f"per block), each >= 1, summing to <= total_steps={total}",
                "pass e.g. --config.blockwise.sequential_steps="
                f"'{tuple([max(total // num_blocks, 1)] * num_blocks)}' or () for an even split")


def _check_naive_latent(c: Any) -> None:
  if not _get(c, "naive_latent.enabled"):
    return
  enc = encoder_depth(c)
  layer = _get(c, "naive_latent.layer")
  if layer != -1 and (not _is_int(layer) or not 1 <= layer <= enc):
    raise _fail("naive_latent.layer", layer, f"must be -1 (middle) or in [1, encoder depth={enc}]",
                f"pass e.g. --config.naive_latent.layer={max(enc // 2, 1)}")
  _num(c, "naive_latent.weight", 0)
  _choice(c, "naive_latent.weight_schedule", WEIGHT_SCHEDULES)
  _choice(c, "naive_latent.target_norm", TARGET_NORMS)


def resolve_mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes, with the single allowed -1 replaced by the remaining devices."""
  if not _is_int(num_devices) or num_devices < 1:
    raise ValueError(f"num_devices must be a positive integer, got {num_devices!r}")
  sizes = {}
  for axis in MESH_AXES:
    v = mesh_cfg[axis]
    if not _is_int(v) or (v != -1 and v < 1):
      raise ConfigError(f"config.mesh.{axis}", f"{axis}={v!r} is not a positive integer or -1; "
                        f"pass e.g. --config.mesh.{axis}=1")
    sizes[axis] = int(v)
  free = [a for a in MESH_AXES if sizes[a] == -1]
  shape = " x ".join(f"{a}={sizes[a]}" for a in MESH_AXES)
  if len(free) > 1:
    raise ConfigError(f"config.mesh.{free[1]}", f"{free[1]}=-1 but {free[0]} is -1 too ({shape}); "
                      "at most one mesh axis may be -1, give the others explicit sizes")
  known = math.prod(sizes[a] for a in MESH_AXES if sizes[a] != -1)
  if free:
    if num_devices % known:
      raise ConfigError(f"config.mesh.{free[0]}", f"{free[0]}=-1 cannot be resolved: {num_devices} "
                        f"devices are not divisible by the other axes' product {known} ({shape}); "
                        f"make the explicit sizes divide {num_devices}")
    sizes[free[0]] = num_devices // known
  elif known != num_devices:
    raise ConfigError("config.mesh", f"{shape} has {known} devices but {num_devices} are "
                      "available; set one axis to -1 (e.g. --config.mesh.data=-1) or fix the sizes")
  return sizes["data"], sizes["fsdp"], sizes["tensor"]


def _effective_rules(c: Any) -> dict[str, tuple[str, ...]]:
  """Logical axis -> mesh axes, the config's rules in front of the preset (first one wins)."""
  preset = _get(c, "mesh.preset")
  if preset not in config_defaults.SHARDING_PRESETS:
    names = ", ".join(repr(p) for p in config_defaults.SHARDING_PRESETS)
    raise _fail("mesh.preset", preset, "is not a sharding preset",
                f"use one of {names} via --config.mesh.preset=NAME")
  rules = _get(c, "mesh.rules")
  if not isinstance(rules, Sequence) or isinstance(rules, str):
    raise _fail("mesh.rules", rules, "is not a sequence of (logical_axis, mesh_axes) pairs",
                "pass e.g. --config.mesh.rules=\"(('mlp', 'tensor'),)\"")
  effective: dict[str, tuple[str, ...]] = {}
  for source, seq in (("rules", rules), ("preset", config_defaults.SHARDING_PRESETS[preset])):
    for i, rule in enumerate(seq):
      bad = None
      if (not isinstance(rule, Sequence) or isinstance(rule, str) or len(rule) != 2
          or not isinstance(rule[0], str)):
        bad = "is not a (logical_axis, mesh_axes) pair"
      else:
        axes = rule[1]
        axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
        if (not isinstance(axes, Sequence) or isinstance(axes, str)
            or not all(a in MESH_AXES for a in axes)):
          bad = f"maps to mesh axes other than {MESH_AXES}"
      if bad:
        # Preset entries are ours and tested; only a user's rules can get here in practice.
        raise _fail("mesh.rules", tuple(rules), f"has {source} entry {i} {rule!r} that {bad}",
                    "use pairs like ('mlp', 'tensor'), ('embed', ('data', 'fsdp')) or "
                    "('heads', None)")
      effective.setdefault(rule[0], tuple(axes))
  return effective


def _check_mesh(c: Any, num_devices: int, process_count: int) -> None:
  data, fsdp, tensor = resolve_mesh_shape(_get(c, "mesh"), num_devices)
  sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
  rules = _effective_rules(c)
  used = {a for axes in rules.values() for a in axes}
  if tensor > 1 and "tensor" not in used:
    raise _fail("mesh.tensor", tensor, f"but preset {_get(c, 'mesh.preset')!r} and mesh.rules "
                "shard nothing over 'tensor', so those devices would hold replicas and idle",
                "use --config.mesh.preset=fsdp_tensor, add rules naming 'tensor', or set tensor=1")
  batch = _get(c, "batch_size")
  batch_axes = rules.get("batch", ("data", "fsdp"))
  parallel = math.prod(sizes[a] for a in batch_axes)
  if batch % parallel:
    names = " x ".join(f"{a}({sizes[a]})" for a in batch_axes) or "1"
    raise _fail("batch_size", batch, f"is not divisible by the batch-parallel size {names} = "
                f"{parallel} on {num_devices} devices",
                f"use a multiple of {parallel}, e.g. {max(parallel, batch - batch % parallel)}")
  micro = _get(c, "grad_accum_steps")
  if (batch // parallel) % micro:
    raise _fail("grad_accum_steps", micro, f"does not divide the per-device batch {batch // parallel} "
                f"(batch_size={batch} over a batch-parallel size of {parallel})",
                f"use one of {_divisors_near(batch // parallel, micro)} or change batch_size")
  if not _is_int(process_count) or process_count < 1:
    raise ValueError(f"process_count must be a positive integer, got {process_count!r}")
  if batch % process_count:
    raise _fail("batch_size", batch, f"is not divisible by the {process_count} processes that each "
                "load an equal share", f"use a multiple of {process_count}")


def _check_data_fields(c: Any) -> None:
  source = _choice(c, "data.source", DATA_SOURCES)
  if _get(c, "data.num_workers") != "auto":
    _int(c, "data.num_workers", lo=0)
  _int(c, "data.prefetch", lo=0)
  if source in SYNTHETIC_SOURCES:
    batch = _get(c, "batch_size")
    clips = _get(c, "data.num_clips")
    if not _is_int(clips) or clips < batch:
      raise _fail("data.num_clips", clips, f"is smaller than batch_size={batch}, so one batch "
                  f"would repeat clips of the embedded {source!r} set",
                  f"pass --config.data.num_clips={batch} or more")


# Fields a mixture entry may not override: every source must give clips of the same shape, and
# batches are built from records of the same number of clips.
_MIXTURE_FIXED = ("num_frames", "image_size", "clips_per_video", "num_workers", "prefetch",
                  "read_threads", "sources")


def _check_data_sources(c: Any) -> None:
  sources = _get(c, "data.sources")
  if not sources:
    return
  fix = ("pass a tuple of dicts such as ({'source': 'moving_mnist', 'weight': 0.7}, "
         "{'source': 'gratings', 'weight': 0.3})")
  if not isinstance(sources, Sequence) or isinstance(sources, str):
    raise _fail("data.sources", sources, "is not a tuple of dicts", fix)
  for i, entry in enumerate(sources):
    if not isinstance(entry, Mapping):
      raise _fail("data.sources", sources, f"has entry {i} {entry!r} that is not a dict", fix)
  data, names = _get(c, "data"), set()
  for i, (entry, name) in enumerate(zip(sources, config_defaults.source_names(data))):
    weight = entry.get("weight")
    if not _is_num(weight) or not math.isfinite(weight) or weight <= 0:
      raise _fail("data.sources", sources, f"has entry {i} without a positive 'weight'", fix)
    unknown = sorted(k for k in entry if k not in ("weight", "name") and k not in data)
    if unknown:
      raise _fail("data.sources", sources, f"has entry {i} with unknown data fields {unknown}",
                  "use field names of config.data")
    fixed = sorted(k for k in entry if k in _MIXTURE_FIXED)
    if fixed:
      raise _fail("data.sources", sources, f"has entry {i} overriding {fixed}, which must be the "
                  "same for every source", "set them once in config.data")
    source = entry.get("source", _get(c, "data.source"))
    if source not in DATA_SOURCES:
      raise _fail("data.sources", sources, f"has entry {i} with unknown source {source!r}",
                  f"use one of {', '.join(DATA_SOURCES)}")
    if name in names:
      raise _fail("data.sources", sources, f"has two entries named {name!r}",
                  "give each a distinct 'name'")
    names.add(name)


def _check_data_path(c: Any) -> None:
  """Last, because it is the only check that touches the file system."""
  source, path = _get(c, "data.source"), _get(c, "data.path")
  if source in SYNTHETIC_SOURCES:
    return
  if not isinstance(path, str) or not path:
    what = {"tfds": "a TFDS dataset name, e.g. 'kinetics400'",
            "video_folder": "a folder of videos",
            "array_record": "an ArrayRecord file or shard pattern"}[source]
    raise _fail("data.path", path, f"is empty but data.source={source!r} needs {what}",
                "pass --config.data.path=...")
  if source == "tfds" or "://" in path:
    # TFDS names are not files, and remote URIs (gs://...) can only be checked by the reader
    # itself: stat-ing them here would need cloud credentials this module must not depend on.
    return
  pattern = any(ch in path for ch in "*?[")
  found = bool(glob.glob(path)) if pattern else os.path.exists(path)
  if not found:
    what = "matches no file" if pattern else "does not exist"
    raise _fail("data.path", path, f"{what} (data.source={source!r})",
                "pass an existing " + ("folder of videos" if source == "video_folder"
                                       else "ArrayRecord file or glob pattern") +
                " with --config.data.path=..., or use --config.data.source=moving_mnist")


def validate(config: Any, *, num_devices: int, process_count: int = 1) -> None:
  """Raises ConfigError for the first problem found; returns None for a valid config.

  `num_devices` is the global device count (jax.device_count()) the mesh will be built from and
  `process_count` the number of host processes, each loading batch_size / process_count clips.
  Cheap structural checks come first, cross-section ones next, the file system last.
  """
  if not isinstance(config, Mapping) and not hasattr(config, "__getitem__"):
    raise TypeError(f"validate() needs a ConfigDict, got {type(config).__name__}")
  _check_top_level(config)
  _check_model(config)
  grid = _token_grid(config)
  _check_masking(config, grid)
  _choice(config, "objective.pixel_norm", PIXEL_NORMS)
  _check_optimizer(config)
  _check_blockwise(config)
  _check_layerlock(config)
  _check_naive_latent(config)
  _check_vjepa(config)
  _check_mesh(config, num_devices, process_count)
  _check_data_fields(config)
  _check_data_sources(config)
  _check_data_path(config)
