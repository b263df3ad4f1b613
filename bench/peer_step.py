"""ONE framework's train step, timed in a process of its own (the worker of bench/torch_compare.py).

  python bench/peer_step.py --framework=ours --config=vit_s [--threads=2] [--steps=5]
  python bench/peer_step.py --framework=hf   --config=vit_s [--threads=2] [--steps=5]
  python bench/peer_step.py --framework=ours --config=vit_s --threads=1 --profile_steps=3

Prints one JSON line: per-step wall and process-CPU seconds, analytic model FLOPs of the step,
the matmul peak measured in this same process (2048^2 float32, the MFU denominator), thread
counts and versions; with --profile_steps, the op time per step split into matmul / attention /
other (bench/op_split.py), taken under each framework's own profiler. `ours` is the compiled step of layerlock_jax.trainer.Trainer (the program
training runs); `hf` is transformers.VideoMAEForPreTraining's forward + backward + gradient
clipping + AdamW on the same clip, batch, masked-token count, sizes and optimizer settings.

Why a process per framework: a PyTorch step run in a process that also holds an XLA:CPU client
was measured ~9x slower, and the XLA step ~1.8x slower, than each alone (the two thread pools
compete for the same cores). The `hf` worker never imports JAX and the `ours` worker never
imports torch; each reports which of the two it loaded, and torch_compare.py refuses a
measurement taken next to the other framework.

Configs (--config): tiny = configs/tiny.py; vit_s = bench/cpu_configs.py:vit_s.
"""
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))  # the repo root: layerlock_jax without installing
sys.path.insert(0, _HERE)                   # cpu_configs

_FRAMEWORK = flags.DEFINE_enum("framework", None, ["ours", "hf"], "Which step to time.")
_CONFIG = flags.DEFINE_enum("config", "tiny", ["tiny", "vit_s"], "Which config.")
_THREADS = flags.DEFINE_integer("threads", 2, "torch.set_num_threads (ours: the cores it is "
                                "pinned to decide XLA:CPU's pool; torch_compare.py pins both).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compile / first step.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps.")
_REMAT = flags.DEFINE_string("ours_remat", "none", "Our remat policy: 'none' (like HF without "
                             "gradient checkpointing) or 'config' (the config's own policy).")
_ATTENTION = flags.DEFINE_string("hf_attention", "sdpa", "HF attn_implementation: sdpa | eager.")
_OVERRIDES = flags.DEFINE_list("ours_overrides", [], "key=value config overrides for our step "
                               "only (e.g. model.scan_unroll=1), to try our own knobs process "
                               "against process; the HF worker refuses them.")
_MALLOC = flags.DEFINE_enum("host_malloc", "framework", ["framework", "steady", "system"],
                            "glibc malloc of this worker (layerlock_jax/host_memory.py): "
                            "'framework' = each side's own default (ours: config.host_malloc, "
                            "a steady heap on CPU; HF: glibc's defaults, as torch leaves them).")
_PROFILE = flags.DEFINE_integer("profile_steps", 0, "After the timed steps, run this many more "
                                "under the framework's own profiler and report per-step op "
                                "time split into matmul / attention / other (bench/op_split.py; "
                                "read it from a --threads=1 run, where op times add up).")
_PEAK_N = 2048


def load_config(name: str, ours_remat: str = "config", overrides=()):
  import cpu_configs  # pylint: disable=g-import-not-at-top
  try:
    return cpu_configs.get_config(name, remat=ours_remat, overrides=overrides)
  except ValueError as e:
    raise app.UsageError(f"--ours_overrides: {e}") from None


def ours_step(config):
  """(step callable, facts) for our compiled Trainer step."""
  import common  # pylint: disable=g-import-not-at-top
  from layerlock_jax import compilation  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  # Compile time is not timed, but the cache spares the wall time of every later worker.
  compilation.enable_persistent_cache(compilation.AUTO)
  jax.config.update("jax_num_cpu_devices", 1)
  start = time.perf_counter()
  variant = common.build_variant("peer", "ours", config)
  facts = {"setup_s": time.perf_counter() - start, "jax": jax.__version__,
           "remat": config.model.remat_policy,
           "peak_flops": variant.row["peak_flops_per_device"]}

  def profile(steps: int) -> dict:
    import tempfile  # pylint: disable=g-import-not-at-top
    import op_split  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory() as trace_dir:
      jax.profiler.start_trace(trace_dir)
      for _ in range(steps):
        variant.step()
      jax.profiler.stop_trace()
      times = op_split.trace_op_seconds(trace_dir)
    return op_split.split_xla(times, op_split.matmul_kinds(variant.compiled.as_text()), steps)

  return variant.step, {**facts, "_profile": profile}


def hf_videomae_config(config):
  """Our config -> transformers.VideoMAEConfig with the same sizes (light decoder only).

  Same compute, not the same numerics: HF uses a 1-D sin-cos table where we may learn a 3-D one,
  and its norm-pix target is per channel; neither changes a matmul shape. use_mean_pooling=True
  keeps HF from adding a final encoder LayerNorm that our encoder does not have.
  """
  import transformers  # pylint: disable=g-import-not-at-top
  m, dec = config.model, config.model.decoder
  pt, ph, pw = m.patch_size
  if ph != pw or dec.type != "light":
    raise ValueError("HF VideoMAE needs square patches and the light decoder")
  return transformers.VideoMAEConfig(
      image_size=config.data.image_size, patch_size=ph, num_channels=3,
      num_frames=config.data.num_frames, tubelet_size=pt, hidden_size=m.width,
      num_hidden_layers=m.depth, num_attention_heads=m.num_heads, intermediate_size=m.mlp_dim,
      hidden_act="gelu", layer_norm_eps=m.layer_norm_eps, qkv_bias=True,
      use_mean_pooling=True, decoder_num_attention_heads=dec.num_heads,
      decoder_hidden_size=dec.width, decoder_num_hidden_layers=dec.depth,
      decoder_intermediate_size=dec.mlp_dim, norm_pix_loss=True)


def hf_step(config, *, threads: int, attention: str):
  """(step callable, facts) for VideoMAEForPreTraining: forward + backward + clip + AdamW.

  Same batch, clip, masked count (a fixed bool_masked_pos: HF needs equal counts per row),
  optimizer hyper-parameters and gradient clipping as our step; gradient checkpointing off.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from layerlock_jax import plan  # pylint: disable=g-import-not-at-top  (pure Python, no JAX)
  torch.set_num_threads(threads)
  torch.manual_seed(config.seed)
  start = time.perf_counter()
  model = transformers.VideoMAEForPreTraining._from_config(
      hf_videomae_config(config), attn_implementation=attention)
  model.train()
  o = config.optimizer
  opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.b1, o.b2), eps=o.eps,
                          weight_decay=o.weight_decay)
  b, d = config.batch_size, config.data
  video = torch.rand(b, d.num_frames, 3, d.image_size, d.image_size)
  geo = plan.token_geometry(config)
  masked = torch.rand(b, geo["num_tokens"]).argsort(dim=1)[:, :geo["num_masked"]]
  mask = torch.zeros(b, geo["num_tokens"], dtype=torch.bool).scatter_(1, masked, True)
  autocast = config.model.dtype == "bfloat16"

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
      loss = model(video, bool_masked_pos=mask).loss
    loss.backward()
    if o.grad_clip > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
    opt.step()

  step()  # the first call allocates the AdamW moments: the analogue of our compile
  facts = {"setup_s": time.perf_counter() - start, "torch": torch.__version__,
           "transformers": transformers.__version__, "attention": attention,
           "torch_threads": torch.get_num_threads(), "peak_flops": _torch_peak(torch)}

  def profile(steps: int) -> dict:
    import op_split  # pylint: disable=g-import-not-at-top
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
      for _ in range(steps):
        step()
    return op_split.split_torch(
        [(e.key, e.self_cpu_time_total) for e in prof.key_averages()], steps)

  return step, {**facts, "_profile": profile}


def _torch_peak(torch, n: int = _PEAK_N, repeats: int = 10) -> float:
  """Best-of-`repeats` FLOP/s of an n x n float32 matmul in torch (this process, these threads)."""
  a, b = torch.full((n, n), 0.5), torch.full((n, n), 0.25)
  torch.mm(a, b)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    torch.mm(a, b)
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best


def measure(framework: str, config_name: str, *, threads: int, warmup: int, steps: int,
            ours_remat: str, hf_attention: str, ours_overrides=()) -> dict:
  if framework == "hf" and ours_overrides:
    raise app.UsageError("--ours_overrides applies to --framework=ours only")
  config = load_config(config_name, ours_remat if framework == "ours" else "config",
                       ours_overrides if framework == "ours" else ())
  from layerlock_jax import flops  # pylint: disable=g-import-not-at-top
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  malloc = _MALLOC.value if _MALLOC.value != "framework" else (
      config.host_malloc if framework == "ours" else "system")
  malloc = host_memory.configure(malloc)  # before either framework starts its threads
  if framework == "ours":
    step, facts = ours_step(config)
  else:
    step, facts = hf_step(config, threads=threads, attention=hf_attention)
  for _ in range(warmup):
    step()
  wall, cpu = [], []
  for _ in range(steps):
    start, start_cpu = time.perf_counter(), time.process_time()
    step()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  profile = facts.pop("_profile")
  op_ms = profile(_PROFILE.value) if _PROFILE.value > 0 else None
  model_flops = flops.step_flops(config)["model_flops"]
  median = statistics.median(wall)
  peak = facts.get("peak_flops")
  return {
      "framework": framework, "config": config_name, "step_s": wall, "cpu_s": cpu,
      "median_step_s": median, "median_cpu_s": statistics.median(cpu),
      "model_flops": model_flops, "mfu_vs_own_matmul": model_flops / median / peak if peak else None,
      "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "threads_flag": threads, "loaded_jax": "jax" in sys.modules, "host_malloc": malloc,
      "loaded_torch": "torch" in sys.modules, "loadavg": os.getloadavg(),
      "overrides": list(ours_overrides), "op_ms": op_ms, **facts}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _FRAMEWORK.value is None:
    raise app.UsageError("--framework=ours|hf is required")
  result = measure(_FRAMEWORK.value, _CONFIG.value, threads=_THREADS.value, warmup=_WARMUP.value,
                   steps=_STEPS.value, ours_remat=_REMAT.value, hf_attention=_ATTENTION.value,
                   ours_overrides=_OVERRIDES.value)
  print("PEER_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
