"""docs/dataset.md ("Your dataset"): every command in it names modules, configs and config fields
that exist, and runs on fixture trees of the same layouts (tests/test_layouts.py builds them)."""
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from layerlock_jax import config_loading
from layerlock_jax.data import layouts
from layerlock_jax.plan import options

import test_layouts  # pylint: disable=g-bad-import-order  (tests/ is on sys.path under pytest)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "dataset.md")


def doc_commands():
  text = open(DOC).read()
  blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
  return [shlex.split(line) for b in blocks for line in b.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
  return test_layouts.build_trees(str(tmp_path_factory.mktemp("doc")))


def localise(argv, trees, workdir):
  """The doc's paths -> the fixture trees' (same layouts) and a temporary workdir."""
  k, u = trees["kinetics"][0], os.path.dirname(trees["ucf101"][0])
  return [a.replace("/data/kinetics-700", k).replace("/data/ucf101", u)
          .replace("/runs/k700_vit_b", str(workdir)) for a in argv]


def test_doc_commands_name_real_modules_configs_and_fields():
  commands = doc_commands()
  modules = [c[2] for c in commands]
  assert modules == ["layerlock_jax.data.layouts", "layerlock_jax.data.layouts",
                     "layerlock_jax.main", "layerlock_jax.evaluate"]
  for argv in commands:
    assert argv[:2] == ["python", "-m"]
    assert importlib.util.find_spec(argv[2]) is not None, argv[2]
    flags = dict(a[2:].split("=", 1) for a in argv[3:])
    if "config" in flags:
      config = config_loading.load_config(os.path.join(REPO, flags["config"]))
      for key, value in flags.items():
        if key.startswith("config."):
          node = config
          for part in key.split(".")[1:]:
            assert part in node, f"{key} is not a config field"
            node = node[part]
    if argv[2] == "layerlock_jax.data.layouts":
      assert flags["layout"] in options.DATA_LAYOUTS


def test_doc_annotation_checks_run_on_fixture_trees(trees, tmp_path, capsys):
  for argv in doc_commands()[:2]:
    assert layouts.main(localise(argv, trees, tmp_path)[3:]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("train: 4 listed in ") and "3 found (1 as segments of full videos), " \
      "1 missing (e.g. gone00000_000000_000010); 2 classes" in out[0], out[0]
  assert "test: 2 listed" in out[1] and "2 found" in out[1]
  assert out[2].startswith("train: 2 listed in ") and out[2].endswith(
      "trainlist01.txt, 2 found (0 as segments of full videos), 0 missing; 2 classes"), out[2]
  assert out[3].startswith("test: 2 listed in ") and "testlist01.txt, 2 found" in out[3]


SHRINK = ["--config.data.num_frames=4", "--config.data.image_size=16",
          "--config.data.frame_stride=1", "--config.data.num_workers=0", "--config.batch_size=2",
          "--config.model.depth=1", "--config.model.decoder.depth=1"]


@pytest.mark.slow
def test_doc_pretraining_and_probe_table_run_on_fixture_trees(trees, tmp_path):
  _, _, train, evaluate = doc_commands()
  env = dict(os.environ, PYTHONPATH=REPO)
  run = lambda argv: subprocess.run(  # noqa: E731
      [sys.executable] + argv[1:], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=900)
  shrink = lambda argv: [  # noqa: E731  (the same command on the tiny model, in place)
      "--config=configs/tiny.py" if a.startswith("--config=") else a for a in argv] + SHRINK
  argv = shrink(localise(train, trees, tmp_path / "w")) + [
      "--config.total_steps=2", "--config.log_every=1", "--config.checkpoint_every=2"]
  proc = run(argv)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 2/2" in proc.stderr
  argv = [a.replace("--num_clips=512", "--num_clips=2")
          for a in shrink(localise(evaluate, trees, tmp_path / "w"))]
  proc = run(argv + ["--attentive_steps=0", "--random_baseline=false"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 2 on video_folder:" in proc.stdout, proc.stdout
  assert "lin/label" in proc.stdout and "chance (majority class): label=0.500" in proc.stdout
  assert os.path.exists(tmp_path / "w" / "eval" / "step_2.json")
