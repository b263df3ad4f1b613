r"""Reproduce the papers' claims at small scale: one command, one report.

  python -m experiments.reproduce --out=/tmp/reproduce            # full: see experiments/budget.py
  python -m experiments.reproduce --out=/tmp/reproduce --ablations  # + RoPE, mini-warmup arms
  python -m experiments.reproduce --out=/tmp/reproduce --long_freezing  # + claim 2b
  python -m experiments.reproduce --out=/tmp/reproduce_q --quick  # CI smoke run: a few minutes
  python -m experiments.reproduce --out=/tmp/reproduce_gpu --scale=gpu  # one GPU: ~10 min

Trains the runs of configs/experiments/ (each an ordinary training run: its exact
`python -m layerlock_jax.main ...` command is listed in the report), evaluates every final
encoder with the frozen-encoder probes of layerlock_jax.evaluation on one fixed labelled set, and
writes OUT/report.md with tables and PNG figures, each claim of the LayerLock
(arXiv 2509.10156) and blockwise SSL (arXiv 2601.09040) papers next to what was measured here:
  1. convergence order (LayerLock Fig. 1): freeze blocks <= L at step T, final loss over a grid;
  2. progressive freezing with the pixel target is nearly free (the probe equivalent to MAE's;
     FLOPs, step time and memory saved);
  3. a naive latent loss collapses, LayerLock does not (probe, effective rank over training);
  4. LayerLock >= pixel MAE on the probe (+ mini-warmup and RoPE ablations);
  5. blockwise (concurrent, sequential) ~ end-to-end: per-block decodability, CKA, retrieval.
Every number in the report is computed from the runs' artifacts (OUT/results.json holds them,
with each claim's per-seed evidence and the commit of the code); the verdicts come from the rules of
experiments/stats.py, fixed before the runs: 5 seeds per arm, paired per seed, a random-init floor
at 3 init seeds, each model's headline readout averaged over 3 probe seeds, a fresh test sample
per seed. The default run's wall time on 2 CPU cores is estimated by `python -m experiments.budget`
from a finished reproduction's per-run costs.

Resumable: each run trains in OUT/runs/NAME and is skipped (its final checkpoint restored) when
already finished; each evaluation is cached as OUT/runs/NAME/eval.json. Delete OUT to regenerate
everything from scratch: the same seeds give the same numbers (wall-clock times aside).
On a CPU the runs train and are evaluated side by side, one worker process pinned to each core
(experiments/lanes.py); with an accelerator they take turns in this process.
--quick shrinks every run to a few steps and the probes to a few clips: it exercises the whole
pipeline (CI runs it) and its numbers mean nothing. --scale=gpu trains the claims 2-4 arms with a
ViT-S encoder for 2400 steps of 64 clips (configs/experiments/layerlock_claims.py, modifier `gpu`),
seed-major so that a run cut short still holds complete MAE / LayerLock pairs; the convergence
grid and the blockwise claim are measured at CPU scale only.
"""
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import platform
import sys
import subprocess
import time
from typing import Any

import numpy as np

from layerlock_jax.config import loading as config_loading
from layerlock_jax import evaluate
from layerlock_jax import plan as plan_lib
from experiments import claims
from experiments import convergence
from experiments import lanes
from layerlock_jax.evaluation import depthwise
from layerlock_jax.evaluation import features as features_lib
from layerlock_jax.evaluation import periodic
from layerlock_jax.evaluation import probes
from experiments import report

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs" / "experiments"
# Probes and retrieval of a model of seed s run on clips rendered from data seed EVAL_DATA_SEED + s:
# a set no run was pretrained on (their data seeds are their run seeds), shared by the arms of one
# seed (their comparison is paired) and drawn afresh for every seed, so that the spread over seeds
# carries the test sample's noise. Random-init encoder i is scored on EVAL_DATA_SEED + 100 + i.
EVAL_DATA_SEED = 1000
SCALES = ("cpu", "gpu")
# Arms that train exactly like pixel MAE until their first freeze: forked from MAE there.
FORKED_ARMS = ("freeze_pixel", "layerlock", "layerlock_no_miniwarmup")
# Claim 2b's bar: the fraction of the training FLOPs that progressive freezing must save.
LONG_FREEZING_SAVING = 0.15
LONG_FREEZING_STEPS = 900
PROBE_SEED = 0  # the probe seed of the full depth-wise table (the headline has Plan.probe_seeds)
INIT_DATA_SEED_OFFSET = 100


class Preempted(Exception):
  """A training run of the reproduction stopped early on SIGTERM / a preemption notice."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: a config file of configs/experiments/, its variant and its seed."""
  file: str       # "layerlock_claims" | "blockwise_claims" | "vjepa_claims"
  variant: str    # e.g. "layerlock", "mae,freeze=1@60", "concurrent,quick"
  seed: int
  # Started from this run's checkpoint at `fork_step` (--config.fork_from): the two runs'
  # first fork_step steps are the same computation (layerlock_jax/checkpoint/fork.py).
  fork_source: "Run | None" = None
  fork_step: int = 0

  @property
  def name(self) -> str:
    slug = (self.variant.replace(",quick", "").replace(",gpu", "").replace(",", "_")
            .replace("=", "").replace("@", "at").replace("/", "-"))
    prefix = "blockwise_" if self.file == "blockwise_claims" else ""
    return f"{prefix}{slug}_s{self.seed}"

  @property
  def arm(self) -> str:
    return self.variant.split(",")[0]

  def config(self, out: str | None = None):
    """The run's config; with `out`, forked from its source's checkpoint under OUT/runs."""
    config = config_loading.load_config(f"{EXPERIMENTS_DIR / self.file}.py:{self.variant}")
    config.seed = self.seed
    if out is not None and self.fork_source is not None:
      config.fork_from = self.fork_path(out)
    return config

  def fork_path(self, out: str) -> str:
    return os.path.join(out, "runs", self.fork_source.name, "checkpoints", str(self.fork_step))

  def command(self, out: str) -> str:
    fork = f" --config.fork_from={self.fork_path(out)}" if self.fork_source else ""
    return (f"python -m layerlock_jax.main --config=configs/experiments/{self.file}.py:"
            f"{self.variant} --config.seed={self.seed}{fork} --workdir={out}/runs/{self.name}")


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the reproduction trains and how it evaluates (full or quick)."""
  quick: bool
  scale: str = "cpu"   # cpu | gpu: the size of every run (quick shrinks the cpu size)
  # Verdict seeds of every claim: seeds that played no part in choosing any setting. The freeze
  # tables of configs/experiments/ and the V-JEPA and blockwise configs were developed at seeds 0
  # and 1, which no verdict reads.
  seeds: tuple[int, ...] = (2, 3, 4, 5, 6)
  arms: tuple[str, ...] = ("mae", "freeze_pixel", "layerlock", "naive_latent")
  # Arms trained at every seed (the others at the first seed only).
  repeated_arms: tuple[str, ...] = ("mae", "freeze_pixel", "layerlock", "naive_latent")
  # Claim 2b: progressive freezing with the pixel target at >= 15% fewer training FLOPs. At 600
  # steps the table cannot save that much unless it freezes before MAE's features form (~step
  # 340): 2 blocks at 300 and 4 at 380 saved 15.5% and cost 0.040 of the headline probe at seeds
  # 0 / 1. The saving grows with the training after the last freeze (the paper: 9%, "up to 19%"
  # with longer training), so claim 2b has its own MAE / freeze_pixel pair at every seed,
  # `long_freezing_steps` steps each, with the first freeze still at 400. Its table was the best of
  # three tried at seeds 0 / 1 at 900 steps (attentive probe against MAE, noise 0.022): 400/50/2
  # (18.7% fewer FLOPs) -0.065, 400/75/1 (15.5%) -0.048, 400/200/2 (16.0%) -0.045. None: no
  # claim 2b; `--long_freezing` adds it to a CPU plan (LONG_FREEZING_STEPS): its ten 900-step
  # runs at 5 seeds do not fit the default run's hour on 2 cores (experiments/budget.py).
  long_freezing_steps: int | None = None
  long_freezing_schedule: str = "400/200/2"
  # LayerLock vs MAE again on the camera-motion set (photographic content everywhere, unlike
  # Moving MNIST's black background), every seed.
  camera_arms: tuple[str, ...] = ("mae", "layerlock")
  # LayerLock with clip-centred latent targets (layerlock.target_center=clip): the knob that
  # removes the per-clip vector shared by every token of a target block, at these seeds.
  center_seeds: tuple[int, ...] = ()
  grid_layers: tuple[int, ...] = (1, 3)
  grid_steps: tuple[int, ...] = (100, 300)
  blockwise_seeds: tuple[int, ...] = (2, 3, 4, 5, 6)
  # V-JEPA vs V-JEPA + LayerLock (configs/experiments/vjepa_claims.py), at these seeds.
  vjepa_seeds: tuple[int, ...] = (2, 3, 4, 5, 6)
  # Random-init encoders behind the floor of every claim: init seeds, scored like every model.
  init_seeds: tuple[int, ...] = (0, 1, 2)
  # The headline readout of every model: trained at each of these probe seeds, their mean is the
  # seed's number. Its learning rate and width are chosen per model among `probe_grid` on a
  # validation split (`probe_val_fraction` of the probe-fitting clips; test clips unseen).
  probe_seeds: tuple[int, ...] = (0, 1, 2)
  probe_grid: tuple[tuple[float, int], ...] = ((1e-3, 128), (3e-3, 128), (1e-3, 256))
  probe_val_fraction: float = 0.2
  # The readout table beside the headline: each attentive probe once per token normalisation
  # ("layernorm", "standardize"), at the 0.95-depth block and (attentive_last_block) the last
  # block, at probe seed PROBE_SEED and fixed width. None by default (the table then shows the
  # headline and the linear probe); --ablations adds them.
  attentive_norms: tuple[str, ...] = ()
  attentive_last_block: bool = False
  # Probe-fitting and test clips per task and seed. Each seed has test clips of its own, so an
  # arm at 5 seeds is scored on 5 x eval_clips distinct test clips per task.
  eval_clips: int = 512
  # The attentive readouts are the slowest part of an evaluation (12 per model: 3 tasks x 2
  # token normalisations x 2 blocks): 300 AdamW steps of 32 clips at width 128, the 3 tasks of a
  # block and normalisation trained side by side, take ~8 s per model on one core once compiled
  # (~13 s one task at a time). A larger readout (width 256 / batch 64) scored ~0.05 higher on
  # Moving MNIST for every model alike.
  attentive_steps: int = 300
  attentive_width: int = 128
  attentive_heads: int = 4
  attentive_batch: int = 32
  probe_steps: int = 300
  tail_fraction: float = 0.1
  free_tolerance: float = 0.01

  @classmethod
  def make(cls, quick: bool, ablations: bool = False, scale: str = "cpu",
           long_freezing: bool = False) -> "Plan":
    plan = cls._make(quick, ablations, scale)
    if long_freezing:
      if quick or scale != "cpu":
        raise ValueError("--long_freezing (claim 2b) is part of a full CPU plan only")
      plan = dataclasses.replace(plan, long_freezing_steps=LONG_FREEZING_STEPS)
    return plan

  @classmethod
  def _make(cls, quick: bool, ablations: bool, scale: str) -> "Plan":
    if scale not in SCALES:
      raise ValueError(f"unknown scale {scale!r}; use one of {SCALES}")
    if scale == "gpu":
      if quick or ablations:
        raise ValueError("--scale=gpu runs the claims 2-4 arms only: drop --quick / --ablations")
      # ~25x the CPU run's compute per run; the readout is given more steps and width, which
      # costs little on an accelerator.
      return cls(quick=False, scale="gpu", seeds=(2, 3, 4),
                 arms=("mae", "layerlock", "freeze_pixel", "naive_latent"),
                 repeated_arms=("mae", "layerlock"), long_freezing_steps=None,
                 camera_arms=(), center_seeds=(),
                 grid_layers=(), grid_steps=(), blockwise_seeds=(), vjepa_seeds=(),
                 eval_clips=1024,
                 attentive_steps=600, attentive_width=256, attentive_batch=64)
    if ablations and not quick:
      return cls(quick=False, arms=cls.arms + ("layerlock_no_miniwarmup", "mae_learned_posemb"),
                 center_seeds=cls.seeds, attentive_norms=("layernorm", "standardize"),
                 attentive_last_block=True)
    if quick:
      # The ablation arms only add compile time to a smoke run; one arm keeps two seeds so that
      # the seed-noise path runs.
      return cls(quick=True, seeds=(0, 1),
                 arms=("mae", "freeze_pixel", "layerlock", "naive_latent"),
                 repeated_arms=("mae",), long_freezing_steps=None, grid_layers=(1, 2),
                 grid_steps=(10,), eval_clips=48,
                 attentive_steps=8, probe_steps=20, blockwise_seeds=(0,), camera_arms=(),
                 center_seeds=(), vjepa_seeds=(0,), init_seeds=(0,), probe_seeds=(0, 1),
                 probe_grid=((1e-3, 128), (3e-3, 128)),
                 # One attentive readout per task (compiling each costs more than running it):
                 # the other readout-table cells read "n/a" in a quick report.
                 attentive_norms=("layernorm",), attentive_last_block=False)
    return cls(quick=False)

  def _v(self, variant: str) -> str:
    return variant + (",quick" if self.quick else "") + (",gpu" if self.scale == "gpu" else "")

  def _forked(self, run: Run) -> Run:
    """`run` started from the MAE run of its seed and data at its first freeze, where it stops
    being MAE: every freezing arm and grid cell trains only what differs from MAE."""
    parts = run.variant.split(",")
    source = Run(run.file, ",".join(["mae"] + [p for p in parts[1:] if p.startswith(
        ("data=", "steps=")) or p in ("quick", "gpu")]), run.seed)
    table = plan_lib.freeze_table(run.config())
    step = next(s.start_step for s in table if s.frozen_layers > 0)
    return dataclasses.replace(run, fork_source=source, fork_step=step)

  def main_order(self) -> list[Run]:
    """The main runs in training order: the repeated arms seed-major (MAE and LayerLock at seed
    0, then at seed 1), then the single-seed arms, so that a reproduction cut short holds complete
    comparisons rather than one arm's seeds."""
    runs = [r for rs in self.main_runs().values() for r in rs]
    return sorted(runs, key=lambda r: (r.arm not in self.repeated_arms, r.seed,
                                       self.arms.index(r.arm)))

  def main_runs(self) -> dict[str, list[Run]]:
    """Arm -> its runs (claims 2, 3, 4; the seed-0 MAE run is also the grid's baseline)."""
    runs = {arm: [Run("layerlock_claims", self._v(arm), s)
                  for s in (self.seeds if arm in self.repeated_arms else self.seeds[:1])]
            for arm in self.arms}
    return {arm: [self._forked(r) if arm in FORKED_ARMS else r for r in rs]
            for arm, rs in runs.items()}

  def long_freezing_runs(self) -> dict[str, list[Run]]:
    """Claim 2b's arms: MAE and freeze_pixel at every seed, `long_freezing_steps` steps each
    (none when that is None)."""
    if not self.long_freezing_steps:
      return {}
    steps = f"steps={self.long_freezing_steps}"
    return {"mae": [Run("layerlock_claims", self._v(f"mae,{steps}"), s) for s in self.seeds],
            "freeze_pixel": [self._forked(Run("layerlock_claims", self._v(
                f"freeze_pixel,{steps},schedule={self.long_freezing_schedule}"), s))
                             for s in self.seeds]}

  def camera_runs(self) -> dict[str, list[Run]]:
    """Arm -> its runs on the camera-motion set (claim 4b; none in quick mode)."""
    seeds = self.seeds[:1] if self.quick else self.seeds
    return {arm: [self._forked(r) if arm in FORKED_ARMS else r for r in
                  (Run("layerlock_claims", self._v(f"{arm},data=camera_motion"), s)
                   for s in seeds)] for arm in self.camera_arms}

  def center_runs(self) -> list[Run]:
    """LayerLock with clip-centred latent targets (an extra row of claim 4)."""
    return [self._forked(Run("layerlock_claims", self._v("layerlock,center"), s))
            for s in self.center_seeds]

  def grid_runs(self) -> list[tuple[int, int, Run]]:
    return [(l, t, self._forked(Run("layerlock_claims", self._v(f"mae,freeze={l}@{t}"),
                                     self.seeds[0])))
            for l in self.grid_layers for t in self.grid_steps]

  def vjepa_runs(self) -> dict[str, list[Run]]:
    """Arm -> its runs of V-JEPA vs V-JEPA + LayerLock (claim 6)."""
    return {arm: [Run("vjepa_claims", self._v(arm), s) for s in self.vjepa_seeds]
            for arm in ("vjepa", "vjepa_layerlock")}

  def blockwise_runs(self) -> dict[str, list[Run]]:
    return {r: [Run("blockwise_claims", self._v(r), s) for s in self.blockwise_seeds]
            for r in ("concurrent", "sequential", "e2e")}


class Reproduction:
  """Trains, evaluates and caches; every public method is idempotent on OUT.

  One Reproduction per worker process of the scheduler (experiments/lanes.py): it keeps the
  probing sets and compiled programs that the jobs of one worker share."""

  def __init__(self, out: str, plan: Plan):
    self.out, self.plan = out, plan
    self._eval_data: dict[tuple, depthwise.EvalData] = {}

  def workdir(self, run: Run) -> str:
    return os.path.join(self.out, "runs", run.name)

  def train(self, run: Run) -> tuple[Any, float]:
    """Trains (or restores the finished) run; returns its final TrainState and the seconds it
    took. A run stopped by SIGTERM / a preemption notice stops the whole reproduction
    (Preempted): its checkpoint is saved, and the same command resumes it; nothing is evaluated
    from a half-trained model."""
    from layerlock_jax import train  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    logging.info("reproduce: training %s\n  %s", run.name, run.command(self.out))
    # An evaluation cached before this training belongs to an older state of the run.
    stale = os.path.join(self.workdir(run), "eval.json")
    if os.path.exists(stale):
      os.remove(stale)
    config = run.config()
    if run.fork_source is not None:
      if os.path.isdir(run.fork_path(self.out)):
        config = run.config(self.out)
      else:  # e.g. an OUT whose MAE runs predate forking: the same numbers, from step 0
        logging.info("reproduce: %s not found; training %s from step 0",
                     run.fork_path(self.out), run.name)
    result = train.run(config, self.workdir(run), make_evaluator=periodic.make_evaluator)
    if result.preempted:
      raise Preempted(f"preempted while training {run.name} (checkpoint saved in "
                      f"{self.workdir(run)}): rerun the same command to resume")
    return result.state, time.perf_counter() - start

  def eval_data(self, config, data_seed: int) -> depthwise.EvalData:
    """The held-out clips of `data_seed` for models of `config`: one set per source, clip shape
    and data seed (the camera-motion set is rendered at 16 x 32^2 for the claims model and
    4 x 48^2 for V-JEPA). Only the latest set is kept: jobs of one seed run together."""
    key = (config.data.source, int(config.data.num_frames), int(config.data.image_size),
           data_seed)
    if key not in self._eval_data:
      self._eval_data.clear()
      n = self.plan.eval_clips
      self._eval_data[key] = depthwise.load_eval_data(config, num_train=n, num_test=n,
                                                      data_seed=data_seed)
    return self._eval_data[key]

  def cached(self, path: str) -> dict[str, Any] | None:
    """The evaluation cached at `path` if the evaluation code and settings that wrote it are
    today's (eval_fingerprint), else None: a changed probe re-evaluates every model, baselines
    included, before anything is compared."""
    if not os.path.exists(path):
      return None
    with open(path) as f:
      result = json.load(f)
    return result if result.get("eval_fingerprint") == eval_fingerprint(self.plan) else None

  def _evaluate(self, config, params, path: str, data_seed: int) -> dict[str, Any]:
    cached = self.cached(path)
    if cached is not None:
      return cached
    depth = plan_lib.encoder_depth(config)
    block = depthwise.readout_block(depth)
    start = time.perf_counter()
    logging.info("reproduce: evaluating %s", os.path.basename(os.path.dirname(path)))
    data = self.eval_data(config, data_seed)
    attentive_blocks = tuple(sorted({block} | ({depth} if self.plan.attentive_last_block
                                               else set())))
    kwargs = {"steps": self.plan.attentive_steps, "width": self.plan.attentive_width,
              "num_heads": self.plan.attentive_heads, "batch_size": self.plan.attentive_batch}
    extractor = features_lib.FeatureExtractor(config, batch_size=32)
    train_feats = extractor(params, data.train_videos, token_blocks=attentive_blocks)
    test_feats = extractor(params, data.test_videos, token_blocks=tuple(range(depth + 1)),
                           token_clips={b: None if b in attentive_blocks else 256
                                        for b in range(depth + 1)})
    result = depthwise.depthwise_analysis(
        train_feats, data.train_labels, test_feats, data.test_labels, data.num_classes,
        seed=PROBE_SEED, probe_steps=self.plan.probe_steps, attentive_blocks=attentive_blocks,
        attentive_kwargs=kwargs, token_stat_clips=256, attentive_norms=self.plan.attentive_norms)
    result.update(task_source=data.source, seed=PROBE_SEED, data_seed=data_seed,
                  eval_fingerprint=eval_fingerprint(self.plan))
    if self.plan.probe_seeds:  # none: the table alone, as older versions of the harness
      result["headline"] = headline_readout(
          train_feats.tokens[block], test_feats.tokens[block], data, block, self.plan, kwargs)
    logging.info("reproduce: evaluated in %.0f s", time.perf_counter() - start)
    result = evaluate.jsonable(result)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(result, f)
    os.replace(path + ".tmp", path)  # a killed evaluation never leaves a half-written cache
    return result

  def train_and_evaluate(self, run: Run) -> dict[str, Any]:
    """Trains `run` (unless finished and evaluated) and evaluates it: the artifacts the claims
    read (eval table, metrics rows, summary, command), with the training seconds
    ("train_seconds_here": None when nothing was trained)."""
    path = os.path.join(self.workdir(run), "eval.json")
    params, seconds = None, None
    if not (self.cached(path) is not None and _finished(self.workdir(run))):
      params, seconds = self.train(run)
    config = run.config()
    evaluation = self._evaluate(config, params, path, EVAL_DATA_SEED + run.seed)
    record = claims.run_record(run.name, run.arm, run.seed, run.command(self.out), config,
                               self.workdir(run), evaluation)
    record["train_seconds_here"] = seconds
    return record

  def train_only(self, run: Run) -> tuple[str, float | None]:
    """Trains `run` unless finished; (its workdir, the training seconds or None)."""
    seconds = None
    if not _finished(self.workdir(run)):
      seconds = self.train(run)[1]
    return self.workdir(run), seconds

  def random_init(self, run: Run, init_seed: int = 0) -> dict[str, Any]:
    """The evaluation of `run`'s model at initialisation from `init_seed`: one encoder of the
    untrained floor, scored on clips of its own."""
    config = run.config()
    config.seed = init_seed
    suffix = "" if init_seed == 0 else f"_init{init_seed}"
    path = os.path.join(self.out, "runs", f"random_init_{run.name}{suffix}", "eval.json")
    params = None if self.cached(path) is not None else evaluate.random_init_params(config)
    result = self._evaluate(config, params, path,
                            EVAL_DATA_SEED + INIT_DATA_SEED_OFFSET + init_seed)
    result["init_seed"] = init_seed
    return result


# The plan's fields that change what an evaluation computes.
EVAL_FIELDS = ("eval_clips", "attentive_steps", "attentive_width", "attentive_heads",
               "attentive_batch", "attentive_norms", "attentive_last_block", "probe_steps",
               "probe_seeds", "probe_grid", "probe_val_fraction")


def eval_fingerprint(plan: Plan) -> str:
  """A digest of the evaluation code (layerlock_jax/evaluation/, this file) and the plan's
  evaluation settings: a cached evaluation is reused only under the same digest."""
  root = pathlib.Path(__file__).resolve().parent.parent
  digest = hashlib.sha256()
  for path in sorted((root / "layerlock_jax" / "evaluation").glob("*.py")) + [
      pathlib.Path(__file__).resolve()]:
    digest.update(path.name.encode() + path.read_bytes())
  digest.update(json.dumps({k: getattr(plan, k) for k in EVAL_FIELDS}, sort_keys=True).encode())
  return digest.hexdigest()[:16]


def headline_readout(train_tokens, test_tokens, data: depthwise.EvalData, block: int, plan: Plan,
                     kwargs: dict[str, Any]) -> dict[str, Any]:
  """The headline readout (attentive, LayerNorm on each token) at `block`: its learning rate and
  width chosen among plan.probe_grid by the mean validation accuracy over tasks, on a split of the
  probe-fitting clips (probe seed plan.probe_seeds[0]); then trained on all probe-fitting clips at
  every probe seed. Per task: test and train accuracy per probe seed."""
  n = len(train_tokens)
  order = np.random.default_rng(0).permutation(n)
  n_val = max(1, int(round(plan.probe_val_fraction * n)))
  val, fit = order[:n_val], order[n_val:]
  classes = max(data.num_classes.values())
  def fit_tasks(idx_train, x_test, y_test_of, seed, lr, width):
    tasks = {t: (np.asarray(data.train_labels[t])[idx_train], y_test_of(t), c)
             for t, c in data.num_classes.items()}
    return probes.attentive_probes(train_tokens[idx_train], x_test, tasks, seed=seed,
                                   logit_classes=classes,
                                   **dict(kwargs, lr=lr, width=width))
  selection = []
  for lr, width in plan.probe_grid:
    res = fit_tasks(fit, train_tokens[val], lambda t: np.asarray(data.train_labels[t])[val],
                    plan.probe_seeds[0], lr, width)
    selection.append({"lr": lr, "width": width,
                      "val_accuracy": float(np.mean([r["accuracy"] for r in res.values()])),
                      "train_accuracy": float(np.mean([r["train_accuracy"]
                                                       for r in res.values()]))})
  best = max(selection, key=lambda r: r["val_accuracy"])
  tasks = {t: {"accuracy": [], "train_accuracy": []} for t in data.num_classes}
  everything = np.arange(n)
  for seed in plan.probe_seeds:
    res = fit_tasks(everything, test_tokens, lambda t: np.asarray(data.test_labels[t]), seed,
                    best["lr"], best["width"])
    for t, r in res.items():
      tasks[t]["accuracy"].append(r["accuracy"])
      tasks[t]["train_accuracy"].append(r["train_accuracy"])
  return {"block": block, "probe_seeds": list(plan.probe_seeds), "lr": best["lr"],
          "width": best["width"], "selection": selection, "validation_clips": int(n_val),
          "tasks": tasks}


# The worker side of the scheduler: one Reproduction per process, the same for all its jobs.
_WORKER: dict[tuple, Reproduction] = {}


def _worker_reproduction(out: str, plan: Plan) -> Reproduction:
  key = (out, plan)
  if key not in _WORKER:
    _WORKER[key] = Reproduction(out, plan)
  return _WORKER[key]


def _train_and_evaluate_job(out: str, plan: Plan, run: Run) -> dict[str, Any]:
  return _worker_reproduction(out, plan).train_and_evaluate(run)


def _train_only_job(out: str, plan: Plan, run: Run) -> tuple[str, float | None]:
  return _worker_reproduction(out, plan).train_only(run)


def _random_init_job(out: str, plan: Plan, run: Run, init_seed: int = 0) -> dict[str, Any]:
  return _worker_reproduction(out, plan).random_init(run, init_seed)


def _init_worker(out: str, quick: bool):
  """Each worker process, before JAX starts: the heap of `python -m layerlock_jax.main` and the
  reproduction's compilation cache."""
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.configure("auto", total_steps=0 if quick else None)
  _enable_compile_cache(os.path.join(out, "xla_cache"))
  logging.getLogger().setLevel(logging.INFO)  # the training logs, as in a single process


def _finished(workdir: str) -> bool:
  """A run is done when its summary.json exists (written after the final checkpoint)."""
  return os.path.exists(os.path.join(workdir, "summary.json"))


def reproduce(out: str, *, quick: bool = False, ablations: bool = False,
              scale: str = "cpu", long_freezing: bool = False) -> dict[str, Any]:
  """The whole reproduction into `out`; returns the results (also OUT/results.json).
  `ablations` adds LayerLock without mini-warmup and MAE with learned position embeddings (one
  seed each, ~4 more minutes); `scale="gpu"` the accelerator-sized runs (Plan.make)."""
  start = time.perf_counter()
  plan = Plan.make(quick, ablations, scale, long_freezing)
  os.makedirs(out, exist_ok=True)
  _enable_compile_cache(os.path.join(out, "xla_cache"))
  main_runs, center_runs, camera_runs = plan.main_runs(), plan.center_runs(), plan.camera_runs()
  long_freezing_runs = plan.long_freezing_runs()
  blockwise_runs, vjepa_runs = plan.blockwise_runs(), plan.vjepa_runs()
  base_run = main_runs["mae"][0]
  base_cfg = base_run.config()
  tail = plan.tail_fraction

  # Phase 1: train and evaluate every run, one job per run on each free lane (a worker process
  # pinned to one core; experiments/lanes.py). Forked runs wait for their source's checkpoint.
  # Order: the fork sources first, then the long runs from step 0, then the short forks, then
  # the random-init references, so that the lanes finish close together.
  # With an accelerator every run needs the one device: the jobs run in this process, in turn.
  lanes_here = 0 if plan.scale == "gpu" or _accelerator() is not None else lanes.num_lanes()
  train_eval = lambda r: lanes.Job(r.name, _train_and_evaluate_job, (out, plan, r),
                                   deps=(r.fork_source.name,) if r.fork_source else ())
  init_ref = lambda r, i: lanes.Job(_init_name(r, i), _random_init_job, (out, plan, r, i))
  everything = ([r for rs in main_runs.values() for r in rs] + list(center_runs) +
                [r for rs in long_freezing_runs.values() for r in rs] +
                [r for rs in camera_runs.values() for r in rs] +
                [r for rs in blockwise_runs.values() for r in rs] +
                [r for rs in vjepa_runs.values() for r in rs])
  sources = {r.fork_source.name for r in everything + [c[2] for c in plan.grid_runs()]
             if r.fork_source}
  ordered = ([r for r in plan.main_order() if r.name in sources] +
             [r for r in everything if r.name in sources and r not in plan.main_order()] +
             [r for r in plan.main_order() if r.name not in sources and not r.fork_source] +
             [r for r in everything if r.name not in sources and not r.fork_source
              and r not in plan.main_order()] +
             [r for r in plan.main_order() if r.fork_source] +
             [r for r in everything if r.fork_source and r not in plan.main_order()])
  jobs = [train_eval(r) for r in stagger_seeds(ordered)]
  jobs += [lanes.Job(run.name, _train_only_job, (out, plan, run),
                     deps=(run.fork_source.name,) if run.fork_source else ())
           for _, _, run in plan.grid_runs()]
  references = {"rope": base_run}
  if "mae_learned_posemb" in main_runs:
    references["learned_3d"] = main_runs["mae_learned_posemb"][0]
  if camera_runs:
    references["camera_rope"] = camera_runs["mae"][0]
  if blockwise_runs.get("e2e"):
    references["blockwise"] = blockwise_runs["e2e"][0]
  if vjepa_runs.get("vjepa"):
    references["sincos"] = vjepa_runs["vjepa"][0]
  jobs += [init_ref(r, i) for r in references.values() for i in plan.init_seeds]
  done = lanes.run(jobs, lanes_here, initializer=_init_worker, initargs=(out, quick))
  timings = {name: r["train_seconds_here"] for name, r in done.items()
             if isinstance(r, dict) and r.get("train_seconds_here") is not None}
  timings.update({name: r[1] for name, r in done.items()
                  if isinstance(r, tuple) and r[1] is not None})

  # Phase 2: read the results.
  ref = lambda key: [done[_init_name(references[key], i)] for i in plan.init_seeds]
  reference = {k: ref(k) for k in ("rope", "learned_3d") if k in references}
  center = [done[r.name] for r in center_runs]
  camera = {arm: [done[r.name] for r in runs] for arm, runs in camera_runs.items()}
  camera_reference = {"rope": ref("camera_rope")} if camera else {}
  cells = []
  for l, t, run in plan.grid_runs():
    cell = convergence.read_run(done[run.name][0], base_cfg.total_steps, tail)
    cell.update(layers=l, step=t, command=run.command(out))
    cells.append(cell)
  blockwise = {regime: [done[r.name] for r in runs] for regime, runs in blockwise_runs.items()
               if runs}
  blockwise_reference = ref("blockwise") if blockwise else None
  vjepa = {arm: [done[r.name] for r in runs] for arm, runs in vjepa_runs.items() if runs}
  vjepa_reference = {"sincos": ref("sincos")} if vjepa else {}
  main = {arm: [done[r.name] for r in runs] for arm, runs in main_runs.items()}
  long_freezing = {arm: [done[r.name] for r in runs] for arm, runs in long_freezing_runs.items()}

  measured = {}  # claim -> its result; a claim whose runs are not in the plan is left out
  if cells:
    baseline = convergence.read_run(os.path.join(out, "runs", base_run.name),
                                    base_cfg.total_steps, tail)
    baseline["command"] = base_run.command(out)
    grid = convergence.summarize_grid(
        baseline, cells, tail_fraction=tail, free_tolerance=plan.free_tolerance,
        total_steps=base_cfg.total_steps, encoder_depth=plan_lib.encoder_depth(base_cfg))
    measured["convergence"] = claims.convergence_claim(grid)
  measured["freezing"] = claims.freezing_claim(main["mae"], main["freeze_pixel"],
                                               reference["rope"])
  if long_freezing:
    measured["freezing_long"] = claims.freezing_claim(
        long_freezing["mae"], long_freezing["freeze_pixel"], reference["rope"],
        min_saving=LONG_FREEZING_SAVING)
  measured["collapse"] = claims.collapse_claim(main["mae"], main["naive_latent"],
                                               main["layerlock"], reference["rope"])
  measured["layerlock_vs_mae"] = claims.layerlock_vs_mae_claim(
      main["mae"], main["layerlock"], main.get("layerlock_no_miniwarmup", []),
      main.get("mae_learned_posemb", []), reference, center=center)
  if blockwise:
    measured["blockwise"] = claims.blockwise_claim(blockwise, blockwise_reference)
  if vjepa:
    measured["vjepa_layerlock"] = claims.vjepa_claim(vjepa["vjepa"], vjepa["vjepa_layerlock"],
                                                     vjepa_reference)

  results = {
      "quick": quick,
      "scale": plan.scale,
      "seeds": list(plan.seeds),
      "blockwise_seeds": list(plan.blockwise_seeds),
      "vjepa_seeds": list(plan.vjepa_seeds),
      "init_seeds": list(plan.init_seeds),
      "rules": rules(),
      "code": code_version(),
      "eval": {"data_seed": EVAL_DATA_SEED, "data_seeds": "EVAL_DATA_SEED + run seed",
               "probe_seed": PROBE_SEED, "probe_seeds": list(plan.probe_seeds),
               "fingerprint": eval_fingerprint(plan),
               "probe_grid": [list(g) for g in plan.probe_grid],
               "probe_val_fraction": plan.probe_val_fraction,
               "clips_per_split": plan.eval_clips, "attentive_steps": plan.attentive_steps,
               "attentive_width": plan.attentive_width, "attentive_batch": plan.attentive_batch,
               "linear_probe_steps": plan.probe_steps,
               "attentive_norms": list(plan.attentive_norms)},
      "ablations": "mae_learned_posemb" in main_runs,
      "claims": measured,
      "runs": [claims.run_summary(done[r.name]) for r in everything] + [
                  {"name": f"grid_L{c['layers']}_T{c['step']}",
                                  "command": c["command"]} for c in cells],
  }
  if camera:
    results["claims"]["layerlock_vs_mae_camera"] = claims.layerlock_vs_mae_claim(
        camera["mae"], camera["layerlock"], [], [], camera_reference)
  # Wall-clock facts live apart from the results: they are the only numbers that differ between
  # two reproductions with the same seeds.
  num_runs = len(everything) + len(cells)
  timing = {"total_seconds": time.perf_counter() - start, "train_seconds": timings,
            "runs_trained": len(timings), "runs_total": num_runs, "lanes": lanes_here,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": sys.version.split()[0], "accelerator": _accelerator()}}
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(evaluate.jsonable(results), f, indent=1)
  with open(os.path.join(out, "timing.json"), "w") as f:
    json.dump(timing, f, indent=1)
  report.write_report(results, timing, out,
                      command=_command(out, quick, ablations, scale, long_freezing))
  return results


def _init_name(run: Run, init_seed: int) -> str:
  return f"random_init_{run.name}" + ("" if init_seed == 0 else f"_init{init_seed}")


def rules() -> dict[str, Any]:
  """The verdict rules' constants (experiments/stats.py), as results.json records them."""
  from experiments import stats  # pylint: disable=g-import-not-at-top
  return {k: getattr(stats, k) for k in (
      "MIN_SEEDS", "MIN_PROBE_SEEDS", "MIN_INIT_SEEDS", "SUPERIORITY_LEVEL", "EQUIVALENCE_LEVEL",
      "EQUIVALENCE_MARGIN", "SMALLEST_GAIN", "FLOOR_MARGIN", "CHANCE_Z")}


def code_version() -> dict[str, Any]:
  """The commit of the code that trained, evaluated and judged, and whether the work tree had
  changes to tracked files (then the commit alone does not pin the code), and which."""
  root = pathlib.Path(__file__).resolve().parent.parent
  def git(*args):
    try:
      return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                            timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      return None
  commit = git("rev-parse", "HEAD")
  status = git("diff", "--name-only", "HEAD")  # tracked files changed, staged or not
  changed = None if status is None else status.splitlines()
  return {"commit": commit, "dirty": None if status is None else bool(status), "changed": changed}


def stagger_seeds(runs: list[Run]) -> list[Run]:
  """`runs` with the later seeds of each variant moved behind every earlier seed's run of its
  group (the fork sources, the runs from step 0, the forks), order otherwise kept.

  Two seeds of one variant compile the same programs: started side by side on two lanes, both
  compile them (V-JEPA + LayerLock's five stage programs took ~105 s per run that way), while a
  run that starts after its twin has compiled reads them from the persistent cache (~5 s)."""
  def group(run: Run) -> int:
    return 0 if any(r.fork_source == run for r in runs) else 1 + (run.fork_source is not None)
  seeds = {}
  for r in runs:
    seeds.setdefault((r.file, r.variant), set()).add(r.seed)
  rank = lambda r: sorted(seeds[(r.file, r.variant)]).index(r.seed)
  return sorted(runs, key=lambda r: (group(r), rank(r)))


def _accelerator() -> str | None:
  import jax  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  return None if dev.platform == "cpu" else dev.device_kind


def _enable_compile_cache(path: str):
  """Persistent XLA cache (unless the process already has one): runs that differ only in their
  seed, and the grid cells' unfrozen stage, compile to programs seen before. Kept inside OUT so
  that deleting OUT really starts from scratch."""
  import jax  # pylint: disable=g-import-not-at-top
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _command(out: str, quick: bool, ablations: bool, scale: str = "cpu",
             long_freezing: bool = False) -> str:
  return (f"python -m experiments.reproduce --out={out}" + (" --quick" if quick else "") +
          (" --ablations" if ablations and not quick else "") +
          (f" --scale={scale}" if scale != "cpu" else "") +
          (" --long_freezing" if long_freezing else ""))


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  f = flags.FLAGS
  from layerlock_jax import host_memory  # pylint: disable=g-import-not-at-top
  # The heap `python -m layerlock_jax.main` uses, set before JAX starts. --quick runs are a few
  # dozen steps each and compile-bound: glibc's defaults (host_memory.AUTO_MIN_STEPS).
  host_memory.configure("auto", total_steps=0 if f.quick else None)
  out = os.path.abspath(os.path.expanduser(f.out))
  try:
    results = reproduce(out, quick=f.quick, ablations=f.ablations, scale=f.scale,
                        long_freezing=f.long_freezing)
  except Preempted as e:
    print(e)
    return 0
  print(f"wrote {os.path.join(out, 'report.md')}")
  for name, claim in results["claims"].items():
    print(f"{name}: {claim['verdict']}")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "Output directory (runs, results.json, report.md, figures).")
  flags.DEFINE_bool("quick", False, "CI-sized smoke run: a few steps per run, tiny probes.")
  flags.DEFINE_bool("ablations", False, "Also train the RoPE and mini-warmup ablation arms "
                    "(one seed each), clip-centred LayerLock at every seed, and the full readout "
                    "table.")
  flags.DEFINE_bool("long_freezing", False, "Also claim 2b: its own MAE / freeze_pixel pair at "
                    "every seed, 900 steps each (beyond the default run's hour on 2 cores).")
  flags.DEFINE_enum("scale", "cpu", list(SCALES), "cpu: the 2-core runs (python -m "
                    "experiments.budget estimates their time); gpu: the claims 2-4 arms with a "
                    "ViT-S encoder, 2400 steps each.")
  flags.mark_flags_as_required(["out"])
  from layerlock_jax import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
