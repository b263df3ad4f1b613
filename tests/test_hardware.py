"""Hardware facts: datasheet peaks by device kind and dtype, the CPU stand-in, HBM sizes, MFU."""
import math

import jax
import jax.numpy as jnp
import pytest

from layerlock_jax import hardware


# --- peaks and MFU ------------------------------------------------------------------------------


class _FakeDevice:
  def __init__(self, kind):
    self.device_kind = kind


@pytest.mark.parametrize("kind, dtype, expected", [
    ("TPU v4", "bfloat16", 275e12),
    ("TPU v5 lite", "bfloat16", 197e12),
    ("tpu V5P", "bf16", 459e12),
    ("TPU v6 lite", "float32", 918e12),        # TPU default precision: one bf16 pass
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4e12),
    ("nvidia h100 80gb hbm3", "float32", 494.7e12),   # GPU default precision: TF32
    ("NVIDIA H100 80GB HBM3", "float32_highest", 66.9e12),
    ("NVIDIA H200", "bfloat16", 989.4e12),
])
def test_device_peak_flops_known_devices(kind, dtype, expected):
  assert hardware.device_peak_flops(kind, dtype) == expected
  assert hardware.device_peak_flops(_FakeDevice(kind), dtype) == expected   # a jax Device's kind


def test_device_peak_flops_accepts_dtype_objects():
  assert hardware.device_peak_flops("TPU v4", jnp.bfloat16) == 275e12
  assert hardware.device_peak_flops("TPU v4", jnp.dtype("float32")) == 275e12


def test_device_peak_flops_unknown():
  assert hardware.device_peak_flops("NVIDIA H100 PCIe", "bfloat16") is None  # not the SXM part
  assert hardware.device_peak_flops(jax.devices()[0], "float32") is None     # the CPU
  with pytest.raises(ValueError):
    hardware.device_peak_flops("TPU v4", "int4")


def test_mfu():
  # 1e12 FLOPs in 0.5 s on 4 devices of 1 TFLOP/s each: 2 TFLOP/s achieved out of 4.
  assert hardware.mfu(1e12, 0.5, 4e12) == pytest.approx(0.5)
  assert math.isnan(hardware.mfu(1e12, 0.5, None))
  with pytest.raises(ValueError):
    hardware.mfu(1e12, 0.0, 4e12)
  with pytest.raises(ValueError):
    hardware.mfu(1e12, 0.5, 0.0)


class _FakeAccelerator(_FakeDevice):
  platform = "tpu"


def test_combined_peak_is_per_device_peak_times_devices():
  devices = [_FakeAccelerator("TPU v5 lite")] * 8
  assert hardware.combined_peak_flops(devices, "bfloat16") == 8 * 197e12
  assert hardware.combined_peak_flops([_FakeAccelerator("TPU v99")], "bfloat16") is None


def test_every_planning_accelerator_has_a_peak_and_a_memory_size():
  for name, kind in hardware.ACCELERATORS.items():
    assert set(hardware.PEAK_FLOPS[kind]) == {"bfloat16", "float32", "float32_highest"}, name
    assert hardware.HBM_GIB[kind] >= 16, name
    # The CLI's short name resolves to the same part as the device kind JAX reports.
    assert hardware.device_peak_flops(kind, "bf16") == hardware.PEAK_FLOPS[kind]["bfloat16"]


def test_measure_cpu_peak_flops_is_plausible():
  peak = hardware.measure_cpu_peak_flops()
  # Any CPU XLA runs on does between 1 GFLOP/s and 100 TFLOP/s on a 1024^3 matmul.
  assert 1e9 < peak < 1e14
