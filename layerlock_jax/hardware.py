"""Hardware facts, in one place: peak FLOP/s and memory per accelerator, the CPU stand-in for a
peak, and MFU.

The analytic FLOPs of a step (the MFU numerator) are counted in flops.py; this module knows only
the machines. It imports nothing of the package, and JAX only inside `measure_cpu_peak_flops`, so
planning tools can read the tables without starting a backend.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

# Per-device peak FLOP/s, keyed by a canonical device name, then by dtype. A "device" is what JAX
# calls one device: a chip on TPU v4 and later (megacore merges the two TensorCores), one GPU.
#
# dtype keys:
#   "bfloat16"         dense tensor-core / MXU peak (float16 is the same on these parts).
#   "float32"          float32 matmuls at JAX's DEFAULT precision, which rounds the inputs:
#                      one bfloat16 pass on TPU, TF32 on NVIDIA Ampere and later (JAX "Matmul
#                      precision" docs). So TPU float32 = bf16 peak, NVIDIA float32 = TF32 peak.
#   "float32_highest"  float32 at Precision.HIGHEST: true IEEE fp32 (non-tensor-core) on NVIDIA;
#                      on TPU about six bf16 passes, so bf16 peak / 6 (an approximation).
# Sources: Google Cloud TPU system-architecture pages (v4 275, v5e 197, v5p 459, v6e 918 TFLOP/s
# bf16 per chip); NVIDIA H100 SXM5 datasheet (989.4 bf16 dense, 494.7 TF32 dense, 66.9 fp32; the
# datasheet's 1979 / 989 figures are with 2:4 sparsity); H200 has the same GH100 compute as H100
# SXM (faster memory only); A100 SXM datasheet (312 bf16, 156 TF32, 19.5 fp32).
_TPU_V4 = 275e12
_TPU_V5E = 197e12
_TPU_V5P = 459e12
_TPU_V6E = 918e12
_H100_SXM = {"bfloat16": 989.4e12, "float32": 494.7e12, "float32_highest": 66.9e12}
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "tpu v4": {"bfloat16": _TPU_V4, "float32": _TPU_V4, "float32_highest": _TPU_V4 / 6},
    "tpu v5e": {"bfloat16": _TPU_V5E, "float32": _TPU_V5E, "float32_highest": _TPU_V5E / 6},
    "tpu v5p": {"bfloat16": _TPU_V5P, "float32": _TPU_V5P, "float32_highest": _TPU_V5P / 6},
    "tpu v6e": {"bfloat16": _TPU_V6E, "float32": _TPU_V6E, "float32_highest": _TPU_V6E / 6},
    "nvidia h100 sxm": dict(_H100_SXM),
    "nvidia h200": dict(_H100_SXM),
    "nvidia a100 sxm": {"bfloat16": 312e12, "float32": 156e12, "float32_highest": 19.5e12},
}

# High-bandwidth memory per device, GiB (same sources). The A100 SXM is left out: it ships with
# 40 or 80 GB, and its device kind tells them apart only by name.
HBM_GIB: dict[str, int] = {
    "tpu v4": 32, "tpu v5e": 16, "tpu v5p": 95, "tpu v6e": 32,
    "nvidia h100 sxm": 80, "nvidia h200": 141,
}
GIB = 1024 ** 3

# HBM bandwidth per device, bytes/s: the memory side of a roofline bound. Sources: Google Cloud TPU
# system-architecture pages (v4 1,228 GB/s (1.2 TB/s), v5e 819 GB/s, v5p 2,765 GB/s, v6e 1,640 GB/s
# per chip); NVIDIA H100 SXM5 datasheet (3.35 TB/s), H200 datasheet (4.8 TB/s).
HBM_BANDWIDTH: dict[str, float] = {
    "tpu v4": 1228e9, "tpu v5e": 819e9, "tpu v5p": 2765e9, "tpu v6e": 1640e9,
    "nvidia h100 sxm": 3.35e12, "nvidia h200": 4.8e12,
}

# Short names the planning CLI accepts (`aot --accelerator=v5e`) -> canonical device name.
ACCELERATORS = {"v4": "tpu v4", "v5e": "tpu v5e", "v5p": "tpu v5p", "v6e": "tpu v6e",
                "h100": "nvidia h100 sxm", "h200": "nvidia h200"}

# jax `device.device_kind` strings (lower-cased) -> PEAK_FLOPS key. Matching is exact after
# lower-casing: a substring match would give e.g. an H100 PCIe (756 TFLOP/s bf16) the SXM peak.
_DEVICE_KIND_ALIASES = {
    "tpu v4": "tpu v4",
    "tpu v5 lite": "tpu v5e",
    "tpu v5e": "tpu v5e",
    "tpu v5litepod": "tpu v5e",
    "tpu v5p": "tpu v5p",
    "tpu v5": "tpu v5p",  # v5p chips report "TPU v5"
    "tpu v6 lite": "tpu v6e",
    "tpu v6e": "tpu v6e",
    "nvidia h100 80gb hbm3": "nvidia h100 sxm",
    "nvidia h100 sxm": "nvidia h100 sxm",
    "nvidia h100": "nvidia h100 sxm",
    "nvidia h200": "nvidia h200",
    "nvidia h200 141gb hbm3e": "nvidia h200",
    "nvidia a100-sxm4-80gb": "nvidia a100 sxm",
    "nvidia a100-sxm4-40gb": "nvidia a100 sxm",
}

_DTYPE_ALIASES = {
    "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "bfloat16", "fp16": "bfloat16",
    "half": "bfloat16", "float32": "float32", "f32": "float32", "fp32": "float32",
    "tf32": "float32", "float32_highest": "float32_highest",
}


def peak_dtype(dtype: Any) -> str:
  """The PEAK_FLOPS dtype key of a compute dtype (name, numpy/jax dtype or scalar type)."""
  # Strings pass through (they include names numpy lacks, e.g. "tf32"); dtype objects and scalar
  # types such as jnp.bfloat16 are resolved through numpy, which knows ml_dtypes' bfloat16.
  name = (dtype if isinstance(dtype, str) else np.dtype(dtype).name).lower()
  if name not in _DTYPE_ALIASES:
    raise ValueError(f"no peak FLOP/s figures for dtype {dtype!r}")
  return _DTYPE_ALIASES[name]


def device_peak_flops(device: Any, dtype: Any) -> float | None:
  """Peak FLOP/s of one device for matmuls in `dtype`; None for device kinds not in PEAK_FLOPS.

  `device` is a jax Device (its `device_kind` is used) or a device-kind string such as
  "TPU v5 lite" or "NVIDIA H100 80GB HBM3"; matching ignores case and surrounding spaces.
  """
  kind = getattr(device, "device_kind", device)
  key = _DEVICE_KIND_ALIASES.get(" ".join(str(kind).lower().split()))
  if key is None:
    return None
  return PEAK_FLOPS[key][peak_dtype(dtype)]


def measure_cpu_peak_flops(dtype: str = "float32", n: int = 1024, repeats: int = 5) -> float:
  """Achieved FLOP/s of an n x n matmul on the default device: the MFU denominator on CPU.

  CPUs have no meaningful datasheet peak for XLA (it depends on cores, SIMD width and the thread
  pool), so the trainer measures what a large, well-shaped matmul achieves once at start-up and
  treats that as 100%. The best of `repeats` timed runs is used, after one compile-and-warm-up
  run. At the defaults this takes well under a second on two cores.
  """
  import jax  # pylint: disable=g-import-not-at-top  (the tables above need no backend)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  # Host-built operands: generating them on device would cost an extra compile. The values do
  # not matter for speed, and arguments (unlike closed-over constants) cannot be folded away.
  a = jax.device_put(np.full((n, n), 0.5, dtype=jnp.dtype(dtype)))
  b = jax.device_put(np.full((n, n), 0.25, dtype=jnp.dtype(dtype)))
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  best = float("inf")
  for _ in range(max(1, repeats)):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best  # one multiply and one add per multiply-accumulate


def combined_peak_flops(devices, dtype: Any) -> float | None:
  """Peak FLOP/s of all of `devices` together (the MFU denominator of a run); None if unknown.

  Accelerators: the datasheet figure per device (PEAK_FLOPS) times the device count. CPU: there is
  no meaningful datasheet peak for XLA, so a large matmul is measured once now; forced CPU
  "devices" share the same cores, so that figure is the total, not a per-device one.
  """
  devices = list(devices)
  if devices[0].platform == "cpu":
    return measure_cpu_peak_flops(dtype)
  peak = device_peak_flops(devices[0], dtype)
  return peak * len(devices) if peak else None


def mfu(flops_per_step: float, step_time_s: float, peak_flops: float | None) -> float:
  """Model FLOPs utilisation: achieved FLOP/s (flops_per_step / step_time_s) over `peak_flops`,
  the combined peak of every device the step runs on.

  Returns NaN when the peak is unknown (None), so logging on an unlisted device does not crash.
  """
  if step_time_s <= 0:
    raise ValueError(f"need step_time_s > 0, got {step_time_s}")
  if peak_flops is None:
    return float("nan")
  if peak_flops <= 0:
    raise ValueError(f"peak_flops must be positive, got {peak_flops}")
  return flops_per_step / step_time_s / peak_flops
