"""A train step's op time split into dense matmuls, attention and everything else, per framework.

Used by bench/peer_step.py --profile_steps (each framework in its own process). The same three
buckets on both sides:

  matmul     dense matmuls (Dense / Linear layers, the patch embedding, their gradients)
  attention  the attention core: batched q k^T and p v matmuls and the softmax work fused with
             them (XLA:CPU) or inside the SDPA kernel (PyTorch)
  other      everything else: norms, activations, the loss, the optimizer, layout changes, the
             scanned stacks' bookkeeping

Read the buckets from a ONE-thread run: XLA:CPU runs independent ops side by side on several
threads, so with more threads its per-op event times overlap and no longer add up to the step.

XLA side: the profiler records one event per executed HLO instruction (a fusion, a dot, ...);
an instruction is a matmul when it is a dot / convolution or a fusion whose computation holds
one, attention when that dot has batch dimensions (in our models only attention has batched
matmuls). Classifying by the compiled HLO rather than by event name matters: XLA:CPU names
YNNPACK fusions `ynn_fusion.N` whether or not they hold a matmul (many are plain reductions).
PyTorch side: torch.profiler's self time per aten op.
"""
import collections
import glob
import gzip
import json
import os
import re

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+\s+([\w\-]+)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_HLO_NAME = re.compile(r"[a-z][\w.\-]*")
_BATCH = re.compile(r"lhs_batch_dims=\{[\d,]+\}")

BUCKETS = ("matmul", "attention", "other")

# PyTorch ops by bucket (self time). Everything not named here is "other".
_TORCH_MATMUL = ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear",
                 "aten::mkldnn_convolution", "aten::convolution_backward",
                 "aten::_convolution", "aten::convolution")
_TORCH_ATTENTION = ("scaled_dot_product", "aten::bmm", "aten::baddbmm", "aten::_softmax",
                    "aten::_softmax_backward_data")


def _computations(hlo_text: str) -> dict[str, list[str]]:
  """computation name -> its instruction lines."""
  comps, current = {}, None
  for line in hlo_text.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      header = line.split()
      current = (header[1] if header[0] == "ENTRY" else header[0]).lstrip("%")
      comps[current] = []
    elif current is not None and line.startswith(" "):
      comps[current].append(line)
  return comps


def _dot_bucket(line: str) -> str:
  return "attention" if _BATCH.search(line) else "matmul"


def matmul_kinds(hlo_text: str) -> dict[str, str]:
  """Instruction name -> "matmul" | "attention" for every instruction of an optimised HLO module
  that is, or fuses, a dot or convolution. Names absent from the result are "other"."""
  comps = _computations(hlo_text)

  def bucket_of(comp: str, seen=()) -> str | None:
    found = None
    for line in comps.get(comp, ()):
      m = _INSTR.match(line)
      if not m:
        continue
      op = m.group(2)
      if op in ("dot", "convolution"):
        kind = _dot_bucket(line)
      elif op == "fusion" and (c := _CALLS.search(line)) and c.group(1) not in seen:
        kind = bucket_of(c.group(1), seen + (comp,))
      else:
        continue
      if kind == "attention":
        return kind
      found = found or kind
    return found

  kinds = {}
  for lines in comps.values():
    for line in lines:
      m = _INSTR.match(line)
      if not m:
        continue
      name, op = m.groups()
      if op in ("dot", "convolution"):
        kinds[name] = _dot_bucket(line)
      elif op == "fusion" and (c := _CALLS.search(line)):
        kind = bucket_of(c.group(1))
        if kind:
          kinds[name] = kind
  return kinds


def trace_op_seconds(trace_dir: str) -> collections.Counter:
  """Summed duration (s) per event name over the newest jax.profiler trace under trace_dir."""
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True),
                 key=os.path.getmtime)
  if not files:
    return collections.Counter()
  with gzip.open(files[-1]) as f:
    events = json.load(f).get("traceEvents", [])
  times = collections.Counter()
  for e in events:
    if e.get("ph") == "X" and "dur" in e:
      times[e["name"]] += e["dur"] / 1e6
  return times


def is_xla_op(name: str) -> bool:
  """An executed HLO instruction (`ynn_fusion.3`, `dot.12`, `while.7`): lower-case, no spaces.
  The runtime's own spans (`ThunkExecutor::Execute`, `CommonPjRtLoadedExecutable::...`,
  `ParseArguments`), thread-pool markers, `end: ...` markers and Python frames (`$...`) are not."""
  return _HLO_NAME.fullmatch(name) is not None


def split_xla(times: dict[str, float], kinds: dict[str, str], steps: int) -> dict[str, float]:
  """Per-step milliseconds by bucket (plus "traced", their sum) from trace_op_seconds' result."""
  out = dict.fromkeys(BUCKETS, 0.0)
  for name, seconds in times.items():
    if is_xla_op(name):
      out[kinds.get(name, "other")] += 1e3 * seconds / steps
  out["traced"] = sum(out[b] for b in BUCKETS)
  return out


def torch_bucket(name: str) -> str:
  if any(key in name for key in _TORCH_ATTENTION):
    return "attention"
  return "matmul" if name in _TORCH_MATMUL else "other"


def split_torch(rows, steps: int) -> dict[str, float]:
  """Per-step milliseconds by bucket from (op name, self CPU microseconds) rows, e.g.
  [(e.key, e.self_cpu_time_total) for e in profiler.key_averages()]."""
  out = dict.fromkeys(BUCKETS, 0.0)
  for name, self_us in rows:
    out[torch_bucket(name)] += self_us / 1e3 / steps
  out["traced"] = sum(out[b] for b in BUCKETS)
  return out
