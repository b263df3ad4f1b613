"""The TPU compiler on this CPU machine: configs/tiny.py compiled for a v5e:2x2 slice.

libtpu is part of the `test` extra (the README's test command installs it), so nothing here is
skipped for a missing install: `jax.experimental.topologies` gives compile-only TPU devices and
`compile()` runs the real TPU compiler. The report of `aot.plan` is checked against the compiled
program's own memory analysis, against bytes and FLOPs counted here without aot.py (the parameter
count, Adam's two moments, the analytic FLOP model) and against the chip tables.
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from layerlock_jax import aot
from layerlock_jax.config import loading as config_loading
from layerlock_jax import flops
from layerlock_jax import hardware
from layerlock_jax import plan
from layerlock_jax.compile_targets import tpu as tpu_compile
from layerlock_jax.trainer import Trainer

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOPOLOGY = "v5e:2x2"
OVERRIDES = {"model.scan_unroll": 1, "data.image_size": 128}


def test_topology_names_are_checked_before_anything_is_compiled():
  assert tpu_compile.parse_topology("v5p:4x4x8") == ("v5p", (4, 4, 8))
  assert tpu_compile.parse_topology("v6e:16x16") == ("v6e", (16, 16))
  assert tpu_compile.num_chips("v5p:4x4x8", num_slices=2) == 256
  assert tpu_compile.chip_kind("v5e:2x2") == "tpu v5e"
  for bad in ("v5e:2x2x2", "v5p:4x4", "v7:2x2", "v5e", "v5e:2by2", "v5e:0x2"):
    with pytest.raises(tpu_compile.TopologyError, match="--topology"):
      tpu_compile.parse_topology(bad)
  # The CLI answers a bad name with one line and exit 2, before JAX or libtpu start.
  run = subprocess.run([sys.executable, "-m", "layerlock_jax.aot", "--config=configs/tiny.py",
                        "--topology=v5x:2x2"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines() == [run.stderr.strip()]
  assert "v5x:2x2" in run.stderr and "Traceback" not in run.stderr


def test_hbm_refusal_is_read_from_the_compilers_message():
  msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
         "temporaries (237.15G) exceeds available HBM (95.74G)")
  r = tpu_compile.hbm_refusal(RuntimeError(msg))
  assert (r["asked"], r["hbm"], r["what"]) == ("237.15G", "95.74G", "HLO temporaries")
  assert r["asked_bytes"] == int(237.15 * 2**30) and r["hbm_bytes"] == int(95.74 * 2**30)
  assert tpu_compile.hbm_refusal(ValueError("shapes do not match")) is None


def test_roofline_is_the_larger_of_compute_and_memory_time():
  kind = "tpu v5p"
  peak, bw = hardware.PEAK_FLOPS[kind]["bfloat16"], hardware.HBM_BANDWIDTH[kind]
  r = tpu_compile.roofline(kind, "bfloat16", 2 * peak, bw, peak)  # 2 s of compute, 1 s of bytes
  assert r["bound_seconds"] == pytest.approx(2.0) and r["bound_by"] == "compute"
  assert r["mfu_bound"] == pytest.approx(0.5)  # half the counted FLOPs are model FLOPs
  r = tpu_compile.roofline(kind, "bfloat16", peak, 3 * bw, peak)
  assert r["bound_seconds"] == pytest.approx(3.0) and r["bound_by"] == "HBM bandwidth"
  assert r["mfu_bound"] == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def tiny_on_v5e():
  """configs/tiny.py planned for v5e:2x2 by aot.plan, and the trainer that compiled it."""
  # 128-pixel frames: 2048 tokens (512 visible), where the (S, S) attention weights XLA keeps
  # outweigh the flash kernel's per-row statistics (at 32 pixels the kernel needs more).
  config = config_loading.load_config(ROOT / "configs" / "tiny.py", OVERRIDES)
  devices = tpu_compile.compile_only_devices(TOPOLOGY)
  assert len(devices) == 4 and devices[0].platform == "tpu"
  assert hardware.device_peak_flops(devices[0], "bfloat16") == hardware.PEAK_FLOPS["tpu v5e"][
      "bfloat16"]
  trainer = Trainer(config, devices)
  result = aot.plan(config, devices, "all", trainer=trainer)
  aot.tpu_verdicts(result, "tpu v5e", headroom=0.05)
  return config, result, trainer


@pytest.mark.slow  # TPU compiles of minutes on 2 cores; in the full suite (CI)
def test_tpu_memory_report_matches_the_compiled_program(tiny_on_v5e):
  config, result, trainer = tiny_on_v5e
  [stage] = result["stages"]
  assert "refused" not in stage
  spec = trainer.spec_at(0)
  # The very program the plan measured: training's own cached step of this stage.
  compiled = trainer.step_fn(spec, trainer.abstract_state(spec), aot.abstract_video(trainer))
  mem = compiled.memory_analysis()
  assert stage["argument_bytes"] == mem.argument_size_in_bytes
  assert stage["temp_bytes"] == mem.temp_size_in_bytes
  assert stage["output_bytes"] == mem.output_size_in_bytes
  assert stage["alias_bytes"] == mem.alias_size_in_bytes
  assert stage["total_bytes"] == (mem.argument_size_in_bytes + mem.temp_size_in_bytes
                                  + mem.output_size_in_bytes - mem.alias_size_in_bytes)
  # Data parallel over 4 chips: every chip holds all parameters and both Adam moments (float32).
  assert result["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1}
  n_params = result["parameters"]
  assert stage["param_bytes"] == 4 * n_params
  assert stage["opt_state_bytes"] >= 2 * 4 * stage["trainable_params"]
  d = config.data
  assert stage["batch_bytes"] == config.batch_size // 4 * d.num_frames * d.image_size ** 2 * 3
  # The state is donated: the new state overwrites it, so outputs are (almost) all aliased.
  assert stage["alias_bytes"] >= stage["param_bytes"] + stage["opt_state_bytes"]
  assert (stage["param_bytes"] + stage["opt_state_bytes"] + stage["batch_bytes"]
          <= stage["argument_bytes"])
  assert 0 < stage["total_bytes"] < hardware.HBM_GIB["tpu v5e"] * hardware.GIB
  assert stage["fits"] and result["fits"]


@pytest.mark.slow  # TPU compiles of minutes on 2 cores; in the full suite (CI)
def test_tpu_flops_and_the_roofline_bound(tiny_on_v5e):
  config, result, _ = tiny_on_v5e
  [stage] = result["stages"]
  n = 4
  step = flops.step_flops(config)  # the first stage: nothing frozen
  # The compiler counts the rolled layer scan once: more than the parts outside any scan (patch
  # embedding and heads), less than the whole analytic step per chip.
  outside = (step["patch_embed"] + step["heads"]) / n
  assert outside < stage["compiled_flops"] < step["hardware_flops"] / n
  assert stage["compiled_bytes_accessed"] > stage["argument_bytes"] / 2
  r = stage["roofline"]
  peak = hardware.PEAK_FLOPS["tpu v5e"][hardware.peak_dtype(config.model.dtype)]
  expect = max(step["hardware_flops"] / n / peak,
               stage["compiled_bytes_accessed"] / hardware.HBM_BANDWIDTH["tpu v5e"])
  assert r["bound_seconds"] == pytest.approx(expect)
  assert 0 < r["mfu_bound"] <= 1.0
  text = aot.format_tpu_plan(result, TOPOLOGY, 1, 0.05, "configs/tiny.py")
  assert "TPU compiler" in text and "BOUND" in text and "not measurements" in text
  assert text.strip().endswith("v5e:2x2: fits")


@pytest.mark.slow  # TPU compiles of minutes on 2 cores; in the full suite (CI)
def test_hbm_refusal_is_one_line_and_a_nonzero_exit():
  """A batch no v5e chip holds: the compiler refuses, the CLI says so in one line."""
  run = subprocess.run(
      [sys.executable, "-m", "layerlock_jax.aot", "--config=configs/tiny.py",
       f"--topology={TOPOLOGY}", "--config.batch_size=65536", "--config.data.num_clips=65536"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 1, run.stderr[-2000:]
  lines = run.stdout.strip().splitlines()
  assert len(lines) == 1, (run.stdout, run.stderr[-3000:])
  assert lines[0].startswith("does not fit: stage k=0 (pixels)")
  assert "available HBM" in lines[0] and "Traceback" not in run.stderr
  asked = int(lines[0].split("(")[2].split(" bytes")[0].replace(",", ""))
  assert asked > hardware.HBM_GIB["tpu v5e"] * hardware.GIB


@pytest.mark.slow  # TPU compiles of minutes on 2 cores; in the full suite (CI)
def test_tpu_program_holds_the_flash_kernel_and_needs_less_memory_than_xla(tiny_on_v5e):
  """attention=auto (the default) on TPU: the Pallas kernel, a Mosaic custom call in the
  compiled program, and fewer temporaries than the XLA softmax that keeps (S, S) weights."""
  config, result, trainer = tiny_on_v5e
  assert config.model.attention == "auto"
  spec = trainer.spec_at(0)
  kernel = trainer.step_fn(spec, trainer.abstract_state(spec), aot.abstract_video(trainer))
  assert "tpu_custom_call" in kernel.as_text()
  xla_config = config_loading.load_config(ROOT / "configs" / "tiny.py",
                                          {**OVERRIDES, "model.attention": "xla"})
  xla_trainer = Trainer(xla_config, tpu_compile.compile_only_devices(TOPOLOGY))
  xla = xla_trainer.step_fn(spec, xla_trainer.abstract_state(spec),
                            aot.abstract_video(xla_trainer))
  assert "tpu_custom_call" not in xla.as_text()
  kernel_temps = kernel.memory_analysis().temp_size_in_bytes
  xla_temps = xla.memory_analysis().temp_size_in_bytes
  assert kernel_temps < xla_temps, (kernel_temps, xla_temps)
  assert result["stages"][0]["temp_bytes"] == kernel_temps


def test_multi_slice_mesh_puts_the_data_axis_across_slices():
  """--num_slices: training's make_mesh lays the data axis over the slices (DCN), fsdp and tensor
  inside one slice (ICI); a mesh whose data axis cannot span the slices is one clear error."""
  from layerlock_jax import sharding  # pylint: disable=g-import-not-at-top
  devices = tpu_compile.compile_only_devices(TOPOLOGY, num_slices=2)
  assert len(devices) == 8 and {d.slice_index for d in devices} == {0, 1}
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 1}, devices)
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  slices = np.vectorize(lambda d: d.slice_index)(mesh.devices)
  for i in range(4):  # every fsdp group (a row of the data axis) lives in one slice
    assert len(set(slices[i].ravel())) == 1
  assert set(slices[:, 0, 0]) == {0, 1}
  with pytest.raises(plan.ConfigError, match="slices"):
    sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices)
