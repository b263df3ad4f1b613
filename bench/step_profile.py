r"""Where the train step's time goes: compiled-HLO op census and a profiler's per-op time table.

  python bench/step_profile.py [--config=bench/cpu_configs.py:vit_s] [--steps=3] \
      [--trace_dir=/tmp/step_trace] [--top=25]

For the compiled Trainer step of one config (bench/common.py's build_variant: the program
training runs) it prints
  1. an op census of the optimised HLO: how many instructions of each kind (dot, fusion kinds,
     transpose, copy, gather, scatter, dynamic-(update-)slice, convert, reduce, while, ...) and the
     bytes they produce - the non-matmul work around the matmuls is what separates a step from
     the matmul peak;
  2. with --trace_dir, a jax.profiler trace of --steps steps and the per-op wall time summed over
     the trace's events (XLA:CPU records one event per executed op/fusion), as a share of the
     traced step time, split into dense matmuls, attention and everything else by the compiled
     HLO (bench/op_split.py; with more than one thread the events overlap: pin to one core,
     `taskset -c 0`, for times that add up);
  3. step time, process CPU time, MFU against a 2048^2 matmul measured in this process.
XLA:CPU flags can be tried by setting XLA_FLAGS before running (each run is its own process).
"""
import collections
import os
import re
import statistics
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.join(_ROOT, "bench"))  # op_split

from layerlock_jax import cli  # noqa: E402  pylint: disable=wrong-import-position

import op_split  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "bench", "cpu_configs.py") + ":vit_s", "Config to profile.",
    lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 3, "Timed (and traced) steps after 2 warm-up steps.")
_TRACE = flags.DEFINE_string("trace_dir", "", "Write a jax.profiler trace here and summarise it.")
_TOP = flags.DEFINE_integer("top", 25, "Rows of the per-op time table.")

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)\s+([\w\-]+)\(")
_FUSION_KIND = re.compile(r"kind=(k\w+)")
_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "u8": 1, "s8": 1, "pred": 1,
          "f64": 8, "s64": 8, "u64": 8}


def shape_bytes(shape: str) -> int:
  total = 0
  for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _BYTES.get(dtype, 4)
  return total


def hlo_census(hlo_text: str) -> dict[str, dict]:
  """opcode (fusions by kind) -> {count, bytes} over the unfused computations of the module."""
  census = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
  inside_fusion = False
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      # A computation header: ops inside fused computations never materialise their outputs,
      # so only ops of the entry, loop bodies and other unfused computations are counted.
      name = line.split()[1] if line.startswith("ENTRY") else line.split()[0]
      inside_fusion = "fus" in name or "wrapped" in name or "ynn" in name
      continue
    if inside_fusion:
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    _, shape, op = m.groups()
    if op in ("parameter", "constant", "get-tuple-element", "tuple", "bitcast"):
      continue
    if op == "fusion":
      kind = _FUSION_KIND.search(line)
      op = f"fusion:{kind.group(1) if kind else '?'}"
    census[op]["count"] += 1
    census[op]["bytes"] += shape_bytes(shape)
  return dict(census)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.configure("auto")  # the heap a real run uses (before JAX starts its threads)
  import jax  # pylint: disable=g-import-not-at-top
  import common  # pylint: disable=g-import-not-at-top
  from layerlock_jax import compilation  # pylint: disable=g-import-not-at-top
  compilation.enable_persistent_cache(compilation.AUTO)
  config = _CONFIG.value
  v = common.build_variant("profile", "step", config)
  census = hlo_census(v.compiled.as_text())
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; compile {v.row['compile_s']:.1f}s")
  print("\nHLO op census (optimised module, all computations):")
  print(f"{'op':<28}{'count':>8}{'MiB out':>10}")
  for op, c in sorted(census.items(), key=lambda kv: -kv[1]["bytes"]):
    print(f"{op:<28}{c['count']:>8}{c['bytes'] / 2 ** 20:>10.1f}")

  for _ in range(2):
    v.step()
  if _TRACE.value:
    jax.profiler.start_trace(_TRACE.value, create_perfetto_trace=True)
  for _ in range(_STEPS.value):
    start, cpu = time.perf_counter(), time.process_time()
    v.step()
    v.times.append(time.perf_counter() - start)
    v.cpu_times.append(time.process_time() - cpu)
  if _TRACE.value:
    jax.profiler.stop_trace()
  common.finish_row(v)
  r = v.row
  print(f"\nstep {1e3 * r['step_s']:.0f} ms (cpu {1e3 * r['cpu_s']:.0f} ms), "
        f"{r['model_flops'] / 1e9:.1f} GFLOP, MFU {100 * r['mfu']:.1f}% of a "
        f"{r['peak_flops_per_device'] / 1e9:.0f} GFLOP/s matmul measured in this process; "
        f"load {os.getloadavg()[0]:.1f}")
  if _TRACE.value:
    times = op_split.trace_op_seconds(_TRACE.value)
    kinds = op_split.matmul_kinds(v.compiled.as_text())
    split = op_split.split_xla(times, kinds, _STEPS.value)
    traced = sum(v.times)
    print(f"\nop time per step over {_STEPS.value} traced steps ({1e3 * traced / _STEPS.value:.0f} "
          "ms wall per step): " + ", ".join(f"{b} {split[b]:.0f} ms" for b in op_split.BUCKETS)
          + " (with more than one thread, event times overlap across threads)")
    ops = {k: t for k, t in times.items() if op_split.is_xla_op(k)}
    for name, t in collections.Counter(ops).most_common(_TOP.value):
      print(f"  {t:8.3f} s  {100 * t / traced:5.1f}%  {kinds.get(name, 'other'):9s}  {name[:80]}")
  print(f"median of {len(v.times)} steps: {statistics.median(v.times):.3f} s")
  return 0


if __name__ == "__main__":
  cli.run(main)
