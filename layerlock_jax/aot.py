"""Compile-only memory and FLOP plan: will a config fit a target mesh, before renting the pod?

  python -m layerlock_jax.aot --config=configs/vit4b.py --topology=v5p:4x4x8 [--num_slices=2]
  python -m layerlock_jax.aot --config=configs/vit_l.py --topology=v5p:2x2x1 --fit
  python -m layerlock_jax.aot --config=configs/vit4b.py --num_devices=256 --accelerator=v5e
  python -m layerlock_jax.aot --config=configs/vit4b.py --num_devices=64 --config.mesh.fsdp=-1 \
      --accelerator=h100 --stages=all --json=/tmp/plan.json

With --topology (needs libtpu: `pip install -e .[tpu]`): the same program is compiled by the real
TPU compiler for compile-only devices of that slice (layerlock_jax/compile_targets/tpu.py); --num_slices
adds slices joined over DCN, which the mesh's data axis spans. It reports, per chip, the compiler's
memory analysis (arguments, temporaries, outputs, total against HBM), its FLOPs and bytes accessed,
and a roofline lower bound on step time with the MFU that bound allows (a bound, not a
measurement). A program the compiler refuses for HBM is one line: stage, bytes asked, HBM.
--fit searches the batch (and --fit_remat / --fit_meshes) for the largest run that fits
(layerlock_jax/compile_targets/fit.py).

Without --topology, an XLA:CPU estimate: it fakes `--num_devices` CPU devices on this machine,
builds the run's mesh and shardings exactly as training does (layerlock_jax.trainer.Trainer),
describes the train state with `jax.eval_shape` + `ShapeDtypeStruct(..., sharding=...)` (no parameter is ever allocated), and
ahead-of-time compiles the real train step of each freeze stage for that mesh. XLA's
`memory_analysis()` of the partitioned program is per device, which is the number that has to fit.

Per device and stage it prints: parameters (trainable + frozen), optimizer state, the batch,
XLA temporaries (activations kept for backward, gradients, collective buffers), and the total
live at the peak = arguments + temporaries + non-aliased outputs (the state is donated, so new
parameters overwrite old ones). Plus the analytic FLOPs of a step (layerlock_jax/flops.py; XLA's
own count sees a scanned layer stack once) and the step time that would take at the chip's peak.

Which stages: every freeze stage compiles its own program, but programs of the same kind differ
only in how the stack is cut, so memory moves monotonically with k inside a kind. By default the
first and last k of each kind are compiled (plain MAE: k=0; LayerLock: k=0, the first latent
stage k=1, the deepest k); --stages=all compiles every distinct stage, --stages=0,5 chosen ones.

Caveats (read numbers as a plan, not a promise): XLA:CPU schedules and fuses differently from the
TPU/GPU compilers and may keep bfloat16 temporaries in float32, so temporaries are usually an
over-estimate; the parameter and optimizer bytes are exact. Runtime reserves and fragmentation are
covered by --headroom (default 5% of HBM).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

from layerlock_jax import hardware
from layerlock_jax.compile_targets import tpu as tpu_compile
from layerlock_jax.hardware import ACCELERATORS, GIB
from layerlock_jax import plan as plan_lib
from layerlock_jax.plan import options


@dataclasses.dataclass
class StagePlan:
  """Per-device bytes and per-step FLOPs of one compiled freeze stage."""
  frozen_layers: int
  target: str
  trainable_params: int          # parameter count the optimizer updates
  param_bytes: int               # trainable + frozen parameters held by one device
  opt_state_bytes: int
  batch_bytes: int
  argument_bytes: int            # XLA: all inputs of the step (state + batch)
  output_bytes: int
  alias_bytes: int               # outputs written in place of donated inputs
  temp_bytes: int                # XLA temporaries
  total_bytes: int               # arguments + temporaries + outputs not aliased to inputs
  model_flops: int               # global, per step (MFU numerator)
  hardware_flops: int            # model_flops + remat recompute
  compile_seconds: float
  # The compiler's cost analysis, per device (a rolled scan's body is counted once: lower bounds).
  compiled_flops: float | None = None
  compiled_bytes_accessed: float | None = None


def device_bytes(tree, device) -> int:
  """Bytes of `tree`'s abstract arrays that live on `device` (one shard per leaf)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  total = 0
  for leaf in jax.tree.leaves(tree):
    sharding = leaf.sharding
    if device not in sharding.device_set:
      continue
    total += math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
  return total


def stage_specs(trainer, which: str = "ends"):
  """The distinct StageSpecs of the run's freeze table to compile (see the module docstring)."""
  distinct = []
  for stage in trainer.table:
    spec = plan_lib.stage_spec(trainer.config, stage.frozen_layers, stage.target)
    if spec not in distinct:
      distinct.append(spec)
  if which == "all":
    return distinct
  if which == "ends":
    kinds = {}
    for spec in distinct:
      kinds.setdefault((spec.latent, spec.pixel_loss), []).append(spec)
    chosen = set()
    for group in kinds.values():
      chosen.add(min(group, key=lambda s: s.frozen_layers))
      chosen.add(max(group, key=lambda s: s.frozen_layers))
    return [s for s in distinct if s in chosen]
  wanted = {int(k) for k in which.split(",")}
  picked = [s for s in distinct if s.frozen_layers in wanted]
  missing = wanted - {s.frozen_layers for s in picked}
  if missing:
    raise ValueError(f"--stages: no freeze stage with k in {sorted(missing)}; the schedule has "
                     f"k = {sorted({s.frozen_layers for s in distinct})}")
  return picked


def abstract_video(trainer):
  """The batch as the step sees it: a global uint8 array split over the batch axes."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  d = trainer.config.data
  shape = (trainer.config.batch_size, d.num_frames, d.image_size, d.image_size, 3)
  return jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=trainer.video_sharding)


def plan_stage(trainer, spec) -> StagePlan:
  """AOT-compile the train step of one stage on abstract inputs and measure it."""
  import jax  # pylint: disable=g-import-not-at-top
  from layerlock_jax import flops  # pylint: disable=g-import-not-at-top
  from layerlock_jax.trainer import memory_rows  # pylint: disable=g-import-not-at-top
  state = trainer.abstract_state(spec)
  video = abstract_video(trainer)
  start = time.perf_counter()
  # The very program training runs: same function, shardings and donation (Trainer.step_fn).
  compiled = trainer.step_fn(spec, state, video)
  seconds = time.perf_counter() - start
  mem = memory_rows(compiled)
  device = trainer.mesh.devices.flat[0]
  step = flops.step_flops(trainer.config, spec)
  total = (mem["argument_bytes"] + mem["temp_bytes"] + mem["output_bytes"] - mem["alias_bytes"])
  return StagePlan(
      frozen_layers=spec.frozen_layers, target=spec.target,
      trainable_params=sum(int(x.size) for x in jax.tree.leaves(state.params)),
      param_bytes=device_bytes((state.params, state.frozen, state.teacher), device),
      opt_state_bytes=device_bytes(state.opt_state, device),
      batch_bytes=device_bytes(video, device),
      argument_bytes=mem["argument_bytes"], output_bytes=mem["output_bytes"],
      alias_bytes=mem["alias_bytes"], temp_bytes=mem["temp_bytes"],
      total_bytes=int(total), model_flops=int(step["model_flops"]),
      hardware_flops=int(step["hardware_flops"]), compile_seconds=seconds,
      **tpu_compile.compiled_cost(compiled))


def plan_stages(trainer, specs) -> list[dict]:
  """plan_stage of each spec as a dict; a stage the TPU compiler refuses for HBM becomes
  {"frozen_layers", "target", "refused": {"asked_bytes", "hbm_bytes", ...}, "compile_seconds"}."""
  rows = []
  for spec in specs:
    start = time.perf_counter()
    try:
      rows.append(dataclasses.asdict(plan_stage(trainer, spec)))
    except Exception as err:  # pylint: disable=broad-except
      refusal = tpu_compile.hbm_refusal(err)
      if refusal is None:
        raise
      rows.append({"frozen_layers": spec.frozen_layers, "target": spec.target,
                   "refused": refusal, "compile_seconds": time.perf_counter() - start})
  return rows


def replicated_params(trainer, top: int = 3) -> tuple[int, list[tuple[str, int]]]:
  """Bytes of parameters every device holds whole (no mesh axis splits them), and the largest.

  On a big mesh these are what stops per-device memory from shrinking as devices are added:
  usually a dimension the mesh size does not divide, or a logical axis no rule maps.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  leaves = jax.tree_util.tree_flatten_with_path(trainer.abstract_params)[0]
  shardings = jax.tree.leaves(trainer.param_shardings)
  found = []
  for (path, leaf), sharding in zip(leaves, shardings):
    if sharding.is_fully_replicated and trainer.mesh.devices.size > 1:
      name = "/".join(str(getattr(k, "key", k)) for k in path)
      found.append((name, int(leaf.size) * np.dtype(leaf.dtype).itemsize))
  found.sort(key=lambda item: -item[1])
  return sum(b for _, b in found), found[:top]


def plan(config, devices=None, stages: str = "ends", trainer=None) -> dict:
  """The whole plan as a JSON-able dict (what the CLI prints and --json writes). A `trainer`
  (Trainer of this config, scan_unroll already set) is used instead of a new one, and keeps the
  compiled programs."""
  from layerlock_jax.models import video_mae  # pylint: disable=g-import-not-at-top
  from layerlock_jax.trainer import Trainer  # pylint: disable=g-import-not-at-top
  if not config.model.scan_unroll:
    # "auto" would unroll here (the fake devices are CPUs); the accelerator runs it rolled.
    config = config.copy_and_resolve_references()
    config.model.scan_unroll = video_mae.resolve_scan_unroll(0, platform="accelerator")
  trainer = trainer or Trainer(config, devices)
  num_devices = trainer.mesh.devices.size
  replicated_bytes, largest = replicated_params(trainer)
  return {
      "num_devices": int(num_devices),
      "mesh": {k: int(v) for k, v in trainer.mesh.shape.items()},
      "preset": config.mesh.preset,
      "remat_policy": config.model.remat_policy,
      "scan_unroll": int(config.model.scan_unroll),
      "dtype": config.model.dtype,
      "batch_size": int(config.batch_size),
      "grad_accum_steps": int(config.get("grad_accum_steps", 1)),
      "parameters": int(video_mae.count_params(trainer.boxed_abstract)),
      "replicated_param_bytes": replicated_bytes,
      "largest_replicated": largest,
      "stages": plan_stages(trainer, stage_specs(trainer, stages)),
  }


def fits(total_bytes: int, accelerator: str, headroom: float) -> bool:
  return total_bytes <= hardware.HBM_GIB[ACCELERATORS[accelerator]] * GIB * (1.0 - headroom)


def format_plan(result: dict, accelerator: str, headroom: float, config_name: str = "") -> str:
  kind = ACCELERATORS[accelerator]
  hbm_gib = hardware.HBM_GIB[kind]
  dtype = "bfloat16" if result["dtype"] == "bfloat16" else "float32"
  peak = hardware.PEAK_FLOPS[kind][dtype]
  n = result["num_devices"]
  mesh = " x ".join(f"{k}={v}" for k, v in result["mesh"].items())
  gib = lambda b: f"{b / GIB:8.3f}"
  lines = [
      f"plan {config_name}: {result['parameters']:,} parameters "
      f"({result['parameters'] / 1e9:.2f}B)",
      f"mesh {mesh} ({n} devices), preset {result['preset']}, remat {result['remat_policy']}, "
      f"compute {result['dtype']}, global batch {result['batch_size']} "
      f"({result['batch_size'] / n:g} clips/device"
      + (f" in {result['grad_accum_steps']} micro-batches: temps are one micro-batch's"
         if result.get("grad_accum_steps", 1) > 1 else "") + ")",
      f"target {accelerator}: {hbm_gib} GiB HBM per device, fits = total <= "
      f"{(1 - headroom) * hbm_gib:.1f} GiB ({headroom:.0%} headroom); peak {peak / 1e12:.0f} "
      f"TFLOP/s {dtype}",
      "",
      "XLA:CPU estimate (XLA:CPU fuses and schedules differently from the target's compiler; "
      "use --topology for the TPU compiler's own numbers)",
      "per device, GiB:   k  params   opt_st    batch    temps    total  fits  | per step: "
      "model TFLOP  hw TFLOP  at-peak s  compile s",
  ]
  for s in result["stages"]:
    ok = "yes" if fits(s["total_bytes"], accelerator, headroom) else "NO"
    ideal = s["hardware_flops"] / (n * peak)
    lines.append(
        f"  {s['target'][:14]:<14} {s['frozen_layers']:>3} {gib(s['param_bytes'])} "
        f"{gib(s['opt_state_bytes'])} {gib(s['batch_bytes'])} {gib(s['temp_bytes'])} "
        f"{gib(s['total_bytes'])}  {ok:<4}  | {s['model_flops'] / 1e12:16.1f} "
        f"{s['hardware_flops'] / 1e12:9.1f} {ideal:10.3f} {s['compile_seconds']:10.1f}")
  if result["replicated_param_bytes"]:
    names = ", ".join(f"{name} {b / 2**20:.1f} MiB" for name, b in result["largest_replicated"])
    lines.append(f"replicated on every device: {result['replicated_param_bytes'] / 2**20:.1f} MiB "
                 f"of parameters (largest: {names})")
  worst = max(result["stages"], key=lambda s: s["total_bytes"])
  verdict = "fits" if fits(worst["total_bytes"], accelerator, headroom) else "does NOT fit"
  lines.append(f"peak stage k={worst['frozen_layers']}: {worst['total_bytes'] / GIB:.3f} GiB per "
               f"device -> {verdict} on {accelerator}")
  return "\n".join(lines)


def tpu_verdicts(result: dict, kind: str, headroom: float) -> None:
  """Adds fits / roofline to every compiled stage of a TPU-compiler plan (in place)."""
  n = result["num_devices"]
  hbm = hardware.HBM_GIB[kind] * GIB
  for s in result["stages"]:
    if "refused" in s:
      s["fits"] = False
      continue
    s["fits"] = s["total_bytes"] <= hbm * (1.0 - headroom)
    # FLOPs: the analytic count (remat recompute included) unless the compiler counted more;
    # bytes: the compiler's count, which sees a scanned layer once (so the bound stays a bound).
    flops = max(s["hardware_flops"] / n, s["compiled_flops"] or 0.0)
    s["roofline"] = tpu_compile.roofline(kind, result["dtype"], flops,
                                         s["compiled_bytes_accessed"], s["model_flops"] / n)
  result["fits"] = all(s["fits"] for s in result["stages"])


def refusal_line(stage: dict, largest_batch: int | None = None) -> str:
  """One line for a stage the TPU compiler refused for HBM."""
  r = stage["refused"]
  asked = f"{r['asked']} ({r['asked_bytes']:,} bytes)" if r["asked_bytes"] else "more than HBM"
  hbm = f"{r['hbm']} ({r['hbm_bytes']:,} bytes)" if r["hbm_bytes"] else "the chip's HBM"
  line = (f"does not fit: stage k={stage['frozen_layers']} ({stage['target']}): the TPU compiler "
          f"asked for {asked} per chip for {r['what']}; available HBM {hbm}")
  if largest_batch is not None:
    line += f"; the largest batch that fitted (--fit) is {largest_batch}"
  return line


def format_tpu_plan(result: dict, topology: str, num_slices: int, headroom: float,
                    config_name: str = "") -> str:
  kind = tpu_compile.chip_kind(topology)
  hbm_gib = hardware.HBM_GIB[kind]
  n = result["num_devices"]
  mesh = " x ".join(f"{k}={v}" for k, v in result["mesh"].items())
  peak = hardware.PEAK_FLOPS[kind][hardware.peak_dtype(result["dtype"])]
  gib = lambda b: f"{b / GIB:7.3f}"
  slices = f" x {num_slices} slices (DCN data axis)" if num_slices > 1 else ""
  lines = [
      f"plan {config_name}: {result['parameters']:,} parameters "
      f"({result['parameters'] / 1e9:.2f}B), compiled by the TPU compiler (libtpu) for "
      f"{topology}{slices}: {n} compile-only chips",
      f"mesh {mesh}, preset {result['preset']}, remat {result['remat_policy']}, compute "
      f"{result['dtype']}, global batch {result['batch_size']} ({result['batch_size'] / n:g} "
      f"clips/chip)",
      f"{kind}: {hbm_gib} GiB HBM, fits = total <= {(1 - headroom) * hbm_gib:.1f} GiB "
      f"({headroom:.0%} headroom); peak {peak / 1e12:.0f} TFLOP/s, HBM "
      f"{hardware.HBM_BANDWIDTH[kind] / 1e9:.0f} GB/s (hardware.py)",
      "",
      "per chip, GiB:      k    args   temps outputs  total  fits | compiled: GFLOP  GB acc. | "
      "roofline BOUND: step ms  by       MFU<= | compile s",
  ]
  for s in result["stages"]:
    if "refused" in s:
      lines.append("  " + refusal_line(s, result.get("largest_fitting_batch")))
      continue
    r = s["roofline"]
    out = s["output_bytes"] - s["alias_bytes"]
    lines.append(
        f"  {s['target'][:14]:<14} {s['frozen_layers']:>3} {gib(s['argument_bytes'])} "
        f"{gib(s['temp_bytes'])} {gib(out)} {gib(s['total_bytes'])}  "
        f"{'yes' if s['fits'] else 'NO':<4} | {(s['compiled_flops'] or 0) / 1e9:14.1f} "
        f"{(s['compiled_bytes_accessed'] or 0) / 1e9:8.2f} | {r['bound_seconds'] * 1e3:21.2f}  "
        f"{r['bound_by'][:7]:<7} {r['mfu_bound']:6.1%} | {s['compile_seconds']:9.1f}")
  lines.append("outputs = outputs not aliased to donated inputs; total = args + temps + outputs. "
               "Compiled FLOPs/bytes count a rolled layer scan once; the roofline bound (FLOPs at "
               "peak vs bytes at HBM bandwidth, the larger) is a lower bound on step time, and "
               "MFU<= the most a step could reach: bounds, not measurements.")
  verdict = "fits" if result["fits"] else "does NOT fit"
  lines.append(f"{topology}{slices}: {verdict}")
  return "\n".join(lines)


def fit(config, devices, target: dict, kind: str, headroom: float, stages: str, meshes: str,
        policies: str, cache_path: str, max_batch_per_chip: int, max_compiles: int,
        process_count: int = 1):
  """--fit: the search of fit_search over meshes x remat policies; (points, choice, text)."""
  from layerlock_jax.config import validation as config_validation  # pylint: disable=g-import-not-at-top
  from layerlock_jax.compile_targets import fit as fit_search  # pylint: disable=g-import-not-at-top
  cache = fit_search.Cache(cache_path)
  limit = int(hardware.HBM_GIB[kind] * GIB * (1.0 - headroom))
  n = len(devices)
  names = ([config.model.remat_policy] if policies in ("", "config")
           else [p.strip() for p in policies.split(",")])
  for name in names:
    if name not in fit_search.RECOMPUTE_ORDER:
      raise ValueError(f"--fit_remat: {name!r} is not one of "
                       f"{', '.join(fit_search.RECOMPUTE_ORDER)}")
  points = []
  for mesh in fit_search.parse_meshes(meshes, config):
    data, fsdp, _ = config_validation.resolve_mesh_shape(
        dict(zip(options.MESH_AXES, mesh)), n)
    unit = data * fsdp  # the batch-parallel size: the batch grows in whole clips per shard
    for policy in names:
      def evaluate(batch, mesh=mesh, policy=policy):
        c = fit_search.candidate_config(config, mesh, policy, batch)
        try:
          config_validation.validate(c, num_devices=n, process_count=process_count)
        except plan.ConfigError as err:
          return fit_search.Point(mesh, policy, batch, None, None, None, False, None, None,
                                  False, note=plan.format_error(err))
        key = fit_search.cache_key(c, target, stages)
        rows = cache.get(key)
        cached = rows is not None
        if not cached:
          rows = plan(c, devices, stages)["stages"]
          cache.put(key, rows)
        return fit_search.point_from_rows(mesh, policy, batch, rows, limit, n, cached)
      points += fit_search.search_batch(evaluate, int(config.batch_size), unit, limit,
                                        max_batch_per_chip * unit, max_compiles)
  choice = fit_search.choose(points)
  return points, choice, fit_search.format_frontier(points, limit, choice)


def _run_fit(config, devices, target: dict, kind: str) -> int | None:
  """Runs --fit and prints its frontier; the largest fitting batch of the config's own mesh and
  policy (for the refusal line), or None."""
  try:
    points, choice, text = fit(config, devices, target, kind, _HEADROOM.value, _STAGES.value,
                               _FIT_MESHES.value, _FIT_REMAT.value, _FIT_CACHE.value,
                               _FIT_MAX_BATCH.value, _FIT_MAX_COMPILES.value,
                               _NUM_PROCESSES.value)
  except ValueError as err:
    _fail(f"error: {err}")
  own = [p.batch_size for p in points if p.fits and p.remat_policy == config.model.remat_policy]
  largest = max(own) if own else None
  asked = [p for p in points if p.batch_size == config.batch_size and not p.fits
           and p.remat_policy == config.model.remat_policy]
  if asked:
    p = asked[0]
    how = (f"the TPU compiler asked for {p.asked_bytes / GIB:.2f} GiB per chip of temporaries"
           if p.asked_bytes else f"{(p.peak_bytes or 0) / GIB:.2f} GiB per chip" if p.peak_bytes
           else p.note)
    print(f"does not fit at batch {config.batch_size}: {how}; the largest batch that fitted "
          f"(--fit) is {largest}")
  print(text)
  if choice is None:
    sys.exit(1)
  return largest


def _tpu_main(config, topology: str, num_slices: int):
  """--topology: compile every distinct stage on compile-only TPU devices (the TPU compiler)."""
  import jax  # pylint: disable=g-import-not-at-top
  # The program runs nowhere: CPU stays the default backend; the TPU devices are compile-only.
  jax.config.update("jax_platforms", "cpu")
  # JAX's persistent cache writes compile-only executables but cannot load them back (that needs
  # a TPU client): it would only fill the disk.
  jax.config.update("jax_enable_compilation_cache", False)
  from layerlock_jax.config import validation as config_validation  # pylint: disable=g-import-not-at-top
  n = tpu_compile.num_chips(topology, num_slices)
  try:
    config_validation.validate(config, num_devices=n, process_count=_NUM_PROCESSES.value)
  except plan.ConfigError as err:
    _fail(plan.format_error(err))
  try:
    devices = tpu_compile.compile_only_devices(topology, num_slices)
  except tpu_compile.TopologyError as err:
    _fail(str(err))
  kind = tpu_compile.chip_kind(topology)
  if _FIT.value:
    _run_fit(config, devices, {"topology": topology, "num_slices": num_slices}, kind)
    return
  start = time.perf_counter()
  try:
    result = plan(config, devices, _STAGES.value)
  except (ValueError, plan.ConfigError) as err:
    _fail(f"error: {err}")
  result.update(topology=topology, num_slices=num_slices, compiler="tpu",
                seconds=time.perf_counter() - start)
  tpu_verdicts(result, kind, _HEADROOM.value)
  if all("refused" in s for s in result["stages"]):
    # Nothing compiled: the refusal is the whole answer, one line a stage.
    for s in result["stages"]:
      print(refusal_line(s, result.get("largest_fitting_batch")))
  else:
    print(format_tpu_plan(result, topology, num_slices, _HEADROOM.value, _config_name()))
    print(f"planned in {result['seconds']:.1f}s")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=2)
  if not result["fits"]:
    sys.exit(1)


def _main(argv):
  """CLI body; runs under absl.app after flags are parsed."""
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if config is None:
    _fail("--config is required, e.g. --config=configs/vit4b.py")
  if _TOPOLOGY.value:
    try:
      tpu_compile.parse_topology(_TOPOLOGY.value)
    except tpu_compile.TopologyError as err:
      _fail(str(err))
    return _tpu_main(config, _TOPOLOGY.value, _NUM_SLICES.value)
  if _NUM_SLICES.value != 1:
    _fail("--num_slices needs --topology (multi-slice is a TPU layout)")
  if _ACCELERATOR.value not in ACCELERATORS:
    _fail(f"--accelerator={_ACCELERATOR.value!r}: use one of {', '.join(ACCELERATORS)}")
  num_devices = _NUM_DEVICES.value
  # Must precede every backend use: the device count is fixed when the CPU client starts.
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", num_devices)
  from layerlock_jax.config import validation as config_validation  # pylint: disable=g-import-not-at-top
  try:
    config_validation.validate(config, num_devices=num_devices,
                               process_count=_NUM_PROCESSES.value)
  except plan_lib.ConfigError as err:
    _fail(plan_lib.format_error(err))
  if _FIT.value:
    _run_fit(config, jax.devices()[:num_devices],
             {"xla_cpu_devices": num_devices, "accelerator": _ACCELERATOR.value},
             ACCELERATORS[_ACCELERATOR.value])
    return
  start = time.perf_counter()
  try:
    result = plan(config, jax.devices()[:num_devices], _STAGES.value)
  except ValueError as err:
    _fail(f"error: {err}")
  result["accelerator"] = _ACCELERATOR.value
  result["fits"] = all(fits(s["total_bytes"], _ACCELERATOR.value, _HEADROOM.value)
                       for s in result["stages"])
  result["seconds"] = time.perf_counter() - start
  print(format_plan(result, _ACCELERATOR.value, _HEADROOM.value, _config_name()))
  print(f"planned in {result['seconds']:.1f}s")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=2)


def _config_name() -> str:
  for arg in sys.argv[1:]:
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
  return ""


def _fail(message: str):
  print(message, file=sys.stderr)
  sys.exit(2)


# XLA:CPU flags for a plan: the memory numbers come from HLO passes and buffer assignment, which
# these leave alone; what they skip is LLVM optimising machine code that is never run (about half
# of the compile time of a 4B step; the tests check the numbers against a default compile).
FAST_COMPILE_XLA_FLAGS = ("--xla_backend_optimization_level=0",
                          "--xla_llvm_disable_expensive_passes=true")

if __name__ == "__main__":
  import os  # pylint: disable=g-import-not-at-top
  # Before JAX starts: XLA reads XLA_FLAGS once, when the backend is created.
  os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""),
                                      *FAST_COMPILE_XLA_FLAGS]).strip()
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file to plan, e.g. "
                                            "configs/vit4b.py; --config.a.b=value overrides.",
                                            lock_config=True)
  _NUM_DEVICES = flags.DEFINE_integer("num_devices", 8, "Devices of the target mesh (e.g. 256 "
                                      "for a v5e-256 slice); faked as CPU devices here.",
                                      lower_bound=1)
  _NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Hosts of the target (only checked: "
                                        "the batch must split evenly over them).", lower_bound=1)
  _ACCELERATOR = flags.DEFINE_string("accelerator", "v5e",
                                     f"Memory/peak table entry: {', '.join(ACCELERATORS)}.")
  _STAGES = flags.DEFINE_string("stages", "ends", "ends: first and last k of each stage kind; "
                                "all: every distinct freeze stage; or a list of k, e.g. 0,34.")
  _HEADROOM = flags.DEFINE_float("headroom", 0.05, "Fraction of HBM kept free for the runtime "
                                 "and fragmentation when judging fit.", lower_bound=0.0,
                                 upper_bound=0.9)
  _JSON = flags.DEFINE_string("json", "", "Also write the plan as JSON to this file.")
  _TOPOLOGY = flags.DEFINE_string("topology", "", "Compile on the TPU compiler for this slice "
                                  "(needs libtpu: pip install -e '.[tpu]'), e.g. v5e:2x2, "
                                  "v5p:4x4x8, v6e:16x16; replaces --num_devices/--accelerator.")
  _FIT = flags.DEFINE_bool("fit", False, "Search the global batch (and --fit_remat policies, "
                           "--fit_meshes splits) for the largest run that fits HBM with "
                           "--headroom; print the frontier and the --config overrides chosen.")
  _FIT_REMAT = flags.DEFINE_string("fit_remat", "config", "--fit: remat policies to try, e.g. "
                                   "nothing_saveable,dots_saveable,none ('config': the config's).")
  _FIT_MESHES = flags.DEFINE_string("fit_meshes", "config", "--fit: mesh splits data,fsdp,tensor "
                                    "separated by ';', e.g. '-1,1,1;1,-1,1' ('config': the "
                                    "config's).")
  _FIT_CACHE = flags.DEFINE_string("fit_cache", os.path.expanduser(
      "~/.cache/layerlock_jax/aot_fit.json"), "--fit: compiled results, so a rerun compiles "
      "nothing.")
  _FIT_MAX_BATCH = flags.DEFINE_integer("fit_max_batch", 1024, "--fit: most clips per batch "
                                        "shard to try.", lower_bound=1)
  _FIT_MAX_COMPILES = flags.DEFINE_integer("fit_max_compiles", 6, "--fit: compiles per (mesh, "
                                           "policy) search.", lower_bound=1)
  _NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "With --topology: this many slices joined "
                                     "over DCN; the mesh's data axis spans them.", lower_bound=1)
  from layerlock_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(_main)
