"""experiments/claims.py: every verdict branch of every claim function, on hand-built runs.

Each record is what experiments.reproduce hands the claims: a run's evaluation (per-task probe
accuracies, the headline readout at its probe seeds, per-depth rows, collapse statistics) and the
bookkeeping around it. The per-seed numbers are chosen so that the rules of experiments/stats.py
land on one branch each; the expected verdicts are the rules' own words."""
import numpy as np
import pytest

from experiments import claims
from experiments import stats

DEPTH = 6
HEAD = 4  # depthwise.readout_block(6)
SEEDS = [2, 3, 4, 5, 6]
# A per-seed baseline with a realistic seed spread; arms differ from it per seed by small noise.
BASE = [0.50, 0.53, 0.48, 0.52, 0.49]
JITTER = [0.002, -0.001, 0.0, 0.001, -0.002]
WIDE = [0.08, -0.06, 0.06, -0.04, 0.0]  # halved by the mean over two tasks
CHANCE = {"digit": 0.1, "speed": 0.34}


def _evaluation(acc: dict[str, float], *, data_seed=None, collapsed=False, norm_std=0.4,
                init_seed=None):
  """One evaluation: the headline readout at 3 probe seeds (mean `acc[task]`), the attentive
  probe at the headline block, the linear probe equal to `acc` at the last block."""
  tasks = {t: {"chance": CHANCE[t], "num_classes": 10,
               "linear": [0.1] * DEPTH + [v], "knn_top1": [0.1] * (DEPTH + 1),
               "attentive": {str(HEAD): v}} for t, v in acc.items()}
  rows = [{"linear/mean": float(np.mean([t["linear"][j] for t in tasks.values()])),
           "linear_cka_prev": 0.95, "token_cosine_similarity": 0.5,
           **{f"knn_mAP/{t}": 0.1 for t in tasks}} for j in range(DEPTH + 1)]
  ev = {"blocks": list(range(DEPTH + 1)), "num_test": 1024, "data_seed": data_seed,
        "tasks": tasks, "rows": rows,
        "headline": {"block": HEAD, "probe_seeds": [0, 1, 2],
                     "tasks": {t: {"accuracy": [v - 0.002, v, v + 0.002],
                                   "train_accuracy": [0.9] * 3} for t, v in acc.items()}},
        "collapse": [{} for _ in range(DEPTH)] + [{"collapsed": collapsed, "effective_rank": 10.0,
                                                  "pooled_normalized_std": norm_std}]}
  if init_seed is not None:
    ev["init_seed"] = init_seed
  return ev


def _record(arm, seed, acc, *, flops=100.0, shared_test=False, **kw):
  ev = _evaluation(acc, data_seed=1000 if shared_test else 1000 + seed, **kw)
  return {"name": f"{arm}_s{seed}", "arm": arm, "seed": seed, "evaluation": ev,
          "eval_data_seed": ev["data_seed"], "probe": claims.probe_summary(ev, HEAD),
          "readouts": claims.readouts(ev, DEPTH), "analytic_train_flops": flops,
          "programs": [], "train_seconds": None, "spread_curve": [], "eval_curve": [],
          "first_freeze": None if arm == "mae" else 400, "freeze_stages": [[0, 0], [400, 2]],
          "workdir": "/nonexistent", "total_steps": 600, "encoder_depth": DEPTH}


def _arm(arm, offsets, digit=None, seeds=SEEDS, **kw):
  """Records at `seeds`: digit accuracy BASE[i] + offsets[i] (or `digit` per seed), speed 0.6."""
  digit = digit or [b + o for b, o in zip(BASE, offsets)]
  return [_record(arm, s, {"digit": d, "speed": 0.6}, **kw) for s, d in zip(seeds, digit)]


def _floor(digit=0.3, speed=0.4, seeds=3):
  return [_evaluation({"digit": digit, "speed": speed}, init_seed=i) for i in range(seeds)]


@pytest.fixture(autouse=True)
def _no_metrics(monkeypatch):
  # The freezing claim reads measured step times from metrics.jsonl: none here.
  monkeypatch.setattr(claims.plots, "read_metrics", lambda path: [])


def _shift(d):
  return [j + d for j in JITTER]


# ------------------------------------------------------------------------------------------------
# Claims 2 and 2b: equivalence, and the FLOPs bar.
# ------------------------------------------------------------------------------------------------


def test_freezing_claim_every_branch():
  mae = _arm("mae", [0] * 5)
  cheap = dict(flops=88.0)
  tie = claims.freezing_claim(mae, _arm("freeze_pixel", JITTER, **cheap), _floor())
  assert tie["verdict"].startswith("reproduced"), tie["verdict"]
  assert "12.0% fewer training FLOPs" in tie["verdict"]
  worse = claims.freezing_claim(mae, _arm("freeze_pixel", _shift(-0.06), **cheap), _floor())
  assert worse["verdict"].startswith("not reproduced"), worse["verdict"]
  wide = claims.freezing_claim(mae, _arm("freeze_pixel", WIDE, **cheap), _floor())
  assert wide["verdict"].startswith("inconclusive"), wide["verdict"]
  # Two seeds per arm, the numbers of the tie: inconclusive, never reproduced.
  two = claims.freezing_claim(mae[:2], _arm("freeze_pixel", JITTER, **cheap)[:2], _floor())
  assert two["verdict"].startswith("inconclusive") and "2 seeds" in two["verdict"]
  # The tie, against a random init that decodes digits as well as both arms: uninformative.
  floor = claims.freezing_claim(mae, _arm("freeze_pixel", JITTER, **cheap), _floor(digit=0.49))
  assert floor["verdict"].startswith("uninformative"), floor["verdict"]
  assert "on digit" in floor["verdict"]
  # The tie with two random-init seeds: the floor is short of its design.
  short = claims.freezing_claim(mae, _arm("freeze_pixel", JITTER, **cheap), _floor(seeds=2))
  assert short["verdict"].startswith("inconclusive") and "random init at 2" in short["verdict"]
  # Claim 2b: the same tie saves 12%, below a 15% bar; 16% passes it.
  assert claims.freezing_claim(mae, _arm("freeze_pixel", JITTER, **cheap), _floor(),
                               min_saving=0.15)["verdict"].startswith("not reproduced")
  assert claims.freezing_claim(mae, _arm("freeze_pixel", JITTER, flops=84.0), _floor(),
                               min_saving=0.15)["verdict"].startswith("reproduced")
  # Freezing that saves nothing is not claim 2 either.
  assert claims.freezing_claim(mae, _arm("freeze_pixel", JITTER), _floor())[
      "verdict"].startswith("not reproduced")


def test_freezing_claim_keeps_the_evidence_to_judge_again():
  mae = _arm("mae", [0] * 5)
  c = claims.freezing_claim(mae, _arm("freeze_pixel", JITTER, flops=88.0), _floor())
  ev = c["evidence"]
  assert ev["arms"]["mae"]["seeds"] == SEEDS and ev["test_sets"] == "per_seed"
  assert ev["arms"]["freeze_pixel"]["tasks"]["digit"] == pytest.approx(
      [b + j for b, j in zip(BASE, JITTER)])
  assert ev["random_init"]["tasks"]["digit"] == [0.3] * 3
  assert stats.judge("equivalence", ev, "mae", "freeze_pixel")["verdict"] == "reproduced"
  # All seeds scored on one test set: its sampling error joins the interval.
  shared = claims.freezing_claim(_arm("mae", [0] * 5, shared_test=True),
                                 _arm("freeze_pixel", JITTER, flops=88.0, shared_test=True),
                                 _floor())
  assert shared["evidence"]["test_sets"] == "shared"
  assert shared["judgement"]["shared_test_se"] > 0
  assert shared["verdict"].startswith("inconclusive")


# ------------------------------------------------------------------------------------------------
# Claims 4, 4b and 6: superiority.
# ------------------------------------------------------------------------------------------------


def test_layerlock_vs_mae_every_branch():
  mae, ref = _arm("mae", [0] * 5), {"rope": _floor()}
  better = claims.layerlock_vs_mae_claim(mae, _arm("layerlock", _shift(0.03)), [], [], ref)
  assert better["verdict"].startswith("reproduced"), better["verdict"]
  assert "layerlock - mae: +0.015" in better["verdict"]  # mean over 2 tasks of +0.03 and 0
  worse = claims.layerlock_vs_mae_claim(mae, _arm("layerlock", _shift(-0.04)), [], [], ref)
  assert worse["verdict"].startswith("not reproduced"), worse["verdict"]
  wide = claims.layerlock_vs_mae_claim(mae, _arm("layerlock", WIDE), [], [], ref)
  assert wide["verdict"].startswith("inconclusive"), wide["verdict"]
  below = claims.layerlock_vs_mae_claim(mae, _arm("layerlock", _shift(0.03)), [], [],
                                        {"rope": _floor(digit=0.51)})
  assert below["verdict"].startswith("uninformative"), below["verdict"]
  assert below["judgement"]["test"]["verdict"] == "reproduced"  # shown, not the verdict
  none = claims.layerlock_vs_mae_claim(mae, [], [], [], ref)
  assert none["verdict"].startswith("not measured")
  two = claims.layerlock_vs_mae_claim(mae[:2], _arm("layerlock", _shift(0.03))[:2], [], [], ref)
  assert two["verdict"].startswith("inconclusive")


def test_a_task_at_chance_for_every_encoder_is_dropped_before_the_verdict():
  """speed at the majority-class rate for MAE, LayerLock and random init: the headline is digit
  alone, and the report says which task went and why."""
  at_chance = lambda arm, d: [_record(arm, s, {"digit": b + o, "speed": 0.33})
                              for s, b, o in zip(SEEDS, BASE, d)]
  c = claims.layerlock_vs_mae_claim(at_chance("mae", [0] * 5), at_chance("layerlock",
                                                                        _shift(0.03)),
                                    [], [], {"rope": _floor(speed=0.30)})
  assert list(c["judgement"]["dropped_tasks"]) == ["speed"]
  assert c["judgement"]["headline_tasks"] == ["digit"]
  assert c["verdict"].startswith("reproduced") and "tasks dropped at chance: speed" in c["verdict"]
  assert c["judgement"]["test"]["interval"]["mean"] == pytest.approx(0.03)


def test_vjepa_claim_every_branch():
  base, ref = _arm("vjepa", [0] * 5), {"sincos": _floor()}
  c = claims.vjepa_claim(base, _arm("vjepa_layerlock", _shift(0.03)), ref)
  assert c["verdict"].startswith("reproduced") and "V-JEPA + LayerLock - V-JEPA" in c["verdict"]
  assert claims.vjepa_claim(base, _arm("vjepa_layerlock", _shift(-0.04)), ref)[
      "verdict"].startswith("not reproduced")
  assert claims.vjepa_claim(base, _arm("vjepa_layerlock", WIDE), ref)[
      "verdict"].startswith("inconclusive")
  # Both arms below a random-init encoder: no verdict however large the gain.
  low = claims.vjepa_claim(base, _arm("vjepa_layerlock", _shift(0.03)),
                           {"sincos": _floor(digit=0.6)})
  assert low["verdict"].startswith("uninformative")
  assert "V-JEPA on digit" in low["verdict"] and "V-JEPA + LayerLock on digit" in low["verdict"]


# ------------------------------------------------------------------------------------------------
# Claim 3: collapse.
# ------------------------------------------------------------------------------------------------


def test_collapse_claim_every_branch():
  mae = _arm("mae", [0] * 5)
  healthy = _arm("layerlock", [0] * 5)
  near_chance = [_record("naive_latent", s, {"digit": 0.11, "speed": 0.36}, collapsed=True,
                         norm_std=0.01) for s in SEEDS]
  decodable = [_record("naive_latent", s, {"digit": 0.3, "speed": 0.5}, collapsed=True)
               for s in SEEDS]
  floor = _floor()
  r = claims.collapse_claim(mae, near_chance, healthy, floor)
  assert r["verdict"].startswith("reproduced"), r["verdict"]
  assert "collapsed flag at 5 of 5 seeds" in r["verdict"]
  assert claims.collapse_claim(mae, decodable, healthy, floor)["verdict"].startswith("partly")
  # One seed not flagged: not collapsed at every seed.
  mixed = near_chance[:4] + [_record("naive_latent", 6, {"digit": 0.11, "speed": 0.36})]
  assert claims.collapse_claim(mae, mixed, healthy, floor)["verdict"].startswith(
      "not reproduced")
  # LayerLock collapsed too, or not above random init: not reproduced.
  assert claims.collapse_claim(mae, near_chance, near_chance, floor)["verdict"].startswith(
      "not reproduced")
  assert claims.collapse_claim(mae, near_chance, healthy, _floor(digit=0.5, speed=0.6))[
      "verdict"].startswith("not reproduced")
  # One seed of each: the numbers say reproduced, the design says inconclusive.
  one = claims.collapse_claim(mae[:1], near_chance[:1], healthy[:1], floor)
  assert one["verdict"].startswith("inconclusive") and "1 seeds per arm" in one["verdict"]
  assert "collapsed flag at 1 of 1 seeds" in one["verdict"]


# ------------------------------------------------------------------------------------------------
# Claim 5: blockwise ~ end-to-end, equivalence at the last block.
# ------------------------------------------------------------------------------------------------


def test_blockwise_claim_every_branch():
  e2e = _arm("e2e", [0] * 5)
  floor = _floor()
  both = claims.blockwise_claim({"concurrent": _arm("concurrent", JITTER),
                                 "sequential": _arm("sequential", _shift(0.001)),
                                 "e2e": e2e}, floor)
  assert both["verdict"].startswith("reproduced"), both["verdict"]
  # The difference and its interval are taken at the last block (the linear probe there).
  iv = both["judgements"]["sequential"]["test"]["interval"]
  assert iv["mean"] == pytest.approx(0.0005)  # +0.001 on digit, 0 on speed
  far = claims.blockwise_claim({"concurrent": _arm("concurrent", JITTER),
                                "sequential": _arm("sequential", _shift(-0.08)), "e2e": e2e},
                               floor)
  assert far["verdict"].startswith("not reproduced")
  assert "concurrent: reproduced" in far["verdict"]
  wide = claims.blockwise_claim({"concurrent": _arm("concurrent", WIDE),
                                 "sequential": _arm("sequential", JITTER), "e2e": e2e}, floor)
  assert wide["verdict"].startswith("inconclusive")
  low = claims.blockwise_claim({"concurrent": _arm("concurrent", JITTER),
                                "sequential": _arm("sequential", JITTER), "e2e": e2e},
                               _floor(digit=0.5))
  assert low["verdict"].startswith("uninformative")
  one = claims.blockwise_claim({"concurrent": _arm("concurrent", JITTER)[:1],
                                "sequential": _arm("sequential", JITTER)[:1], "e2e": e2e[:1]},
                               floor)
  assert one["verdict"].startswith("inconclusive") and one["seeds"] == 1


def test_combine_lets_a_decisive_failure_win():
  j = lambda v: {"verdict": v}
  assert claims.combine({"a": j("reproduced"), "b": j("reproduced")}) == "reproduced"
  assert claims.combine({"a": j("reproduced"), "b": j("inconclusive")}) == "inconclusive"
  assert claims.combine({"a": j("uninformative"), "b": j("not reproduced")}) == "not reproduced"
  assert claims.combine({"a": j("uninformative"), "b": j("inconclusive")}) == "uninformative"
  assert claims.combine({}) == "not measured"


def test_clip_centred_targets_are_a_row_of_claim_4_and_not_part_of_its_verdict():
  from experiments import report  # pylint: disable=g-import-not-at-top
  mae, ref = _arm("mae", [0] * 5), {"rope": _floor()}
  layerlock = _arm("layerlock", _shift(0.03))
  center = _arm("layerlock_center", _shift(0.05))
  plain = claims.layerlock_vs_mae_claim(mae, layerlock, [], [], ref)
  with_center = claims.layerlock_vs_mae_claim(mae, layerlock, [], [], ref, center=center)
  assert plain["verdict"] == with_center["verdict"]
  assert plain["ablations"]["center"] is None and "layerlock_center" not in plain["readouts"]
  cmp = with_center["ablations"]["center"]  # +0.02 on digit, 0 on speed: +0.01 per seed
  assert cmp["delta"] == pytest.approx(0.01) and cmp["n"] == 5
  assert cmp["lower"] == pytest.approx(0.01) and cmp["upper"] == pytest.approx(0.01)
  text = report.section_layerlock(with_center, "fig.png")
  assert "Clip-centred latent targets - LayerLock: attentive +0.010" in text
  assert "| layerlock_center |" in text


def test_arms_are_paired_on_the_seeds_they_share():
  mae = _arm("mae", [0] * 5)
  c = claims.layerlock_vs_mae_claim(mae, _arm("layerlock", _shift(0.03))[:3], [], [],
                                    {"rope": _floor()})
  assert c["judgement"]["test"]["interval"]["n"] == 3
  assert c["verdict"].startswith("inconclusive") and "3 seeds" in c["verdict"]


T_95_4DF = 2.1318467863  # t quantile 0.95 at 4 degrees of freedom (printed tables)


def _rejudge_by_hand(ev: dict, dropped_before: dict, base: str, new: str, test: str):
  """An outside reader's verdict from a claim's recorded per-seed numbers, numpy only: dropped
  tasks, the random-init floor, the paired t-interval at 5 seeds."""
  n_test, chance, init = ev["num_test"], ev["chance"], ev["random_init"]["tasks"]
  encoders = [ev["arms"][a]["tasks"] for a in (base, new)] + [init]
  dropped = {task for task in chance
             if all(np.mean(e[task]) <= chance[task] + 2 * np.sqrt(
                 chance[task] * (1 - chance[task]) / n_test) for e in encoders)}
  assert dropped == set(dropped_before)
  tasks = [t for t in ev["arms"][base]["tasks"] if t not in dropped]
  informative = all(np.mean(ev["arms"][a]["tasks"][t]) > np.mean(init[t]) + 0.02
                    for a in (base, new) for t in tasks)
  per_seed = {a: np.mean([ev["arms"][a]["tasks"][t] for t in tasks], axis=0) for a in (base, new)}
  assert ev["arms"][base]["seeds"] == ev["arms"][new]["seeds"] and len(per_seed[base]) >= 5
  d = per_seed[new] - per_seed[base]
  assert len(d) == 5
  half = T_95_4DF * d.std(ddof=1) / np.sqrt(len(d))
  lower, upper = d.mean() - half, d.mean() + half
  if not informative:
    return "uninformative", lower, upper
  if test == "superiority":
    return ("reproduced" if lower > 0 else "not reproduced" if upper < 0.01 else "inconclusive",
            lower, upper)
  inside, outside = -0.02 < lower and upper < 0.02, lower > 0.02 or upper < -0.02
  return ("reproduced" if inside else "not reproduced" if outside else "inconclusive",
          lower, upper)


def test_the_committed_reproduction_judged_again_from_its_numbers_alone():
  """docs/reproduction_cpu/results.json re-judged as an outside reader would: every verdict and
  interval follows from the recorded per-seed numbers by the rules, with numpy alone; the one
  "reproduced" (claim 3) has 5 seeds per arm, a paired difference that agrees and an arm above
  random init."""
  import json  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parent.parent / "docs" / "reproduction_cpu"
  results = json.loads((path / "results.json").read_text())
  assert results["seeds"] == [2, 3, 4, 5, 6] and len(results["init_seeds"]) >= 3
  c = results["claims"]
  cases = [("freezing", None, "mae", "freeze_pixel", "equivalence"),
           ("layerlock_vs_mae", None, "mae", "layerlock", "superiority"),
           ("layerlock_vs_mae_camera", None, "mae", "layerlock", "superiority"),
           ("vjepa_layerlock", None, "mae", "layerlock", "superiority"),
           ("blockwise", "concurrent", "e2e", "concurrent", "equivalence"),
           ("blockwise", "sequential", "e2e", "sequential", "equivalence")]
  for key, sub, base, new, test in cases:
    judgement = c[key]["judgements"][sub] if sub else c[key]["judgement"]
    verdict, lower, upper = _rejudge_by_hand(c[key]["evidence"], judgement["dropped_tasks"],
                                             base, new, test)
    assert judgement["verdict"] == verdict, (key, sub, judgement["verdict"], verdict)
    interval = judgement["test"]["interval"]
    assert abs(interval["lower"] - lower) < 1e-9 and abs(interval["upper"] - upper) < 1e-9
    assert c[key]["verdict"].split(" (")[0] in ("reproduced", "not reproduced", "inconclusive",
                                                 "uninformative")
  # Claim 3 from the runs' own numbers: collapse flags, and LayerLock over the naive latent arm
  # paired per seed, its one-sided 95% lower bound above 0.
  assert c["collapse"]["verdict"].startswith("reproduced")
  table = c["collapse"]["table"]
  assert table["naive_latent"]["collapsed"] == [True] * 5
  assert table["layerlock"]["collapsed"] == [False] * 5
  runs = {r["name"]: r for r in results["runs"]}
  d = np.array([runs[f"layerlock_s{s}"]["attentive"] - runs[f"naive_latent_s{s}"]["attentive"]
                for s in results["seeds"]])
  assert d.mean() - T_95_4DF * d.std(ddof=1) / np.sqrt(5) > 0
  assert table["layerlock"]["attentive"] > c["collapse"]["random_init_attentive"] + 0.02


def test_the_report_names_the_uncommitted_files_of_the_code_that_ran():
  from experiments import report as report_lib  # pylint: disable=import-outside-toplevel
  clean = report_lib.code_text({"code": {"commit": "abc", "dirty": False, "changed": []}})
  dirty = report_lib.code_text({"code": {"commit": "abc", "dirty": True,
                                          "changed": ["bench/README.md", "tests/x.py"]}})
  older = report_lib.code_text({"code": {"commit": "abc", "dirty": True}})
  assert clean == "Evaluation code: commit abc."
  assert dirty == "Evaluation code: commit abc with uncommitted changes to bench/README.md, tests/x.py."
  assert older == "Evaluation code: commit abc with uncommitted changes."
