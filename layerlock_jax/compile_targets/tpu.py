"""Compile-only TPU devices on any machine, and what the TPU compiler says about a program.

With libtpu installed (`pip install -e .[tpu]`), `jax.experimental.topologies.get_topology_desc`
describes a TPU slice (or several, for multi-slice) without one being attached: its devices can
carry shardings and `jit(...).lower(...).compile()` runs the real TPU compiler for them (real
fusion, collectives and buffer assignment; per-chip memory). Nothing can execute on them.

This module knows topology names, the compiler's HBM refusals and the roofline bound; the mesh
and program are training's own (sharding.make_mesh, trainer.Trainer).
"""
from __future__ import annotations

import importlib.util
import math
import os
import re

from layerlock_jax import hardware

# Topology name prefix -> hardware table key, and how many dimensions the chip grid has.
GENERATIONS = {"v4": ("tpu v4", 3), "v5e": ("tpu v5e", 2), "v5p": ("tpu v5p", 3),
               "v6e": ("tpu v6e", 2)}
_TOPOLOGY = re.compile(r"^(v4|v5e|v5p|v6e):(\d+(?:x\d+)*)$")


class TopologyError(ValueError):
  """A topology name or slice count the TPU runtime would not accept."""


def parse_topology(name: str) -> tuple[str, tuple[int, ...]]:
  """"v5p:4x4x8" -> ("v5p", (4, 4, 8)); one clear error for anything else."""
  match = _TOPOLOGY.match(name.strip())
  if not match:
    raise TopologyError(f"--topology={name!r}: expected GEN:AxB[xC] with GEN one of "
                        f"{', '.join(GENERATIONS)}, e.g. v5e:2x2, v5p:4x4x8, v6e:16x16")
  gen, dims = match.group(1), tuple(int(d) for d in match.group(2).split("x"))
  want = GENERATIONS[gen][1]
  if len(dims) != want or min(dims) < 1:
    example = "x".join(["2"] * want)
    raise TopologyError(f"--topology={name!r}: {gen} slices are {want}-D chip grids "
                        f"(e.g. {gen}:{example})")
  return gen, dims


def chip_kind(topology: str) -> str:
  """The hardware-table key (hardware.PEAK_FLOPS, HBM_GIB, HBM_BANDWIDTH) of a topology's chips."""
  return GENERATIONS[parse_topology(topology)[0]][0]


def num_chips(topology: str, num_slices: int = 1) -> int:
  return math.prod(parse_topology(topology)[1]) * num_slices


def libtpu_installed() -> bool:
  return importlib.util.find_spec("libtpu") is not None


def compile_only_devices(topology: str, num_slices: int = 1) -> list:
  """The compile-only devices of `num_slices` slices of `topology` (slice-major order)."""
  parse_topology(topology)
  if num_slices < 1:
    raise TopologyError(f"--num_slices={num_slices}: need at least 1")
  if not libtpu_installed():
    raise TopologyError("compiling for TPU needs the TPU compiler (libtpu): "
                        "pip install -e '.[tpu]'")
  # Compile-only use touches no chip: let several processes (tests, parallel plans, other users of
  # the machine) load libtpu at once instead of failing on its single-user lockfile.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  kwargs = {"num_slices": num_slices} if num_slices > 1 else {}
  desc = topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs)
  devices = list(desc.devices)
  if len(devices) != num_chips(topology, num_slices):
    raise TopologyError(f"--topology={topology} gave {len(devices)} devices, expected "
                        f"{num_chips(topology, num_slices)}")
  return devices


# "... total memory required for HLO temporaries (237.15G) exceeds available HBM (95.74G)" and
# "Used 237.15G of 95.74G hbm": the compiler's sizes carry a K/M/G/T suffix (powers of 1024).
_SIZE = r"([0-9.]+)\s*([KMGT]?)i?B?"
_REFUSALS = (re.compile(r"required for [^(]*\(" + _SIZE + r"\)[^(]*exceeds available HBM \("
                        + _SIZE + r"\)"),
             re.compile(r"Used " + _SIZE + r" of " + _SIZE + r" hbm"))
_UNIT = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def hbm_refusal(error: BaseException) -> dict | None:
  """{"asked_bytes", "hbm_bytes", "what"} when `error` is the TPU compiler refusing a program
  for HBM; None for any other error."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
    return None
  for pattern in _REFUSALS:
    match = pattern.search(text)
    if match:
      asked = float(match.group(1)) * _UNIT[match.group(2)]
      hbm = float(match.group(3)) * _UNIT[match.group(4)]
      what = re.search(r"required for ([^(]*?)\s*\(", text)
      return {"asked_bytes": int(asked), "hbm_bytes": int(hbm),
              "asked": match.group(1) + match.group(2), "hbm": match.group(3) + match.group(4),
              "what": what.group(1) if what else "the program"}
  return {"asked_bytes": None, "hbm_bytes": None, "asked": None, "hbm": None,
          "what": text.strip().splitlines()[0][:200]}


def compiled_cost(compiled) -> dict:
  """FLOPs and bytes accessed per chip from the compiler's cost analysis (None if it has none).

  Like XLA:CPU, the TPU compiler counts the body of a rolled loop (the scanned layer stack)
  once, so both are lower bounds on what a step does."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (some backends have none)
    cost = None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost:
    return {"compiled_flops": None, "compiled_bytes_accessed": None}
  return {"compiled_flops": float(cost.get("flops", 0.0)),
          "compiled_bytes_accessed": float(cost.get("bytes accessed", 0.0))}


def roofline(kind: str, dtype: str, flops_per_chip: float, bytes_per_chip: float | None,
             model_flops_per_chip: float) -> dict:
  """Roofline lower bound on step time: the larger of FLOPs at peak and bytes at HBM bandwidth.

  A bound, never a measurement: real steps also wait on collectives, the host and imperfect
  kernels. `mfu_bound` is the model-FLOPs utilisation a step at exactly that time would reach."""
  peak = hardware.PEAK_FLOPS[kind][hardware.peak_dtype(dtype)]
  compute_s = flops_per_chip / peak
  memory_s = (bytes_per_chip or 0.0) / hardware.HBM_BANDWIDTH[kind]
  bound = max(compute_s, memory_s)
  return {"compute_seconds": compute_s, "memory_seconds": memory_s, "bound_seconds": bound,
          "bound_by": "compute" if compute_s >= memory_s else "HBM bandwidth",
          "mfu_bound": model_flops_per_chip / (bound * peak) if bound > 0 else float("nan")}
