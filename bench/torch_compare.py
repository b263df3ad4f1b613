"""Our train step vs Hugging Face transformers' VideoMAEForPreTraining (PyTorch), issue 9.

  pip install -e .[torch]      # torch + transformers: optional, only for this comparison
  python bench/torch_compare.py [--config=configs/tiny.py] [--vit_config=bench/cpu_configs.py:vit_s]

For each config (the tiny config and a ViT-S-sized one), in ONE process, the same clip size,
batch, masked-token count, model sizes and AdamW + clipping settings: our compiled Trainer step
under the config's own remat policy, our step with remat "none" when the config's policy differs
(HF runs with gradient checkpointing off, so this isolates what remat costs us), and the HF step
(forward + backward + clip + AdamW). torch gets --torch_threads threads (2 = this machine's
cores; XLA:CPU uses every core too). Reported: torch step time / our step time (> 1: ours wins).
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from layerlock_jax import bench

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "tiny.py"), "First config (tiny).",
    lock_config=True)
_VIT_CONFIG = config_flags.DEFINE_config_file(
    "vit_config", os.path.join(_HERE, "cpu_configs.py") + ":vit_s",
    "Second config (ViT-S sized); --vit_config.a.b=value overrides.", lock_config=True)
_WHICH = flags.DEFINE_list("which", ["tiny", "vit_s"], "Which of the two configs to run.")
bench.define_timing_flags()


def compare(name: str, config, *, warmup, steps, rounds, threads, attentions, log=print):
  """JAX (config remat [, remat none]) and HF variants of one config, timed round-robin."""
  peak: dict = {}
  log(f"[{name}] building JAX step ...")
  jax_v = bench.build_variant(name, f"jax remat={config.model.remat_policy}", config, peak=peak)
  variants = [jax_v]
  if config.model.remat_policy != "none":
    c = bench.with_overrides(config, model__remat_policy="none")
    variants.append(bench.build_variant(name, "jax remat=none", c, peak=peak))
  log(f"[{name}] building HF step(s) {attentions} ...")
  for a in attentions:
    v = bench.torch_variant(config, threads=threads, attn_implementation=a)
    v.row["group"] = name
    variants.append(v)
  log(f"[{name}] timing {len(variants)} variants ...")
  bench.time_interleaved(variants, warmup=warmup, steps=steps, rounds=rounds)
  rows = [v.row for v in variants]
  for r in rows:
    r["config"] = name
    if r["variant"].startswith("hf_"):
      for j in variants:
        if not j.row["variant"].startswith("hf_"):
          r[f"torch_over[{j.row['variant']}]"] = r["step_s"] / j.row["step_s"]
  return rows


def describe(name, c) -> str:
  m, d = c.model, c.model.decoder
  return (f"{name}: width {m.width} depth {m.depth} heads {m.num_heads} mlp {m.mlp_dim}, "
          f"decoder {d.width}w x {d.depth} ({d.num_heads} heads, mlp {d.mlp_dim}), clip "
          f"{c.data.num_frames}x{c.data.image_size}^2 tubelet {tuple(m.patch_size)}, mask "
          f"{c.masking.ratio}, batch {c.batch_size}, dtype {m.dtype}, remat {m.remat_policy}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not bench.torch_available():
    print("torch and transformers are not importable: pip install -e .[torch]")
    return 1
  f = flags.FLAGS
  env = bench.environment()
  configs = {"tiny": _CONFIG.value, "vit_s": _VIT_CONFIG.value}
  rows = []
  for name in _WHICH.value:
    rows += compare(name, configs[name], warmup=f.warmup, steps=f.steps, rounds=f.rounds,
                    threads=f.torch_threads, attentions=f.torch_attention)
  env["loadavg_end"] = os.getloadavg()
  print()
  for name in _WHICH.value:
    print(describe(name, configs[name]))
  print(bench.format_table(rows))
  print()
  for r in rows:
    for key, value in r.items():
      if key.startswith("torch_over["):
        print(f"{r['config']:<6} {r['variant']:<22} / {key[len('torch_over['):-1]:<28} "
              f"step time ratio {value:.2f}  ({'ours faster' if value > 1 else 'HF faster'})")
  print(f"\nload average {env['loadavg_start']} -> {env['loadavg_end']}")
  bench.write_json({"rows": rows, "environment": env}, f.out)
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
