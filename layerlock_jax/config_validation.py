"""Rejects a bad config in milliseconds, before JAX initialises or anything compiles.

A wrong config on a pod otherwise surfaces as a shape error deep inside a jitted function, an XLA
sharding complaint, or - worst - a run that trains the wrong thing for hours (a LayerLock schedule
that never freezes, a mesh that leaves devices idle). `validate()` checks every field against the
schema in `config_defaults.py` and every cross-field constraint we know of, and raises the FIRST
problem as a `ConfigError` whose `.field` is the dotted path (`config.model.num_heads`) and whose
message is one line naming the bad value and the flag that fixes it. The entry point prints
`format_error(err)` and exits with status 2 (the usual "bad usage" code), so scripts can tell a
config mistake from a crash.

The rules that derive a run from its config (mask counts, the freeze table, blockwise groups and
budgets) live in layerlock_jax/plan, which raises the same `ConfigError` when a run derives them;
this module runs those derivations early and checks the remaining fields itself.

This module is pure Python on purpose: it must run before `jax.distributed.initialize()` and in
launch scripts that never import JAX, so the device count is passed in rather than queried.
"""
from __future__ import annotations

import glob
import math
import os
from collections.abc import Mapping
from typing import Any

from layerlock_jax import config_defaults
from layerlock_jax import host_memory
from layerlock_jax import plan
from layerlock_jax.plan import options
# The checked readers and the error type live with the plan, which raises the same errors while
# deriving a run; they are re-exported here because this is where users meet them.
from layerlock_jax.plan.fields import ConfigError, format_error  # pylint: disable=unused-import
from layerlock_jax.plan.fields import EPS as _EPS
from layerlock_jax.plan.fields import choice as _choice
from layerlock_jax.plan.fields import divisors_near as _divisors_near
from layerlock_jax.plan.fields import fail as _fail
from layerlock_jax.plan.fields import get as _get
from layerlock_jax.plan.fields import integer as _int
from layerlock_jax.plan.fields import is_int as _is_int
from layerlock_jax.plan.fields import is_num as _is_num
from layerlock_jax.plan.fields import is_seq as _is_seq
from layerlock_jax.plan.fields import number as _num

MESH_AXES = options.MESH_AXES


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
  _choice(c, "host_malloc", host_memory.MODES)
  if _get(c, "fork_from") and _get(c, "init_from"):
    raise _fail("fork_from", _get(c, "fork_from"), "is set together with init_from",
                "fork_from continues another run's whole state, init_from starts from its "
                "parameters only: set one")
  steps = _get(c, "profile_steps")
  if steps and not (_is_seq(steps) and len(steps) == 2
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
  if (not _is_seq(patch) or len(patch) != 3
      or not all(_is_int(p) and p >= 1 for p in patch)):
    raise _fail("model.patch_size", patch, "is not 3 positive integers (time, height, width)",
                "pass e.g. --config.model.patch_size='(2, 16, 16)'")

  posemb = _choice(c, "model.posemb", options.POSEMBS)
  placement = _choice(c, "model.rope_placement", options.ROPE_PLACEMENTS)
  fractions = _get(c, "model.rope_fractions")
  if (not _is_seq(fractions) or len(fractions) != 3
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
    sections = plan.rope_sections(dim, fractions)
    for axis, f, rotated in zip(("time", "height", "width"), fractions, sections):
      # A rotation acts on feature pairs: a non-zero share that rounds below one pair is a typo.
      if f > 0 and rotated < 2:
        raise _fail("model.rope_fractions", tuple(fractions),
                    f"rotates {rotated} of {dim} {what} along {axis}; each "
                    "rotated part needs >= 2 (one pair)",
                    f"raise the {axis} share to >= {2 / dim:.3g} or set it to 0")

  _num(c, "model.layer_norm_eps", 0, lo_open=True)
  for name, positive in (("model.input_mean", False), ("model.input_std", True)):
    value = _get(c, name)
    if (not _is_seq(value) or len(value) != 3
        or not all(_is_num(v) and (v > 0 or not positive) for v in value)):
      raise _fail(name, value, f"is not 3 {'positive ' if positive else ''}numbers (R, G, B)",
                  f"pass e.g. --config.{name}='(0.5, 0.5, 0.5)'")
  _choice(c, "model.dtype", options.DTYPES)
  _choice(c, "model.remat_policy", options.REMAT_POLICIES)
  _choice(c, "model.attention", options.ATTENTIONS)
  _choice(c, "model.attention_impl", options.ATTENTION_IMPLS)
  _int(c, "model.scan_unroll", lo=0)  # 0: auto (models/video_mae.py)
  _int(c, "model.decoder.scan_unroll", lo=1)

  dec_type = _choice(c, "model.decoder.type", options.DECODER_TYPES)
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
  _choice(c, "vjepa.loss", options.VJEPA_LOSSES)
  _choice(c, "vjepa.frozen_teacher", options.VJEPA_TEACHERS)
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


def _check_naive_latent(c: Any) -> None:
  if not _get(c, "naive_latent.enabled"):
    return
  enc = plan.encoder_depth(c)
  layer = _get(c, "naive_latent.layer")
  if layer != -1 and (not _is_int(layer) or not 1 <= layer <= enc):
    raise _fail("naive_latent.layer", layer, f"must be -1 (middle) or in [1, encoder depth={enc}]",
                f"pass e.g. --config.naive_latent.layer={max(enc // 2, 1)}")
  _num(c, "naive_latent.weight", 0)
  _choice(c, "naive_latent.weight_schedule", options.WEIGHT_SCHEDULES)
  _choice(c, "naive_latent.target_norm", options.TARGET_NORMS)


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
  if not _is_seq(rules):
    raise _fail("mesh.rules", rules, "is not a sequence of (logical_axis, mesh_axes) pairs",
                "pass e.g. --config.mesh.rules=\"(('mlp', 'tensor'),)\"")
  effective: dict[str, tuple[str, ...]] = {}
  for source, seq in (("rules", rules), ("preset", config_defaults.SHARDING_PRESETS[preset])):
    for i, rule in enumerate(seq):
      bad = None
      if (not _is_seq(rule) or len(rule) != 2
          or not isinstance(rule[0], str)):
        bad = "is not a (logical_axis, mesh_axes) pair"
      else:
        axes = rule[1]
        axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
        if (not _is_seq(axes)
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
  source = _choice(c, "data.source", options.DATA_SOURCES)
  if _get(c, "data.num_workers") != "auto":
    _int(c, "data.num_workers", lo=0)
  _int(c, "data.prefetch", lo=0)
  if _get(c, "data.read_threads") != "auto":
    _int(c, "data.read_threads", lo=1)
  _check_layout(c, source)
  if source in options.SYNTHETIC_SOURCES:
    batch = _get(c, "batch_size")
    clips = _get(c, "data.num_clips")
    if not _is_int(clips) or clips < batch:
      raise _fail("data.num_clips", clips, f"is smaller than batch_size={batch}, so one batch "
                  f"would repeat clips of the embedded {source!r} set",
                  f"pass --config.data.num_clips={batch} or more")


def _check_layout(c: Any, source: str) -> None:
  layout = _choice(c, "data.layout", options.DATA_LAYOUTS)
  if layout == "folder":
    return
  if source != "video_folder":
    raise _fail("data.layout", layout, f"needs data.source='video_folder', not {source!r}",
                "pass --config.data.source=video_folder")
  if _get(c, "data.labels_csv"):
    raise _fail("data.labels_csv", _get(c, "data.labels_csv"), f"is set with data.layout="
                f"{layout!r}, which takes its labels from the annotation files",
                "leave data.labels_csv empty")
  if not _get(c, "data.annotations"):
    raise _fail("data.annotations", "", f"is empty but data.layout={layout!r} reads the "
                "dataset's annotation files", "pass --config.data.annotations=PATH")
  _int(c, "data.split_id", lo=1, hi=3)


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
  if not _is_seq(sources):
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
    if source not in options.DATA_SOURCES:
      raise _fail("data.sources", sources, f"has entry {i} with unknown source {source!r}",
                  f"use one of {', '.join(options.DATA_SOURCES)}")
    if name in names:
      raise _fail("data.sources", sources, f"has two entries named {name!r}",
                  "give each a distinct 'name'")
    names.add(name)


def _check_data_path(c: Any) -> None:
  """Last, because it is the only check that touches the file system."""
  source, path = _get(c, "data.source"), _get(c, "data.path")
  if source in options.SYNTHETIC_SOURCES:
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
  if source == "video_folder" and _get(c, "data.layout") != "folder":
    from layerlock_jax.data import layouts  # pylint: disable=g-import-not-at-top
    try:  # reads the annotation files (both splits); no video is opened
      layouts.check(_get(c, "data"))
    except layouts.AnnotationError as e:
      raise ConfigError("config.data.annotations", str(e)) from None


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
  grid = plan.token_grid(config)
  plan.check_masking(config, grid)
  _choice(config, "objective.pixel_norm", options.PIXEL_NORMS)
  _check_optimizer(config)
  plan.segments.check_blockwise(config)
  plan.check_layerlock(config)
  _check_naive_latent(config)
  _check_vjepa(config)
  _check_mesh(config, num_devices, process_count)
  _check_data_fields(config)
  _check_data_sources(config)
  _check_data_path(config)
