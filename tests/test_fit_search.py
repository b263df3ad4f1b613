"""`aot --fit`'s search, against a memory model whose answer is known, and its compile cache."""
import pathlib
import subprocess
import sys

import pytest

from layerlock_jax.config import loading as config_loading
from layerlock_jax.compile_targets import fit as fit_search

ROOT = pathlib.Path(__file__).resolve().parent.parent
GIB = 1024 ** 3


def _linear(fixed, per_clip, limit, refuse_above=None, calls=None):
  """A program whose bytes are fixed + per_clip x batch; above `refuse_above` the 'compiler'
  refuses and reports only the temporaries it asked for."""
  def evaluate(batch):
    if calls is not None:
      calls.append(batch)
    total = fixed + per_clip * batch
    if refuse_above is not None and total > refuse_above:
      return fit_search.Point((1, 1, 1), "none", batch, None, per_clip * batch, None, False,
                              None, None, False)
    return fit_search.Point((1, 1, 1), "none", batch, total, None, fixed, total <= limit,
                            1.0, 1.0, False)
  return evaluate


@pytest.mark.parametrize("start", [8, 256, 100000])
def test_search_lands_on_the_largest_fitting_batch(start):
  fixed, per_clip, limit, unit = 10 * GIB, 0.3 * GIB, 90 * GIB, 8
  best = int((limit - fixed) / per_clip) // unit * unit  # 264: the answer by arithmetic
  calls = []
  points = fit_search.search_batch(_linear(fixed, per_clip, limit, refuse_above=96 * GIB,
                                           calls=calls), start, unit, limit, 4096, 6)
  chosen = fit_search.choose(points)
  assert chosen is not None and chosen.fits and chosen.batch_size % unit == 0
  assert chosen.batch_size <= best
  # Either the largest batch, or one within 5% of the limit (not worth another compile).
  assert chosen.batch_size == best or chosen.peak_bytes >= 0.95 * limit
  assert len(calls) <= 6 and len(set(calls)) == len(calls)


def test_choice_prefers_the_largest_batch_then_the_least_recompute():
  p = lambda policy, batch, fits=True: fit_search.Point((1, 1, 1), policy, batch, 1, None, 0,
                                                        fits, None, None, False)
  points = [p("nothing_saveable", 64), p("dots_saveable", 64), p("none", 32),
            p("none", 128, fits=False)]
  assert fit_search.choose(points).remat_policy == "dots_saveable"
  assert fit_search.choose([p("none", 8, fits=False)]) is None


def test_cache_key_separates_programs_and_survives_a_reload(tmp_path):
  config = config_loading.load_config(ROOT / "configs" / "tiny.py", {})
  a = fit_search.candidate_config(config, (-1, 1, 1), "none", 32)
  b = fit_search.candidate_config(config, (-1, 1, 1), "none", 64)
  target = {"topology": "v5e:2x2", "num_slices": 1}
  ka, kb = fit_search.cache_key(a, target, "ends"), fit_search.cache_key(b, target, "ends")
  assert ka != kb and ka == fit_search.cache_key(a.copy_and_resolve_references(), target, "ends")
  assert ka != fit_search.cache_key(a, {"topology": "v5e:4x4", "num_slices": 1}, "ends")
  cache = fit_search.Cache(tmp_path / "fit.json")
  cache.put(ka, [{"total_bytes": 5}])
  assert fit_search.Cache(tmp_path / "fit.json").get(ka) == [{"total_bytes": 5}]


@pytest.mark.slow
def test_fit_cli_rerun_compiles_nothing(tmp_path):
  """The XLA:CPU path of --fit, twice: the second search takes every point from the cache."""
  args = [sys.executable, "-m", "layerlock_jax.aot", "--config=configs/tiny.py",
          "--num_devices=8", "--accelerator=v5e", "--fit", "--headroom=0.9",
          "--fit_max_compiles=2", "--config.model.depth=2", "--config.data.num_clips=100000",
          f"--fit_cache={tmp_path / 'fit.json'}"]
  runs = [subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
          for _ in range(2)]
  for run in runs:
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1].startswith("--config.batch_size=")
  assert "2 compiled now, 0 from the cache" in runs[0].stdout
  assert "0 compiled now, 2 from the cache" in runs[1].stdout
  assert runs[0].stdout.splitlines()[-1] == runs[1].stdout.splitlines()[-1]
