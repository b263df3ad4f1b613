"""The benchmark scripts run end to end on CPU (their figures are not asserted: they are timings)."""
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402  pylint: disable=wrong-import-position
import stage_switch_bench  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.slow
def test_gpu_check_dry_run_covers_every_section():
  result = gpu_check.run("cpu", log=lambda *_: None)
  assert result["environment"]["dry_run"]
  assert [r["frozen_layers"] for r in result["freeze"]] == [0, 2]  # shrunk encoder depth 3: 0, 2/3
  k0, k2 = result["freeze"]
  assert k2["hardware_flops"] < k0["hardware_flops"] and 0 < k2["flops_saving"] < 1
  assert k2["temp_bytes"] < k0["temp_bytes"]  # compiled memory per stage: freezing shrinks it
  assert result["vit_l"][0]["dtype"] == "bfloat16" and result["tiny"][0]["dtype"] == "float32"
  paths = {r["variant"]: r for r in result["attention"]}
  assert set(paths) == {"xla", "dot_product[auto]"}
  assert not any(r["cudnn_fmha"] for r in paths.values())  # no cuDNN call in a CPU program
  assert "cuDNN needs an NVIDIA GPU" in result["attention_errors"]["dot_product[cudnn]"]
  text = gpu_check.report(result)
  assert "DRY RUN" in text and "| 2 |" in text and "dot_product[cudnn] | - | not run" in text


def test_freeze_fractions_reach_two_thirds_of_the_encoder():
  assert gpu_check.freeze_ks(20, dry_run=False) == [0, 3, 7, 10, 13]  # ViT-L: 24 - 4 decoder blocks
  assert gpu_check.freeze_ks(12, dry_run=False) == [0, 2, 4, 6, 8]
  assert gpu_check.freeze_ks(20, dry_run=False, fractions=(0, 1 / 3, 2 / 3)) == [0, 7, 13]


def test_stage_switch_summary_splits_overlapped_and_steady_steps():
  # Boundaries at steps 4 and 8. Stage 0's steps overlap the 2.5 s ahead compile of stage 1 and
  # run at 1 s instead of 0.1 s; each switch costs 0.5 s more than a steady step.
  it = [9.0, 1.0, 1.0, 1.0, 0.6, 0.1, 0.1, 0.1, 0.6, 0.1]
  run = {"ahead": True, "iteration_s": it, "boundaries": [4, 8],
         "programs": [{"frozen_layers": 0, "compile_seconds": 9.0, "wait_seconds": 9.0},
                      {"frozen_layers": 1, "compile_seconds": 2.5, "wait_seconds": 0.0},
                      {"frozen_layers": 2, "compile_seconds": 0.05, "wait_seconds": 0.0}]}
  first, second = stage_switch_bench.summarise(run)
  assert (first["k"], first["overlap_steps"], first["overlap_ms"]) == (1, 3, 1000)
  assert first["steady_ms"] == 100 and abs(first["stall_s"] - 0.5) < 1e-9
  assert (second["k"], second["overlap_steps"], second["overlap_ms"]) == (2, 1, 100)
  assert abs(second["stall_s"] - 0.5) < 1e-9
  run["ahead"] = False  # nothing overlaps without compiling ahead
  assert [r["overlap_steps"] for r in stage_switch_bench.summarise(run)] == [0, 0]


def _fake(framework, step_s, cpu_s, loaded_other=False):
  return {"framework": framework, "median_step_s": step_s, "median_cpu_s": cpu_s,
          "mfu_vs_own_matmul": 0.5, "peak_flops": 7e10, "model_flops": 4e9, "loadavg": [1.0],
          "loaded_jax": framework == "ours" or loaded_other,
          "loaded_torch": framework == "hf" or loaded_other}


def test_peer_comparison_pairs_processes_and_refuses_mixed_ones():
  import torch_compare  # pylint: disable=g-import-not-at-top
  # Three pairs whose machine speed drifts: per-pair ratios 2.0, 1.0, 0.5 (HF / ours).
  script = iter([_fake("ours", 1.0, 1.0), _fake("hf", 2.0, 1.0), _fake("ours", 2.0, 2.0),
                 _fake("hf", 2.0, 3.0), _fake("ours", 4.0, 1.0), _fake("hf", 2.0, 1.0)])
  calls = []

  def measure(framework):
    calls.append(framework)
    return next(script)

  s = torch_compare.compare("tiny", 3, measure, log=lambda *_: None)
  assert calls == ["ours", "hf"] * 3  # alternated A B A B
  assert s["wall_ratio"] == {"min": 0.5, "median": 1.0, "max": 2.0}
  assert s["cpu_ratio"]["median"] == 1.0 and s["cpu_ratio"]["max"] == 1.5
  assert s["ours_step_ms"] == 2000 and s["hf_step_ms"] == 2000
  assert "**1.00**" in torch_compare.format_table([s])
  assert torch_compare.check_clean(_fake("hf", 1, 1)) and torch_compare.check_clean(_fake("ours", 1, 1))
  with pytest.raises(RuntimeError, match="same-process"):
    torch_compare.check_clean(_fake("hf", 1, 1, loaded_other=True))
  with pytest.raises(RuntimeError, match="same-process"):
    torch_compare.check_clean(_fake("ours", 1, 1, loaded_other=True))


def test_peer_worker_applies_typed_config_overrides_to_ours_only():
  """--ours_overrides sets our config's fields with their own types and names unknown ones."""
  import subprocess  # pylint: disable=g-import-not-at-top
  code = (
      "import sys; sys.argv = ['peer_step']; sys.path.insert(0, 'bench'); import peer_step\n"
      "c = peer_step.load_config('tiny', 'none', ['model.scan_unroll=6', "
      "'model.gelu_approximate=False', 'optimizer.lr=0.5'])\n"
      "assert (c.model.scan_unroll, c.model.gelu_approximate, c.optimizer.lr) == (6, False, 0.5)\n"
      "assert c.model.remat_policy == 'none'\n"
      "for bad in (['model.no_such_field=1'], ['model.scan_unroll']):\n"
      "  try:\n"
      "    peer_step.load_config('tiny', 'config', bad)\n"
      "  except Exception as e:\n"
      "    print(type(e).__name__, e)\n"
      "  else:\n"
      "    raise AssertionError(bad)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "no_such_field" in out.stdout and "not key=value" in out.stdout


_SPLIT_HLO = """HloModule m
%fused_computation.1 (p0: f32[2,3,8,4], p1: f32[2,3,8,4]) -> f32[2,3,8,8] {
  %p0 = f32[2,3,8,4]{3,2,1,0} parameter(0)
  %p1 = f32[2,3,8,4]{3,2,1,0} parameter(1)
  %d = f32[2,3,8,8]{3,2,1,0} dot(%p0, %p1), lhs_batch_dims={0,1}, lhs_contracting_dims={3}, rhs_batch_dims={0,1}, rhs_contracting_dims={3}
  ROOT %e = f32[2,3,8,8]{3,2,1,0} exponential(%d)
}
%fused_computation.2 (q0: f32[16,4], q1: f32[4,8]) -> f32[16,8] {
  %q0 = f32[16,4]{1,0} parameter(0)
  %q1 = f32[4,8]{1,0} parameter(1)
  ROOT %d2 = f32[16,8]{1,0} dot(%q0, %q1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}
%fused_computation.3 (r0: f32[16,8]) -> f32[16] {
  %r0 = f32[16,8]{1,0} parameter(0)
  %c = f32[] constant(0)
  ROOT %s = f32[16]{0} reduce(%r0, %c), dimensions={1}, to_apply=%add
}
ENTRY %main (a: f32[2,3,8,4], x: f32[16,4], w: f32[4,8]) -> f32[16] {
  %a = f32[2,3,8,4]{3,2,1,0} parameter(0)
  %x = f32[16,4]{1,0} parameter(1)
  %w = f32[4,8]{1,0} parameter(2)
  %ynn_fusion.1 = f32[2,3,8,8]{3,2,1,0} fusion(%a, %a), kind=kCustom, calls=%fused_computation.1
  %ynn_fusion.2 = f32[16,8]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_computation.2
  %dot.3 = f32[4,4]{1,0} dot(%x, %x), lhs_contracting_dims={0}, rhs_contracting_dims={0}
  ROOT %ynn_fusion.3 = f32[16]{0} fusion(%ynn_fusion.2), kind=kCustom, calls=%fused_computation.3
}
"""


def test_op_split_buckets_by_what_an_instruction_computes_not_its_name():
  import op_split  # pylint: disable=g-import-not-at-top
  kinds = op_split.matmul_kinds(_SPLIT_HLO)
  # The batched dot fused with its softmax work is attention; the plain dot, fused or not, is a
  # matmul; a YNNPACK fusion that only reduces is neither, whatever its name says.
  assert {k: v for k, v in kinds.items() if k.startswith(("ynn", "dot."))} == {
      "ynn_fusion.1": "attention", "ynn_fusion.2": "matmul", "dot.3": "matmul"}
  times = {"ynn_fusion.1": 0.3, "ynn_fusion.2": 0.6, "dot.3": 0.15, "ynn_fusion.3": 0.09,
           "wrapped_broadcast.7": 0.06, "ThunkExecutor::Execute": 9.0, "$train.py:10 step": 9.0,
           "ThreadpoolListener::Record": 1.0, "end: ynn_fusion.2": 0.0}
  split = op_split.split_xla(times, kinds, steps=3)  # per step, in ms
  expect = {"attention": 100.0, "matmul": 250.0, "other": 50.0, "traced": 400.0}
  assert split == pytest.approx(expect)
  rows = [("aten::addmm", 3000.0), ("aten::mm", 6000.0),
          ("aten::_scaled_dot_product_flash_attention_for_cpu", 1500.0),
          ("aten::mkldnn_convolution", 600.0), ("aten::mul_", 900.0), ("aten::copy_", 300.0)]
  assert op_split.split_torch(rows, steps=3) == pytest.approx(
      {"matmul": 3.2, "attention": 0.5, "other": 0.4, "traced": 4.1})


def test_op_split_reads_a_compiled_xla_module():
  """On a module XLA:CPU really compiled: the dense layer's dot is a matmul, the batched
  q k^T / p v dots are attention, and the elementwise work around them is neither."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import op_split  # pylint: disable=g-import-not-at-top

  def f(x, w, q):
    s = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, q), axis=-1)
    return jnp.tanh(x @ w).sum() + jnp.einsum("bhqk,bhkd->bhqd", s, q).sum()

  args = (jnp.ones((64, 32)), jnp.ones((32, 48)), jnp.ones((2, 3, 16, 8)))
  hlo = jax.jit(f).lower(*args).compile().as_text()
  kinds = op_split.matmul_kinds(hlo)
  assert set(kinds.values()) == {"matmul", "attention"}
  instr = {m.group(1): line for line in hlo.splitlines()
           if (m := op_split._INSTR.match(line))}
  for name in kinds:  # only instructions that are or call a computation: a dot or a fusion
    assert " fusion(" in instr[name] or " dot(" in instr[name], instr[name]
  # Every batched dot of the module sits in an instruction classified as attention.
  batched = sum(" dot(" in l and "lhs_batch_dims" in l for l in hlo.splitlines())
  assert batched >= 2 and list(kinds.values()).count("attention") >= 1


def test_peer_comparison_splits_op_time_when_profiled():
  import torch_compare  # pylint: disable=g-import-not-at-top
  split = lambda m, a, o: {"matmul": m, "attention": a, "other": o, "traced": m + a + o}  # noqa: E731
  ours = [dict(_fake("ours", 1.0, 1.0), op_ms=split(600, 100, 300)),
          dict(_fake("ours", 1.0, 1.0), op_ms=split(800, 300, 100))]
  hf = [dict(_fake("hf", 1.0, 1.0), op_ms=split(500, 100, 300)),
        dict(_fake("hf", 1.0, 1.0), op_ms=split(500, 200, 300))]
  script = iter([ours[0], hf[0], ours[1], hf[1]])
  s = torch_compare.compare("vit_s", 2, lambda fw: next(script), log=lambda *_: None)
  assert s["op_ms"]["ours"] == {"matmul": 700, "attention": 200, "other": 200, "traced": 1100}
  assert s["op_ms"]["hf"] == {"matmul": 500, "attention": 150, "other": 300, "traced": 950}
  table = torch_compare.format_split([s])
  assert "| vit_s | matmul | 700 | 500 | 0.71 |" in table and "| vit_s | other | 200 | 300 | 1.50 |" in table
  plain = iter([_fake("ours", 1, 1), _fake("hf", 1, 1)])  # workers run without --profile_steps
  assert torch_compare.compare("t", 1, lambda fw: next(plain), log=lambda *_: None)["op_ms"] is None


def test_option_ab_parses_options_injects_them_and_summarises_per_round():
  """bench/option_ab.py: typed key=value options, compile options that reach XLA inside the
  context only, and per-round ratios A / X computed by hand."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  import option_ab  # pylint: disable=g-import-not-at-top
  assert option_ab.parse_options(["a=true", "b=False", "c=12", "d=-3", "e=LIBRARY_X"]) == {
      "a": True, "b": False, "c": 12, "d": -3, "e": "LIBRARY_X"}
  for bad in (["a"], ["=1"]):
    with pytest.raises(app.UsageError, match="not key=value"):
      option_ab.parse_options(bad)

  lowered = jax.jit(lambda x: x * 2.0 + 1.0).lower(jnp.ones(4))
  with option_ab.compiling_with({"no_such_compile_option_xyz": True}):
    with pytest.raises(jax.errors.JaxRuntimeError, match="no_such_compile_option_xyz"):
      lowered.compile()
  assert float(lowered.compile()(jnp.ones(4))[0]) == 3.0  # restored on leaving

  times = {"A": [1.0, 2.0, 4.0], "B": [0.5, 2.0, 5.0], "A again": [1.0, 1.0, 4.0]}
  s = option_ab.summarise(times)
  assert s["A"]["min_ms"] == 1000.0 and s["A"]["median_ms"] == 2000.0 and "ratio_median" not in s["A"]
  assert (s["B"]["ratio_median"], s["B"]["ratio_min"], s["B"]["ratio_max"]) == (1.0, 0.8, 2.0)
  assert (s["A again"]["ratio_median"], s["A again"]["ratio_max"]) == (1.0, 2.0)
  table = option_ab.format_table(s)
  assert "1.000 [0.800, 2.000]" in table and table.count("\n") == 3


def _grid_stage(k, target, total=None, refused=None):
  stage = {"frozen_layers": k, "target": target, "compile_seconds": 12.0}
  if refused:
    stage["refused"] = refused
  else:
    stage["total_bytes"] = total
  return stage


def test_tpu_grid_pairs_the_estimate_with_the_compiler_stage_by_stage():
  import tpu_grid  # pylint: disable=import-outside-toplevel
  gib = 2 ** 30
  plan = lambda stages: {"batch_size": 256, "num_devices": 64, "parameters": 10, "stages": stages}
  refusal = {"asked": "120.00G", "hbm": "95.74G", "asked_bytes": 1, "hbm_bytes": 1,
             "what": "HLO temporaries"}
  records = {
      ("4B", "v5p:4x4x4", "tpu"): {"plan": plan([_grid_stage(0, "pixels", 4 * gib),
                                                 _grid_stage(1, "latent", refused=refusal)])},
      # The estimate lists its stages in another order: rows must pair by (target, k).
      ("4B", "v5p:4x4x4", "cpu"): {"plan": plan([_grid_stage(1, "latent", 100 * gib),
                                                 _grid_stage(0, "pixels", 6 * gib)])},
      ("S", "v5e:16x16", "tpu"): {"plan": None, "returncode": 2},
  }
  rows = tpu_grid.table_rows(records)
  assert [(r["size"], r["stage"]) for r in rows] == [("S", "-"), ("4B", "k=0 pixels"),
                                                     ("4B", "k=1 latent")]
  pixels, latent = rows[1], rows[2]
  assert pixels["ratio"] == 1.5 and pixels["tpu_fits"] and pixels["cpu_fits"]
  assert pixels["batch_per_chip"] == 4
  # v5p: 95 GiB with 5% headroom; 100 GiB does not fit by the estimate, and the compiler refused.
  assert "ratio" not in latent and not latent["tpu_fits"] and not latent["cpu_fits"]
  text = tpu_grid.markdown(rows, "test CPU")
  assert "| 4B | v5p:4x4x4 (64) | 4 | k=0 pixels | 4.000 | 6.000 | 1.50 | yes / yes | 12 / 12 |" in text
  assert "refused: asks 120.00G > 95.74G" in text and "no plan (exit 2)" in text
  # The commands: the same device count on both sides, the generation as the accelerator.
  tpu_cmd = tpu_grid.aot_command("L", "v6e:16x16", "tpu", "x.json")
  cpu_cmd = tpu_grid.aot_command("L", "v6e:16x16", "cpu", "x.json")
  assert "--topology=v6e:16x16" in tpu_cmd and "--config=configs/vit_l.py" in tpu_cmd
  assert "--num_devices=256" in cpu_cmd and "--accelerator=v6e" in cpu_cmd
  assert "--config.model.attention=xla" in tpu_grid.aot_command("L", "v6e:16x16", "tpu_xla", "x")
  # With attention=xla compiled too, its column holds that program's bytes and the estimate's
  # ratio to them (3 GiB): the estimate's own error, apart from the kernel's saving.
  records[("4B", "v5p:4x4x4", "tpu_xla")] = {"plan": plan([_grid_stage(0, "pixels", 3 * gib)])}
  rows = tpu_grid.table_rows(records)
  assert rows[1]["ratio_xla"] == 2.0 and "ratio_xla" not in rows[2]
  text = tpu_grid.markdown(rows, "test CPU")
  assert "| 1.50 | yes / yes | 12 / 12 | 3.000 | 2.00 |" in text and "| - | - |" in text
