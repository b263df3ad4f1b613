"""Compile-only memory and FLOP plan: will a config fit a target mesh, before renting the pod?

  python -m layerlock_jax.aot --config=configs/vit4b.py --num_devices=256 --accelerator=v5e
  python -m layerlock_jax.aot --config=configs/vit4b.py --num_devices=64 --config.mesh.fsdp=-1 \
      --accelerator=h100 --stages=all --json=/tmp/plan.json

What it does: fakes `--num_devices` CPU devices on this machine, builds the run's mesh and
shardings exactly as training does (layerlock_jax.trainer.Trainer), describes the train state
with `jax.eval_shape` + `ShapeDtypeStruct(..., sharding=...)` (no parameter is ever allocated), and
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
from layerlock_jax.hardware import ACCELERATORS, GIB
from layerlock_jax import plan as plan_lib


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


def _device_bytes(tree, device) -> int:
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
      param_bytes=_device_bytes((state.params, state.frozen, state.teacher), device),
      opt_state_bytes=_device_bytes(state.opt_state, device),
      batch_bytes=_device_bytes(video, device),
      argument_bytes=mem["argument_bytes"], output_bytes=mem["output_bytes"],
      alias_bytes=mem["alias_bytes"], temp_bytes=mem["temp_bytes"],
      total_bytes=int(total), model_flops=int(step["model_flops"]),
      hardware_flops=int(step["hardware_flops"]), compile_seconds=seconds)


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


def plan(config, devices=None, stages: str = "ends") -> dict:
  """The whole plan as a JSON-able dict (what the CLI prints and --json writes)."""
  from layerlock_jax.models import video_mae  # pylint: disable=g-import-not-at-top
  from layerlock_jax.trainer import Trainer  # pylint: disable=g-import-not-at-top
  if not config.model.scan_unroll:
    # "auto" would unroll here (the fake devices are CPUs); the accelerator runs it rolled.
    config = config.copy_and_resolve_references()
    config.model.scan_unroll = video_mae.resolve_scan_unroll(0, platform="accelerator")
  trainer = Trainer(config, devices)
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
      "stages": [dataclasses.asdict(plan_stage(trainer, spec))
                 for spec in stage_specs(trainer, stages)],
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


def _main(argv):
  """CLI body; runs under absl.app after flags are parsed."""
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if config is None:
    _fail("--config is required, e.g. --config=configs/vit4b.py")
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
  from layerlock_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(_main)
