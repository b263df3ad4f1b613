"""One-GPU readiness check (run through bench/gpu_check.sh): does the framework run, and how well?

  python bench/gpu_check.py [--out=gpu_check.json] [--vit_l_batch=8] [--steps=5]
  python bench/gpu_check.py --platform=cpu      # dry run: the same code on shrunk models, on CPU

On the first local device it measures, each with the real compiled train step
(layerlock_jax.trainer.Trainer.step_fn via bench/common.py):
  1. tiny: configs/tiny.py, float32 - the smallest step, mostly launch overhead on a GPU;
  2. ViT-L: configs/vit_l.py (16x224^2, 2x16x16 tubelets, 95% masking, bfloat16 compute) at
     --vit_l_batch clips; step time, clips/s and MFU against the datasheet peak of the device
     (layerlock_jax/hardware.py PEAK_FLOPS; on CPU a measured 2048^2 matmul stands in);
  3. the freezing sweep on ViT-L: k = 0, 1/6, 1/3, 1/2, 2/3 of the encoder depth (pixel target),
     measured saving against the analytic FLOP saving, and the compiled memory (temp, argument,
     output bytes) of each stage's program;
  4. attention paths: config.model.attention=xla (einsum softmax) against
     jax.nn.dot_product_attention with implementation "" (JAX picks), "xla" and "cudnn"; whether
     the compiled step really holds a cuDNN fused-attention call, and each path's step time.
Timing: compiled first, then round-robin rounds (bench/common.py's time_interleaved), medians.
A path that fails to compile (cuDNN attention needs a recent GPU, cuDNN >= 8.9 and supported
shapes) is reported with its error instead of stopping the check.
"""
import json
import os
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FREEZE_FRACTIONS = (0, 1 / 6, 1 / 3, 1 / 2, 2 / 3)
ATTENTION_PATHS = (("xla", ""), ("dot_product", ""), ("dot_product", "xla"),
                   ("dot_product", "cudnn"))


def shrink(config, *, width=32, depth=4, batch=2, frames=2, size=32):
  """The dry-run model: the same config kinds (query/light decoder, dtype, remat), tiny shapes.

  16 tokens per clip, so that even a 95% mask leaves one visible token for the encoder."""
  m = config.model
  m.width, m.depth, m.mlp_dim, m.num_heads = width, depth, 2 * width, 2
  if m.decoder.type == "query":
    m.decoder.depth = 1
  else:
    m.decoder.width, m.decoder.depth, m.decoder.num_heads, m.decoder.mlp_dim = width, 1, 2, width
  m.patch_size = (2, 8, 8)
  config.batch_size = batch
  config.data.num_frames, config.data.image_size = frames, size
  return config


def freeze_ks(encoder_depth: int, dry_run: bool,
              fractions: tuple[float, ...] = FREEZE_FRACTIONS) -> list[int]:
  cap = (2 * encoder_depth) // 3
  ks = sorted({min(cap, round(f * encoder_depth)) for f in fractions})
  return [ks[0], ks[-1]] if dry_run else ks


def has_cudnn_attention(compiled) -> bool:
  """Whether the compiled step calls cuDNN's fused attention (a custom call named __cudnn$fmha)."""
  try:
    text = compiled.as_text()
  except Exception:  # pylint: disable=broad-except
    return False
  return "__cudnn$fmha" in text or "cudnn$fmha" in text


def run(platform: str = "gpu", *, vit_l_batch: int = 8, warmup: int = 2, steps: int = 5,
        rounds: int = 2, fractions: tuple[float, ...] = FREEZE_FRACTIONS,
        attention_paths: tuple[tuple[str, str], ...] = ATTENTION_PATHS, log=print) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import common  # pylint: disable=g-import-not-at-top
  from layerlock_jax import plan  # pylint: disable=g-import-not-at-top
  from layerlock_jax.trainer import Trainer  # pylint: disable=g-import-not-at-top
  import cpu_configs  # pylint: disable=g-import-not-at-top

  dry_run = platform == "cpu"
  devices = jax.devices(platform)[:1]
  dev = devices[0]
  env = {"jax": jax.__version__, "platform": dev.platform, "device_kind": dev.device_kind,
         "devices_seen": len(jax.devices(platform)), "dry_run": dry_run}
  log(f"device: {dev.device_kind} ({dev.platform}), jax {jax.__version__}"
      + (" - DRY RUN on shrunk models" if dry_run else ""))
  peak: dict = {}
  timing = dict(warmup=1 if dry_run else warmup, steps=1 if dry_run else steps,
                rounds=1 if dry_run else rounds)
  sections = {}

  def variant(group, name, config, k=0, trainer=None, **kw):
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
    trainer = trainer or Trainer(config, devices)
    return common.build_variant(group, name, config, k, trainer=trainer, peak=peak, **kw)

  # 1. tiny
  tiny = cpu_configs.get_config("tiny")
  if dry_run:
    shrink(tiny)
  v = variant("tiny", "float32", tiny)
  common.time_interleaved([v], **timing)
  sections["tiny"] = [v.row]

  # 2. + 3. ViT-L and its freezing sweep (pixel target: the same loss at every k)
  vit_l = cpu_configs.load_config_file("vit_l").get_config() 
  vit_l.batch_size = vit_l_batch
  if dry_run:
    shrink(vit_l)
  vit_l.layerlock.enabled, vit_l.layerlock.target = True, "pixel"
  vit_l.mesh.data, vit_l.mesh.fsdp, vit_l.mesh.tensor = 1, 1, 1
  trainer = Trainer(vit_l, devices)
  full = common.init_params(trainer)
  depth = plan.encoder_depth(vit_l)
  freeze = [variant("freeze_pixel", f"k={k}", vit_l, k, trainer=trainer, full_params=full)
            for k in freeze_ks(depth, dry_run, fractions)]
  log(f"ViT-L freeze sweep over k = {[v.row['frozen_layers'] for v in freeze]} "
      f"(encoder depth {depth}) ...")
  common.time_interleaved(freeze, **timing)
  rows = [v.row for v in freeze]
  common.add_freeze_savings(rows)
  sections["vit_l"] = [freeze[0].row]
  sections["freeze"] = rows

  # 4. attention paths on ViT-L at k = 0 (the config's own path is the k = 0 program above)
  attention, errors = [], {}
  for kind, impl in attention_paths:
    name = _path_name(kind, impl)
    if impl == "cudnn" and dev.platform != "gpu":
      errors[name] = "cuDNN needs an NVIDIA GPU"
      continue
    if dry_run and impl == "xla":
      continue  # on CPU "" already resolves to the XLA path: one compile fewer
    if kind == vit_l.model.attention and impl == vit_l.model.attention_impl:
      av = freeze[0].clone("attention", name)
    else:
      c = common.with_overrides(vit_l, model__attention=kind, model__attention_impl=impl)
      try:
        av = variant("attention", name, c, trainer=Trainer(c, devices),
                     full_params=full)
      except Exception as err:  # pylint: disable=broad-except
        errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        continue
    av.row["cudnn_fmha"] = has_cudnn_attention(av.compiled)
    attention.append(av)
  common.time_interleaved(attention, **timing)
  sections["attention"] = [a.row for a in attention]
  sections["attention_errors"] = errors
  return {"environment": env, **sections}


def _path_name(kind: str, impl: str) -> str:
  return f"{kind}[{impl or 'auto'}]" if kind == "dot_product" else kind


def _gib(x):
  return "-" if x is None else f"{x / 2 ** 30:.2f}"


def report(result: dict) -> str:
  env = result["environment"]
  out = [f"## gpu_check: {env['device_kind']} ({env['platform']}), jax {env['jax']}"
         + (" - DRY RUN (shrunk models on CPU; the figures mean nothing)" if env["dry_run"] else "")]
  out += ["", "| step | batch | dtype | ms/step | clips/s | model TFLOP/step | MFU | temp GiB | compile s |",
          "| --- | --: | --- | --: | --: | --: | --: | --: | --: |"]
  for key in ("tiny", "vit_l"):
    for r in result[key]:
      mfu = r.get("mfu")
      out.append(f"| {key} | {r['batch']} | {r['dtype']} | {1e3 * r['step_s']:.1f} | "
                 f"{r['clips_per_s']:.1f} | {r['model_flops'] / 1e12:.3f} | "
                 f"{'-' if mfu is None else f'{100 * mfu:.1f}%'} | {_gib(r['temp_bytes'])} | "
                 f"{r['compile_s']:.1f} |")
  out += ["", "Freezing (pixel target; saving vs k=0):", "",
          "| k | model TFLOP | ms/step | analytic saving | measured saving | realized/theoretical "
          "| temp GiB | argument GiB | output GiB |",
          "| --: | --: | --: | --: | --: | --: | --: | --: | --: |"]
  for r in result["freeze"]:
    fs, ts, rt = r.get("flops_saving"), r.get("time_saving"), r.get("realized_over_theoretical")
    out.append(f"| {r['frozen_layers']} | {r['hardware_flops'] / 1e12:.3f} | {1e3 * r['step_s']:.1f} | "
               f"{'-' if fs is None else f'{100 * fs:.1f}%'} | {'-' if ts is None else f'{100 * ts:.1f}%'} | "
               f"{'-' if rt is None else f'{rt:.2f}'} | {_gib(r['temp_bytes'])} | "
               f"{_gib(r['argument_bytes'])} | {_gib(r['output_bytes'])} |")
  out += ["", "Attention paths (ViT-L, k=0):", "", "| path | ms/step | cuDNN fused attention in HLO | temp GiB |",
          "| --- | --: | --- | --: |"]
  for r in result["attention"]:
    out.append(f"| {r['variant']} | {1e3 * r['step_s']:.1f} | {r['cudnn_fmha']} | {_gib(r['temp_bytes'])} |")
  for name, err in result["attention_errors"].items():
    out.append(f"| {name} | - | not run: {err} | - |")
  return "\n".join(out)


def main(argv):
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--platform", default="gpu", choices=("gpu", "cpu"),
                 help="gpu: the real check; cpu: a dry run of the same code on shrunk models")
  p.add_argument("--vit_l_batch", type=int, default=8, help="clips per ViT-L step")
  p.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
  p.add_argument("--rounds", type=int, default=2, help="round-robin timing rounds")
  p.add_argument("--out", default="", help="also write the raw rows as JSON here")
  p.add_argument("--freeze_fractions", default=",".join(f"{f:.4g}" for f in FREEZE_FRACTIONS),
                 help="fractions of the encoder depth to freeze in the sweep (capped at 2/3)")
  p.add_argument("--attention", default=",".join(_path_name(*p) for p in ATTENTION_PATHS),
                 help="attention paths to time: xla, dot_product[auto], dot_product[xla], "
                      "dot_product[cudnn]")
  args = p.parse_args(argv[1:])
  names = {_path_name(*path): path for path in ATTENTION_PATHS}
  unknown = sorted(set(args.attention.split(",")) - set(names))
  if unknown:
    p.error(f"unknown attention path(s) {unknown}; choose from {sorted(names)}")
  start = time.perf_counter()
  result = run(args.platform, vit_l_batch=args.vit_l_batch, steps=args.steps, rounds=args.rounds,
               fractions=tuple(float(f) for f in args.freeze_fractions.split(",")),
               attention_paths=tuple(names[n] for n in args.attention.split(",")))
  result["environment"]["wall_s"] = time.perf_counter() - start
  print(report(result))
  print(f"\n{result['environment']['wall_s']:.0f} s")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1, default=str)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
