"""`python -m experiments.reproduce`: the claim rules on hand-made numbers, the experiment configs,
and the quick mode end to end (it is what CI runs), including regeneration from scratch."""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from layerlock_jax.checkpoint import fork as checkpoint_fork
from layerlock_jax import flops
from layerlock_jax import plan as plan_lib
from experiments import reproduce
from layerlock_jax.config.validation import validate
from experiments import claims
from experiments import convergence


# ------------------------------------------------------------------------------------------------
# Experiment configs.
# ------------------------------------------------------------------------------------------------

def step_flops(config, k: int = 0, **kwargs):
  """flops.step_flops at the stage with k frozen blocks (its spec as the freeze table makes it)."""
  target = plan_lib.block_target(k) if k else plan_lib.PIXELS
  return flops.step_flops(config, plan_lib.stage_spec(config, k, target), **kwargs)



@pytest.mark.parametrize("variant", ["mae", "freeze_pixel", "layerlock", "naive_latent",
                                     "layerlock_no_miniwarmup", "mae_learned_posemb",
                                     "mae,freeze=3@150", "layerlock,quick", "mae,freeze=1@10,quick",
                                     "layerlock,data=camera_motion,trigger=convergence,center",
                                     "mae,data=camera_motion,quick"])
def test_layerlock_claims_variants_validate(variant):
  config = reproduce.Run("layerlock_claims", variant, 0).config()
  validate(config, num_devices=1)
  arm = variant.split(",")[0]
  ll = config.layerlock
  assert config.naive_latent.enabled == (arm == "naive_latent")
  assert config.model.posemb == ("learned_3d" if arm == "mae_learned_posemb" else "rope")
  if "freeze=" in variant:
    layers, step = map(int, re.search(r"freeze=(\d+)@(\d+)", variant).groups())
    assert ll.enabled and ll.target == "pixel" and tuple(map(tuple, ll.explicit)) == ((step, layers),)
  elif arm in ("mae", "naive_latent", "mae_learned_posemb"):
    assert not ll.enabled
  else:
    assert ll.enabled and ll.target == ("pixel" if arm == "freeze_pixel" else "latent")
    assert ll.mini_warmup_steps == (0 if arm == "layerlock_no_miniwarmup" else
                                    (2 if "quick" in variant else 20))
  assert config.total_steps == (30 if "quick" in variant else 600)
  assert config.data.source == ("camera_motion" if "data=camera_motion" in variant
                                else "moving_mnist")
  assert ll.trigger == ("convergence" if "trigger=convergence" in variant else "schedule")
  assert ll.target_center == ("clip" if "center" in variant.split(",") else "none")


@pytest.mark.parametrize("variant", ["layerlok", "mae,freeze=1", "layerlock,freeze=1@10",
                                     "mae,slow", "mae,data=kinetics"])
def test_layerlock_claims_rejects_bad_variants(variant):
  with pytest.raises(ValueError):
    reproduce.Run("layerlock_claims", variant, 0).config()


@pytest.mark.parametrize("variant", ["concurrent", "sequential", "e2e", "e2e,quick"])
def test_blockwise_claims_variants_validate(variant):
  config = reproduce.Run("blockwise_claims", variant, 1).config()
  validate(config, num_devices=1)
  assert config.seed == 1 and config.blockwise.regime == variant.split(",")[0]
  assert config.model.depth == 6
  assert config.blockwise.num_segments == (2 if "quick" in variant else 3)


@pytest.mark.parametrize("variant", ["vjepa", "vjepa_layerlock", "vjepa,quick",
                                     "vjepa_layerlock,quick"])
def test_vjepa_claims_variants_validate(variant):
  config = reproduce.Run("vjepa_claims", variant, 1).config()
  validate(config, num_devices=1)
  arm = variant.split(",")[0]
  assert config.seed == 1 and config.vjepa.enabled and config.vjepa.ema
  assert config.layerlock.enabled == (arm == "vjepa_layerlock")
  assert config.total_steps == (30 if "quick" in variant else 300)
  assert config.data.source == "camera_motion"


def test_vjepa_claims_rejects_bad_variants():
  for bad in ("vjepa_ll", "vjepa,gpu"):
    with pytest.raises(ValueError):
      reproduce.Run("vjepa_claims", bad, 0).config()


def test_run_names_and_commands_are_distinct():
  for quick, ablations in ((False, False), (True, False), (False, True)):
    plan = reproduce.Plan.make(quick, ablations)
    assert ("mae_learned_posemb" in plan.main_runs()) == ablations
    runs = [r for rs in plan.main_runs().values() for r in rs]
    runs += [r for rs in plan.long_freezing_runs().values() for r in rs]
    runs += [r for _, _, r in plan.grid_runs()]
    runs += [r for rs in plan.blockwise_runs().values() for r in rs]
    runs += [r for rs in plan.camera_runs().values() for r in rs]
    runs += [r for rs in plan.vjepa_runs().values() for r in rs]
    names = [r.name for r in runs]
    assert len(set(names)) == len(names), names
    for r in runs:
      cmd = r.command("/o")
      assert f"--config.seed={r.seed}" in cmd and cmd.endswith(f"--workdir=/o/runs/{r.name}")
      assert ("quick" in r.variant) == quick


def test_freezing_arms_and_grid_cells_fork_from_mae_of_their_seed_and_data_at_the_first_freeze():
  for quick, ablations, scale in ((False, True, "cpu"), (True, False, "cpu"), (False, False, "gpu")):
    plan = reproduce.Plan.make(quick, ablations, scale)
    order = (plan.main_order() + plan.center_runs() +
             [r for rs in plan.long_freezing_runs().values() for r in rs] +
             [r for rs in plan.camera_runs().values() for r in rs] +
             [r for _, _, r in plan.grid_runs()])
    order = sorted(order, key=lambda r: r.fork_source is not None)  # sources before forks
    names = [r.name for r in order]
    forked = [r for r in order if r.fork_source is not None]
    assert {r.arm for r in forked} == {"freeze_pixel", "layerlock", "mae"} - (
        {"mae"} if scale == "gpu" else set()) | (
        {"layerlock_no_miniwarmup"} if ablations else set())
    for r in order:
      if r.fork_source is None:  # MAE itself, naive latent (its loss differs from step 0), ...
        assert r.arm in ("mae", "naive_latent", "mae_learned_posemb") and "freeze=" not in r.variant
        continue
      src = r.fork_source
      assert src.arm == "mae" and src.seed == r.seed and names.index(src.name) < names.index(r.name)
      assert ("camera_motion" in src.variant) == ("camera_motion" in r.variant)
      assert src.config().total_steps == r.config().total_steps
      table = plan_lib.freeze_table(r.config(), plan_lib.encoder_depth(r.config()))
      assert r.fork_step == min(s.start_step for s in table if s.frozen_layers > 0) > 0
      source_config = src.config()  # saves that step, and keeps it
      assert r.fork_step % source_config.checkpoint_every == 0
      assert source_config.keep_every == source_config.checkpoint_every
      # The rule a fork is checked by when it starts admits it (its first steps are MAE's).
      checkpoint_fork.check_forkable(json.loads(source_config.to_json_best_effort()),
                                     r.config("/o"), r.fork_step, "src")
      assert (f"--config.fork_from=/o/runs/{src.name}/checkpoints/{r.fork_step} "
              in r.command("/o"))


def test_claim_2b_trains_its_own_longer_pair_and_can_reach_its_flops_bar():
  """Claim 2b: MAE and freeze_pixel at every seed, `long_freezing_steps` steps each, the first
  freeze at the same step as claim 2's, and a table that saves at least the bar by the FLOP
  model's stage-weighted sum, which claim 2's own table at 600 steps does not."""
  assert not reproduce.Plan.make(False).long_freezing_runs()  # beyond the default's hour
  plan = reproduce.Plan.make(False, long_freezing=True)
  runs = plan.long_freezing_runs()
  assert plan.long_freezing_steps and "freeze_pixel" in plan.main_runs()
  short = {arm: plan.main_runs()[arm][0].config() for arm in ("mae", "freeze_pixel")}
  for arm in ("mae", "freeze_pixel"):
    assert [r.seed for r in runs[arm]] == list(plan.seeds)
    assert all(r.config().total_steps == plan.long_freezing_steps > short[arm].total_steps
               for r in runs[arm])
  fp, mae = runs["freeze_pixel"][0].config(), runs["mae"][0].config()
  assert fp.layerlock.target == "pixel" and fp.eval_every == mae.eval_every == 0
  assert claims.first_freeze_step(fp) == claims.first_freeze_step(short["freeze_pixel"])
  saving = lambda f, m: 1 - claims.analytic_train_flops(f) / claims.analytic_train_flops(m)
  assert saving(fp, mae) >= reproduce.LONG_FREEZING_SAVING
  assert saving(short["freeze_pixel"], short["mae"]) < reproduce.LONG_FREEZING_SAVING
  for quick, scale in ((True, "cpu"), (False, "gpu")):
    assert not reproduce.Plan.make(quick, scale=scale).long_freezing_runs()


def test_later_seeds_start_after_every_earlier_seed_of_their_group():
  """Two seeds of one variant compile the same programs: the later seed is queued behind the
  earlier seeds' runs of its group so that it reads them from the cache."""
  plan = reproduce.Plan.make(False, long_freezing=True)
  runs = [r for rs in plan.main_runs().values() for r in rs]
  runs += [r for rs in plan.long_freezing_runs().values() for r in rs]
  runs += [r for rs in plan.vjepa_runs().values() for r in rs]
  runs += [r for rs in plan.blockwise_runs().values() for r in rs]
  staggered = reproduce.stagger_seeds(runs)
  assert sorted(r.name for r in staggered) == sorted(r.name for r in runs)
  names = [r.name for r in staggered]
  sources = {r.fork_source for r in runs if r.fork_source}
  group = lambda r: 0 if r in sources else 1 + (r.fork_source is not None)
  assert [group(r) for r in staggered] == sorted(group(r) for r in staggered)
  for r in staggered:
    if r.fork_source:
      assert names.index(r.fork_source.name) < names.index(r.name)
    twins = [t for t in staggered if (t.file, t.variant) == (r.file, r.variant) and t.seed < r.seed]
    earlier = [t for t in staggered if group(t) == group(r) and
               t.seed == min(u.seed for u in staggered if (u.file, u.variant) == (t.file, t.variant))]
    if twins:  # a later seed: behind every first-seed run of its group
      assert all(names.index(t.name) < names.index(r.name) for t in earlier)
  v = names.index
  assert v("vjepa_layerlock_s3") - v("vjepa_layerlock_s2") > 2  # not side by side on 2 lanes


def test_gpu_scale_plan_trains_complete_pairs_first_and_validates():
  plan = reproduce.Plan.make(False, scale="gpu")
  order = [r.name for r in plan.main_order()]
  # MAE / LayerLock pairs seed by seed at the verdict seeds, then the single-seed arms of claims
  # 2 and 3.
  assert order == ["mae_s2", "layerlock_s2", "mae_s3", "layerlock_s3", "mae_s4", "layerlock_s4",
                   "freeze_pixel_s2", "naive_latent_s2"]
  assert not plan.grid_runs() and not any(plan.blockwise_runs().values())
  assert not any(plan.camera_runs().values())
  for run in plan.main_order():
    assert run.variant.endswith(",gpu") and run.command("/o").count(":") == 1
    validate(run.config(), num_devices=8)
  config = reproduce.Run("layerlock_claims", "layerlock,gpu", 0).config()
  m = config.model
  assert (m.width, m.depth, m.num_heads, m.mlp_dim) == (384, 12, 6, 1536)  # ViT-S
  t, h, w = (config.data.num_frames // m.patch_size[0], config.data.image_size // m.patch_size[1],
             config.data.image_size // m.patch_size[2])
  assert t * h * w == 512
  table = plan_lib.freeze_table(config, plan_lib.encoder_depth(config))
  # Pixel phase for 1000 of 2400 steps, then 2 more blocks every 250 steps up to 8 of 12.
  assert [(s.start_step, s.frozen_layers) for s in table] == [
      (0, 0), (1000, 2), (1250, 4), (1500, 6), (1750, 8)]
  with pytest.raises(ValueError, match="quick and gpu"):
    reproduce.Run("layerlock_claims", "mae,quick,gpu", 0).config()
  for bad in ({"quick": True}, {"ablations": True}):
    with pytest.raises(ValueError, match="scale=gpu"):
      reproduce.Plan.make(bad.get("quick", False), bad.get("ablations", False), scale="gpu")
  with pytest.raises(ValueError, match="unknown scale"):
    reproduce.Plan.make(False, scale="tpu")


def test_a_preempted_run_stops_the_reproduction_and_is_never_evaluated(tmp_path, monkeypatch):
  """SIGTERM during a run: its checkpoint is kept, nothing is evaluated or cached from the
  half-trained state, and an evaluation cached before retraining is dropped as stale."""
  import types
  from layerlock_jax import train
  calls = []

  def fake_run(config, workdir, **unused):
    calls.append(workdir)
    return types.SimpleNamespace(preempted=True, state="half-trained")

  monkeypatch.setattr(train, "run", fake_run)
  evaluated = []
  monkeypatch.setattr(reproduce.Reproduction, "_evaluate",
                      lambda self, *a, **k: evaluated.append(a) or {})
  repro = reproduce.Reproduction(str(tmp_path), reproduce.Plan.make(True))
  run = repro.plan.main_order()[0]
  stale = tmp_path / "runs" / run.name / "eval.json"
  stale.parent.mkdir(parents=True)
  stale.write_text("{}")  # from an older, unfinished attempt (no summary.json)
  with pytest.raises(reproduce.Preempted, match="rerun the same command"):
    repro.train_and_evaluate(run)
  assert calls == [repro.workdir(run)] and not evaluated and not stale.exists()


def test_a_cached_evaluation_is_reused_only_under_todays_evaluation_code_and_settings(tmp_path):
  plan = reproduce.Plan.make(True)
  repro = reproduce.Reproduction(str(tmp_path), plan)
  fp = reproduce.eval_fingerprint(plan)
  path = tmp_path / "eval.json"
  path.write_text(json.dumps({"eval_fingerprint": fp, "tasks": {}}))
  assert repro.cached(str(path)) == {"eval_fingerprint": fp, "tasks": {}}
  path.write_text(json.dumps({"eval_fingerprint": "older", "tasks": {}}))
  assert repro.cached(str(path)) is None
  path.write_text(json.dumps({"tasks": {}}))  # written before fingerprints existed
  assert repro.cached(str(path)) is None
  # The probe's settings are part of it; the pretraining seeds are not.
  assert reproduce.eval_fingerprint(dataclasses.replace(plan, probe_seeds=(0, 1, 2))) != fp
  assert reproduce.eval_fingerprint(dataclasses.replace(plan, seeds=(5, 6))) == fp


def test_eval_data_is_one_set_per_source_clip_shape_and_data_seed(tmp_path, monkeypatch):
  """Each seed's test sample is its own (data seed EVAL_DATA_SEED + seed), the same for every arm
  of that seed; a source rendered at two clip shapes is two sets."""
  loaded = []
  monkeypatch.setattr(reproduce.depthwise, "load_eval_data",
                      lambda config, **k: loaded.append((config.data.num_frames,
                                                         k["data_seed"])) or object())
  repro = reproduce.Reproduction(str(tmp_path), reproduce.Plan.make(False))
  camera = reproduce.Run("layerlock_claims", "mae,data=camera_motion", 2).config()
  vjepa = reproduce.Run("vjepa_claims", "vjepa", 2).config()
  assert camera.data.source == vjepa.data.source
  seed2 = reproduce.EVAL_DATA_SEED + 2
  a = repro.eval_data(camera, seed2)
  assert a is repro.eval_data(camera, seed2)
  b = repro.eval_data(vjepa, seed2)
  c = repro.eval_data(camera, seed2 + 1)
  assert a is not b and c is not a
  assert loaded == [(16, seed2), (4, seed2), (16, seed2 + 1)]


# ------------------------------------------------------------------------------------------------
# Claim rules on hand-made numbers.
# ------------------------------------------------------------------------------------------------


def _grid(increases: dict[tuple[int, int], float]):
  base = {"final_loss": 1.0}
  cells = [{"layers": l, "step": t, "final_loss": 1.0 + inc} for (l, t), inc in increases.items()]
  return convergence.summarize_grid(base, cells, tail_fraction=0.1, free_tolerance=0.01,
                                    total_steps=600, encoder_depth=6)


def test_convergence_claim_staircase():
  # L=1 free from T=60 on; L=3 only from T=300: the paper's picture.
  good = _grid({(1, 60): 0.005, (1, 150): 0.002, (1, 300): 0.0,
                (3, 60): 0.08, (3, 150): 0.03, (3, 300): 0.004})
  c = claims.convergence_claim(good)
  assert c["verdict"].startswith("reproduced") and c["ordered_pairs"] == c["pairs"] == 3
  assert good["earliest_free_step"] == {"1": 60, "3": 300}
  # Deep blocks cheaper to freeze than shallow ones at every T: the opposite order.
  bad = _grid({(1, 60): 0.08, (1, 150): 0.05, (3, 60): 0.01, (3, 150): 0.001})
  assert claims.convergence_claim(bad)["verdict"].startswith("not reproduced")
  # Ordered at every T, but both prefixes become free at the same T: no staircase to see.
  flat = _grid({(1, 100): 0.029, (1, 300): 0.002, (3, 100): 0.033, (3, 300): 0.002})
  assert claims.convergence_claim(flat)["verdict"].startswith("partly")
  mixed = _grid({(1, 60): 0.02, (1, 150): 0.05, (1, 300): 0.0,
                 (3, 60): 0.03, (3, 150): 0.01, (3, 300): 0.02})
  assert claims.convergence_claim(mixed)["verdict"].startswith("partly")


def _record(attentive, linear=0.5, collapsed=False, chance=0.1, norm_std=0.4):
  return {"probe": {"attentive": attentive, "linear": linear, "knn_top1": linear,
                    "attentive_over_chance": attentive - chance,
                    "linear_over_chance": linear - chance, "effective_rank": 10.0,
                    "normalized_std": norm_std, "collapsed": collapsed, "tasks": {}},
          "eval_curve": [], "encoder_depth": 6}


def test_analytic_train_flops_is_the_stage_weighted_sum():
  config = reproduce.Run("layerlock_claims", "freeze_pixel", 0).config()
  # Two blocks at 400, two more at 450, 600 steps: steps per k = 400 (k=0), 50 (k=2), 150 (k=4).
  per_k = {k: step_flops(config, k)["model_flops"] for k in range(5)}
  expected = 400 * per_k[0] + 50 * per_k[2] + 150 * per_k[4]
  assert claims.analytic_train_flops(config) == pytest.approx(expected, rel=1e-12)
  mae = reproduce.Run("layerlock_claims", "mae", 0).config()
  assert claims.analytic_train_flops(mae) == pytest.approx(600 * per_k[0], rel=1e-12)


def test_probe_summary_reads_the_last_block():
  evaluation = {"blocks": [0, 1, 2],
                "tasks": {"a": {"chance": 0.5, "linear": [0.1, 0.2, 0.9], "knn_top1": [0, 0, 0.8],
                                "attentive": {"2": 0.7}},
                          "b": {"chance": 0.25, "linear": [0.1, 0.2, 0.5],
                                "knn_top1": [0, 0, 0.4], "attentive": {"2": 0.25}}},
                "collapse": [{}, {}, {"effective_rank": 3.0, "pooled_normalized_std": 0.01,
                                      "collapsed": True}]}
  s = claims.probe_summary(evaluation)
  assert s["block"] == 2 and s["linear"] == pytest.approx(0.7)
  assert s["attentive"] == pytest.approx(0.475)
  assert s["attentive_over_chance"] == pytest.approx(((0.7 - 0.5) + (0.25 - 0.25)) / 2)
  assert s["collapsed"] and s["normalized_std"] == 0.01


def _evaluation(depth=6, att=None, std=None):
  """A hand-made evaluation of a `depth`-block encoder with one task: linear accuracy j/10 at
  block j, attentive probes at the given blocks."""
  return {"blocks": list(range(depth + 1)),
          "tasks": {"a": {"chance": 0.1, "linear": [j / 10 for j in range(depth + 1)],
                          "knn_top1": [0.0] * (depth + 1), "attentive": att or {},
                          "attentive_standardize": std or {}}},
          "collapse": [{} for _ in range(depth)] + [{"collapsed": False}]}


def test_headline_is_the_attentive_probe_at_the_4ds_depth_with_a_fallback_for_old_caches():
  new = _evaluation(att={"4": 0.6, "6": 0.3}, std={"4": 0.7, "6": 0.5})
  assert claims.headline_block(new, 6) == 4
  s = claims.probe_summary(new, claims.headline_block(new, 6))
  assert s["attentive"] == 0.6 and s["attentive_standardize"] == 0.7 and s["linear"] == 0.4
  old = _evaluation(att={"6": 0.3})  # cached before the 0.95-depth probe existed
  assert claims.headline_block(old, 6) == 6


def test_readout_table_averages_each_probe_and_depth_over_seeds():
  records = [{"readouts": claims.readouts(_evaluation(att={"4": a, "6": b}, std={"4": c}), 6)}
             for a, b, c in ((0.6, 0.3, 0.7), (0.4, 0.5, 0.9))]
  table = claims.readout_table({"mae": records, "empty": []})
  assert list(table) == ["mae"]
  row = table["mae"]
  assert row["attentive@0.95"] == pytest.approx(0.5)
  assert row["attentive@last"] == pytest.approx(0.4)
  assert row["attentive_standardize@0.95"] == pytest.approx(0.8)
  assert row["attentive_standardize@last"] is None  # not measured there
  assert row["linear@0.95"] == pytest.approx(0.4) and row["linear@last"] == pytest.approx(0.6)


# ------------------------------------------------------------------------------------------------
# The quick mode, end to end (CI runs this).
# ------------------------------------------------------------------------------------------------


def _strip_timing(x):
  """results.json without wall-clock values (the only ones allowed to differ between runs)."""
  if isinstance(x, dict):
    return {k: _strip_timing(v) for k, v in x.items()
            if not any(w in k for w in ("seconds", "time", "workdir"))}
  if isinstance(x, list):
    return [_strip_timing(v) for v in x]
  return x


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reproduce_quick(out: str) -> dict:
  """`python -m experiments.reproduce --quick --out=OUT` as a user runs it: its own process, on
  the one CPU device of a laptop (this suite's 8 forced devices would partition every program 8
  ways: ~1.7x the CPU time for the same smoke run). Returns the results.json it wrote."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
  proc = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--quick", f"--out={out}"],
                        cwd=_REPO, env=env, capture_output=True, text=True, timeout=1800,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(out, "results.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("reproduce_quick"))
  return out, _reproduce_quick(out)


@pytest.mark.slow
def test_quick_report_states_every_claim_with_figures(quick_run):
  out, results = quick_run
  with open(os.path.join(out, "report.md")) as f:
    report = f.read()
  assert "QUICK MODE" in report
  on_disk = json.load(open(os.path.join(out, "results.json")))
  # Quick mode leaves out the camera-motion arms (claim 4b): the full run has them.
  assert set(on_disk["claims"]) == {"convergence", "freezing", "collapse", "layerlock_vs_mae",
                                    "blockwise", "vjepa_layerlock"}
  assert set(reproduce.Plan.make(False).camera_runs()) == {"mae", "layerlock"}
  assert "Readout table" in report
  for key, claim in on_disk["claims"].items():
    assert re.match(r"(reproduced|partly reproduced|not reproduced|inconclusive|uninformative|"
                    r"not measured)", claim["verdict"]), key
    assert f"**Verdict: {claim['verdict']}.**" in report
    fig = os.path.join(out, f"fig_{key}.png")
    assert f"]({os.path.basename(fig)})" in report
    with open(fig, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # Two seeds at most in a quick run: no statistical claim can be reproduced; each one's evidence
  # judges again to the verdict it states, from results.json alone.
  from experiments import stats  # pylint: disable=g-import-not-at-top
  fz, lv = on_disk["claims"]["freezing"], on_disk["claims"]["layerlock_vs_mae"]
  for claim, test, base, new in ((fz, "equivalence", "mae", "freeze_pixel"),
                                 (lv, "superiority", "mae", "layerlock")):
    again = stats.judge(test, claim["evidence"], base, new)
    assert again["verdict"] == claim["judgement"]["verdict"] != "reproduced"
    assert claim["verdict"].startswith(again["verdict"]) or claim["verdict"].startswith("not")
  assert on_disk["code"]["commit"] and on_disk["rules"]["MIN_SEEDS"] == stats.MIN_SEEDS
  head = json.load(open(os.path.join(out, "runs", reproduce.Plan.make(True).main_runs()["mae"][
      0].name, "eval.json")))["headline"]
  assert head["probe_seeds"] == [0, 1] and len(head["selection"]) == 2
  assert all(len(t["train_accuracy"]) == 2 for t in head["tasks"].values())
  # Numbers come from the results: spot-check a few formatted values.
  assert f"{fz['probe']['mae']['mean']:.3f}" in report
  assert f"{100 * fz['analytic_flops_saving']:.1f}%" in report
  # Every run is listed with its exact command, and the command's config is what was trained.
  for run in results["runs"]:
    assert f"`{run['command']}`" in report
  sample = reproduce.Plan.make(True).main_runs()["layerlock"][0]
  trained = json.load(open(os.path.join(out, "runs", sample.name, "config.json")))
  assert trained == json.loads(sample.config(out).to_json_best_effort())
  # LayerLock started from MAE's checkpoint at its first freeze (its command says so).
  summary = json.load(open(os.path.join(out, "runs", sample.name, "summary.json")))
  assert summary["forked_from"] == sample.fork_path(out) and summary["resumed_from"] == 10


@pytest.mark.slow
def test_quick_freezing_measures_the_frozen_stages(quick_run):
  _, results = quick_run
  fz = results["claims"]["freezing"]
  ks = [r["frozen_layers"] for r in fz["per_stage"]]
  assert ks == [0, 1]  # quick LayerLock freezes 1 block
  ratios = [r["flops_ratio"] for r in fz["per_stage"]]
  assert ratios[0] == pytest.approx(1.0) and ratios[0] > ratios[1]
  assert 0 < fz["analytic_flops_saving"] < 1
  # The compiled programs really shrink when blocks freeze (no backward through them).
  temps = [r["temp_bytes"] for r in fz["per_stage"]]
  assert temps[1] < temps[0]


@pytest.mark.slow
def test_quick_regenerates_a_deleted_run_with_the_same_numbers(quick_run):
  out, results = quick_run
  victim = reproduce.Plan.make(True).main_runs()["naive_latent"][0]
  shutil.rmtree(os.path.join(out, "runs", victim.name))
  os.remove(os.path.join(out, "report.md"))
  again = _reproduce_quick(out)
  first, second = _strip_timing(results), _strip_timing(again)
  assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
  assert os.path.exists(os.path.join(out, "report.md"))
  assert np.isfinite(again["claims"]["collapse"]["table"]["naive_latent"]["normalized_std"])
