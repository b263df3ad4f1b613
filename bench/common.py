"""The benchmarking library behind the commands of bench/ (bench/sweeps.py, freeze_bench.py, ...).

For one config, in ONE process, it measures the compiled train step of
layerlock_jax.trainer.Trainer (the program training runs, not a re-implementation):
  step time (median of timed steps after warm-up, each ended by jax.block_until_ready), clips/s,
  analytic FLOPs (layerlock_jax/flops.py), MFU, compiled memory per device (temp / argument /
  output bytes of `compiled.memory_analysis()`), compile time;
and the data loader's clips/s beside the step's consumption. Other frameworks are never timed here: a peer in the same process fights XLA for the
cores, so bench/torch_compare.py runs each framework in a process of its own.

Why variants are timed interleaved (`time_interleaved`): the 2-core machines this runs on are
shared, and background load drifts over minutes. Timing variant A for a minute and then variant B
would fold that drift into the A/B ratio; round-robin rounds (A, B, C, A, B, C, ...) spread it over
all variants alike, and medians drop the rounds a neighbour's burst hit.

Ratios are the product: absolute times depend on the machine and its load, ratios taken in one run
much less. Nothing here asserts a speed; tests assert behaviour.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import statistics
import sys
import time
from typing import Any, Callable

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from layerlock_jax.config import loading as config_loading
from layerlock_jax import flops
from layerlock_jax import hardware
from layerlock_jax import plan
from layerlock_jax import state as state_lib
from layerlock_jax.trainer import Trainer, memory_rows

MIB = 2 ** 20
DEFAULT_WARMUP, DEFAULT_STEPS, DEFAULT_ROUNDS = 1, 2, 3  # per variant: untimed, timed per round


# --- One measured variant ----------------------------------------------------------------------
@dataclasses.dataclass
class Variant:
  """A compiled step (or any callable step) plus what it is, ready to be timed."""
  group: str
  name: str
  row: dict                               # static facts: flops, memory, compile time, ...
  step: Callable[[], None]                # runs ONE step and waits for it
  compiled: Any = None                    # the jax Compiled, for HLO inspection
  times: list = dataclasses.field(default_factory=list)
  cpu_times: list = dataclasses.field(default_factory=list)

  def clone(self, group: str, name: str, **row_updates) -> "Variant":
    """The same compiled step under another group: re-timed with that group, never recompiled."""
    return Variant(group, name, {**self.row, "group": group, "variant": name, **row_updates},
                   self.step, self.compiled)


def random_video(config, seed: int = 0) -> np.ndarray:
  """uint8 clips (B, T, H, W, 3): the dtype the loader yields, so the step converts in-graph."""
  d = config.data
  return np.random.default_rng(seed).integers(
      0, 256, (config.batch_size, d.num_frames, d.image_size, d.image_size, 3), dtype=np.uint8)


def fresh_state(trainer: Trainer, full_params, spec) -> state_lib.TrainState:
  """The train state of `spec` from one full parameter tree, in the step's input shardings.

  Cheaper than Trainer.init_state per stage (that compiles an init per spec). Every leaf is
  COPIED: the compiled step donates its state, and a leaf shared with `full_params` (partition
  passes whole sub-trees through) would be deleted under the next variant built from it.
  """
  st = jax.tree.map(lambda x: jnp.array(x, copy=True), trainer.new_state(full_params, spec))
  return jax.device_put(st, trainer.state_shardings(spec))


def init_params(trainer: Trainer):
  return nn.unbox(jax.jit(trainer.model.init)(jax.random.key(trainer.config.seed)))


def build_variant(group: str, name: str, config, frozen_layers: int = 0, *,
                  trainer: Trainer | None = None, full_params=None,
                  peak: dict | None = None) -> Variant:
  """Compile the Trainer' step for (config, frozen_layers) and collect its static facts.

  `trainer` / `full_params` may be shared between variants of one config (the freeze sweep):
  one model init instead of one per k. `peak` caches the MFU denominator per dtype.
  """
  trainer = trainer or Trainer(config)
  if full_params is None:
    full_params = init_params(trainer)
  ll = config.layerlock
  latent = frozen_layers and ll.enabled and ll.target == "latent"
  target = f"block_{frozen_layers}" if latent else "pixels"
  spec = plan.stage_spec(config, frozen_layers, target)
  st = fresh_state(trainer, full_params, spec)
  video = jax.device_put(random_video(config), trainer.video_sharding)
  before = trainer.compile_seconds
  compiled = trainer.step_fn(spec, st, video)
  compile_s = trainer.compile_seconds - before
  mem = memory_rows(compiled)
  f = flops.step_flops(config, spec)
  devices = trainer.mesh.devices.size
  row = {
      "group": group, "variant": name, "frozen_layers": frozen_layers, "target": spec.target,
      "latent": spec.latent, "batch": config.batch_size, "dtype": config.model.dtype,
      "remat": config.model.remat_policy, "attention": config.model.attention,
      "devices": devices, "model_flops": f["model_flops"], "hardware_flops": f["hardware_flops"],
      "temp_bytes": mem["temp_bytes"], "argument_bytes": mem["argument_bytes"],
      "output_bytes": mem["output_bytes"],
      "compile_s": compile_s,
      "peak_flops_per_device": _peak(trainer.mesh.devices.flat[0], config.model.dtype, peak),
  }
  box = {"state": st}

  def step():
    box["state"], metrics = compiled(box["state"], video)
    jax.block_until_ready((box["state"], metrics))

  return Variant(group, name, row, step, compiled)


def _peak(device, dtype: str, cache: dict | None) -> float | None:
  """Datasheet peak on accelerators; on CPU what a large matmul achieves (hardware.py explains)."""
  cache = {} if cache is None else cache
  if dtype not in cache:
    value = hardware.device_peak_flops(device, dtype)
    if value is None and device.platform == "cpu":
      value = hardware.measure_cpu_peak_flops(dtype, n=2048, repeats=10)
    cache[dtype] = value
  return cache[dtype]


def scan_loops(hlo_text: str) -> dict[str, list[int]]:
  """Trip counts of the layer-scan while loops of a compiled step, split forward / backward.

  The check behind "the frozen prefix costs forward only": a k-block frozen prefix must show up
  as ONE forward loop of k trips and no backward (autodiff `transpose`) loop of k trips. RNG
  loops (threefry) are whiles too and are skipped by requiring the BlockStack op name.
  """
  loops = {"forward": [], "backward": []}
  for line in hlo_text.splitlines():
    if " while(" not in line:
      continue
    name = re.search(r'op_name="([^"]*)"', line)
    trips = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', line)
    if not name or "BlockStack" not in name.group(1):
      continue
    kind = "backward" if "transpose(" in name.group(1) else "forward"
    loops[kind].append(int(trips.group(1)) if trips else -1)
  return {k: sorted(v) for k, v in loops.items()}


# --- Timing ------------------------------------------------------------------------------------
def time_interleaved(variants: list[Variant], *, warmup: int, steps: int, rounds: int) -> None:
  """`warmup` untimed steps each, then `rounds` round-robin passes of `steps` timed steps each.

  Fills `variant.times` and finishes each row with its median step time, clips/s and MFU.
  """
  for v in variants:
    for _ in range(warmup):
      v.step()
  for _ in range(rounds):
    for v in variants:
      for _ in range(steps):
        start, cpu = time.perf_counter(), time.process_time()
        v.step()
        v.times.append(time.perf_counter() - start)
        v.cpu_times.append(time.process_time() - cpu)
  for v in variants:
    finish_row(v)


def finish_row(v: Variant) -> None:
  r = v.row
  r["step_s"] = statistics.median(v.times)
  r["step_s_min"] = min(v.times)
  # Process CPU seconds per step: less sensitive than wall time to neighbours on a shared
  # machine (though threads that spin while descheduled peers hold them up still count).
  r["cpu_s"] = statistics.median(v.cpu_times)
  r["timed_steps"] = len(v.times)
  r["clips_per_s"] = r["batch"] / r["step_s"]
  if r.get("model_flops"):
    peak = r.get("peak_flops_per_device")
    r["mfu"] = hardware.mfu(r["model_flops"], r["step_s"], peak and peak * r["devices"])
    r["achieved_tflops"] = r["model_flops"] / r["step_s"] / 1e12


# --- Sweeps ------------------------------------------------------------------------------------
def with_overrides(config, **fields):
  """A copy of `config` with dotted fields (`model__dtype="bfloat16"`) replaced."""
  return config_loading.override(copy.deepcopy(config),
                                 {k.replace("__", "."): v for k, v in fields.items()})


def add_freeze_savings(rows: list[dict]) -> None:
  """Analytic vs measured saving against the k=0 row of the same group, and their ratio.

  realized/theoretical = (1 - t_k / t_0) / (1 - F_k / F_0): 1.0 means the step got exactly as much
  faster as the FLOP model says it should; below 1, time is spent that the FLOPs do not explain.
  """
  base = {r["group"]: r for r in rows
          if r["group"].startswith("freeze") and r["frozen_layers"] == 0}
  for r in rows:
    b = base.get(r["group"])
    if b is None or "step_s" not in r:
      continue
    r["flops_saving"] = 1 - r["hardware_flops"] / b["hardware_flops"]
    r["time_saving"] = 1 - r["step_s"] / b["step_s"]
    # Negative savings (a latent stage costs MORE than k=0) give a meaningful ratio too:
    # "the extra cost is this fraction of the extra FLOPs".
    ok = abs(r["flops_saving"]) > 1e-9
    r["realized_over_theoretical"] = r["time_saving"] / r["flops_saving"] if ok else None
    # The same from process CPU seconds per step: on a shared machine wall time also holds the
    # time neighbours ran on "our" cores, CPU seconds mostly only the work this step did.
    r["cpu_saving"] = 1 - r["cpu_s"] / b["cpu_s"]
    r["realized_over_theoretical_cpu"] = r["cpu_saving"] / r["flops_saving"] if ok else None
    if r.get("temp_bytes") is not None and b.get("temp_bytes"):
      r["temp_vs_k0"] = r["temp_bytes"] / b["temp_bytes"]


def saving_fit(rows: list[dict], group: str, key: str = "time_saving") -> float | None:
  """Least-squares slope (through 0) of measured saving on analytic saving over a group's k.

  One number for "realized / theoretical" over the whole sweep. Per-k ratios divide two small
  numbers at small k (freezing 1 of 12 blocks saves ~6%), so a few points of timing noise swing
  them widely; the slope weights each k by its analytic saving and averages the noise out.
  """
  pts = [(r["flops_saving"], r[key]) for r in rows
         if r["group"] == group and r.get("flops_saving") and key in r]
  den = sum(f * f for f, _ in pts)
  return sum(f * t for f, t in pts) / den if den else None


def loader_throughput(config, *, batches: int) -> dict:
  """Clips/s of the grain pipeline alone (main process, nothing else running in this process)."""
  from layerlock_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  it = pipeline.make_train_iterator(config.data, seed=config.seed,
                                    global_batch_size=config.batch_size, process_index=0,
                                    process_count=1)
  next(it)  # the first batch pays for building the source and starting the read threads
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - start
  if hasattr(it, "close"):
    it.close()
  del it
  return {"group": "loader", "variant": config.data.source, "batch": config.batch_size,
          "batches": batches, "clips_per_s": batches * config.batch_size / seconds,
          "workers": config.data.num_workers}


# --- Reporting ---------------------------------------------------------------------------------
def _fmt(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)


def format_table(rows: list[dict]) -> str:
  """Fixed-width table of the measured rows (loader rows are printed separately).

  "step ms" is the median wall time per step, "cpu ms" the median process CPU time per step.
  """
  head = (f"{'group':<16}{'variant':<26}{'batch':>6}{'step ms':>10}{'cpu ms':>9}{'clips/s':>9}"
          f"{'GFLOP':>9}{'MFU%':>7}{'temp MiB':>10}{'arg MiB':>9}{'out MiB':>9}{'compile s':>10}")
  lines = [head, "-" * len(head)]
  for r in rows:
    if "step_s" not in r:
      continue
    mfu = r.get("mfu")
    lines.append(
        f"{r['group']:<16}{r['variant']:<26}{r['batch']:>6}{r['step_s'] * 1e3:>10.1f}"
        f"{r['cpu_s'] * 1e3:>9.1f}{r['clips_per_s']:>9.1f}{r['hardware_flops'] / 1e9:>9.2f}"
        f"{_fmt(None if mfu is None or mfu != mfu else 100 * mfu, '.1f'):>7}"
        f"{_fmt(r.get('temp_bytes') and r['temp_bytes'] / MIB, '.1f'):>10}"
        f"{_fmt(r.get('argument_bytes') and r['argument_bytes'] / MIB, '.1f'):>9}"
        f"{_fmt(r.get('output_bytes') and r['output_bytes'] / MIB, '.1f'):>9}"
        f"{r['compile_s']:>10.1f}")
  return "\n".join(lines)


def format_freeze_table(rows: list[dict]) -> str:
  """Per k: FLOPs, step time, temp memory, analytic vs measured saving and their ratio.

  Two measured savings: wall time (median step) and process CPU seconds (median), each with its
  realized/theoretical ratio; on a quiet machine they agree, on a loaded one trust the CPU one.
  """
  head = (f"{'group':<16}{'k':>3}{'GFLOP':>9}{'step ms':>10}{'temp MiB':>10}{'FLOP save':>11}"
          f"{'time save':>11}{'real/theo':>11}{'cpu save':>10}{'real/theo':>11}{'temp/k0':>9}")
  lines = [head, "-" * len(head)]
  for r in rows:
    if "flops_saving" not in r:
      continue
    lines.append(
        f"{r['group']:<16}{r['frozen_layers']:>3}{r['hardware_flops'] / 1e9:>9.2f}"
        f"{r['step_s'] * 1e3:>10.1f}{_fmt(r.get('temp_bytes') and r['temp_bytes'] / MIB, '.1f'):>10}"
        f"{100 * r['flops_saving']:>10.1f}%{100 * r['time_saving']:>10.1f}%"
        f"{_fmt(r['realized_over_theoretical'], '.2f'):>11}{100 * r['cpu_saving']:>9.1f}%"
        f"{_fmt(r['realized_over_theoretical_cpu'], '.2f'):>11}{_fmt(r.get('temp_vs_k0'), '.2f'):>9}")
  return "\n".join(lines)


def environment() -> dict:
  """What the numbers depend on, recorded next to them."""
  dev = jax.devices()[0]
  env = {"jax": jax.__version__, "platform": dev.platform, "device_kind": dev.device_kind,
         "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
         "python": sys.version.split()[0]}
  if hasattr(os, "getloadavg"):
    env["loadavg_start"] = os.getloadavg()
  return env


def write_json(result: dict, path: str) -> None:
  if path:
    with open(path, "w") as f:
      json.dump(result, f, indent=2, default=str)



# --- Command line ------------------------------------------------------------------------------
def define_timing_flags() -> None:
  """--warmup/--steps/--rounds/--out, shared by the scripts under bench/."""
  flags.DEFINE_integer("warmup", DEFAULT_WARMUP, "Untimed steps per variant.")
  flags.DEFINE_integer("steps", DEFAULT_STEPS, "Timed steps per variant per round.")
  flags.DEFINE_integer("rounds", DEFAULT_ROUNDS, "Round-robin timing rounds.")
  flags.DEFINE_string("out", "", "Write every row and the environment as JSON here.")
