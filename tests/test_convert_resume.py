"""The converter's resume and runners: a killed conversion rerun writes byte-identical shards;
the Beam DirectRunner writes what the process pool writes."""
import filecmp
import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import av
import numpy as np
import pytest

from layerlock_jax.data import convert
from layerlock_jax.data import convert_beam
from layerlock_jax.data import convert_stages

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _write_video(path: str, seed: int, frames: int, size: int = 16) -> None:
  rng = np.random.default_rng(seed)
  with av.open(path, "w") as container:
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
    for _ in range(frames):
      image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
      for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """train/ of 3 classes x 4 videos of 6..9 frames and one broken file; test/ of 3 videos."""
  root = tmp_path_factory.mktemp("convert_in")
  for c in range(3):
    for split, count in (("train", 4), ("test", 1)):
      d = root / split / f"class_{c}"
      d.mkdir(parents=True, exist_ok=True)
      for j in range(count):
        _write_video(str(d / f"v{j}.mp4"), seed=100 * c + j + (50 if split == "test" else 0),
                     frames=6 + j)
  (root / "train" / "class_1" / "broken.mp4").write_bytes(b"not a video")
  return root


def _outputs(out: pathlib.Path) -> list[str]:
  return sorted(f for f in os.listdir(out) if not f.startswith("."))


def _assert_same_output(got: pathlib.Path, want: pathlib.Path) -> None:
  assert _outputs(got) == _outputs(want)
  shards = [f for f in _outputs(want) if ".array_record" in f]
  assert len(shards) == 7  # 4 train + 3 test (a shard per record at most)
  for name in _outputs(want):
    assert filecmp.cmp(got / name, want / name, shallow=False), name
  assert not (got / convert_stages.STATE_DIR).exists()


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
  """short_side -> the output folder of an uninterrupted process-pool run."""
  made = {}

  def get(short_side: int = 0) -> pathlib.Path:
    if short_side not in made:
      out = tmp_path_factory.mktemp(f"uninterrupted_{short_side}")
      convert.convert_folder(str(folder), str(out), num_shards=4, workers=2,
                             short_side=short_side, log=lambda _: None)
      made[short_side] = out
    return made[short_side]
  return get


@pytest.fixture(scope="module")
def uninterrupted(reference):
  return reference(0)


def _killed_run(folder: pathlib.Path, out: pathlib.Path, patch: str,
                runner: tuple[str, ...] = ("--runner=processes",),
                short_side: int = 0) -> subprocess.CompletedProcess:
  """The converter in a fresh process whose `patch` SIGKILLs it at a chosen point."""
  script = "\n".join([
      "import os, signal, sys",
      "from layerlock_jax.data import convert, convert_stages",
      patch,
      'if __name__ == "__main__":',
      f"  sys.exit(convert.main(['convert', '--input={folder}', '--output={out}', "
      f"'--num_shards=4', '--workers=2', '--short_side={short_side}', *{list(runner)!r}]))"])
  log = out.parent / f"{out.name}.log"
  with open(log, "w") as f:
    # Its own session: the pool processes it leaves behind when killed are ended with it.
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=f, stderr=f,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    try:
      code = proc.wait(timeout=600)
    finally:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
  return subprocess.CompletedProcess(proc.args, code, log.read_text(), log.read_text())


KILL_AFTER_TWO_SHARDS = """
real_write = convert_stages.write_shard
def write_shard(job):
  done = [f for f in os.listdir(job[0]) if ".array_record" in f and not f.endswith(".tmp")]
  if len(done) >= 2:  # Beam may run two writes at once: the kill can come at 2 or 3
    open(os.path.join(job[0], job[1] + ".tmp"), "wb").write(b"half a shard")
    os.kill(os.getpid(), signal.SIGKILL)
  return real_write(job)
convert_stages.write_shard = write_shard
"""

KILL_AFTER_TWO_CHUNKS = """
real_save = convert_stages.save_chunk
def save_chunk(output_dir, split, chunk, results):
  path = real_save(output_dir, split, chunk, results)
  if chunk == 1:
    os.kill(os.getpid(), signal.SIGKILL)
  return path
convert_stages.save_chunk = save_chunk
"""


@pytest.mark.parametrize("short_side", [0, 8])  # original bytes; re-encoded (scratch files kept)
def test_killed_while_writing_shards_resumes_byte_identical(folder, reference, tmp_path,
                                                            short_side):
  out = tmp_path / "out"
  killed = _killed_run(folder, out, KILL_AFTER_TWO_SHARDS, short_side=short_side)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert not (out / "metadata.json").exists()
  written = {f: (out / f).read_bytes() for f in os.listdir(out)
             if ".array_record" in f and "tmp" not in f}
  assert len(written) == 2
  scratch = out / ".reencoded-train"
  encoded = {f.read_bytes() for f in scratch.iterdir()} if short_side else set()
  logs = []
  convert.convert_folder(str(folder), str(out), num_shards=4, workers=2, short_side=short_side,
                         log=logs.append)
  assert any("resuming the interrupted conversion" in line for line in logs)
  assert "[train] 2 of 4 shard(s) already written" in logs
  assert "[train] 13 of 13 inspection chunk(s) already done" in logs   # a file per chunk
  assert all((out / f).read_bytes() == data for f, data in written.items())
  if not short_side:
    _assert_same_output(out, reference(short_side))
    return
  # x264 does not always re-encode a file to the same bytes twice, so a re-encoding run is
  # compared with itself: the resumed run stores exactly the streams the killed run encoded,
  # and lays them out as an uninterrupted run does.
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from layerlock_jax.data import records  # pylint: disable=g-import-not-at-top
  want = reference(short_side)
  assert _outputs(out) == _outputs(want)
  assert json.loads((out / "metadata.json").read_text()) == json.loads(
      (want / "metadata.json").read_text())
  train = sorted(f for f in _outputs(out) if f.startswith("train.array_record"))
  videos = []
  for name in train:
    reader = array_record_module.ArrayRecordReader(str(out / name))
    videos += [records.decode_record(r)[1] for r in reader.read_all()]
    reader.close()
  assert len(videos) == 12 and set(videos) <= encoded


def test_killed_while_inspecting_resumes_byte_identical(folder, uninterrupted, tmp_path):
  out = tmp_path / "out"
  killed = _killed_run(folder, out, KILL_AFTER_TWO_CHUNKS)
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert not any(".array_record" in f for f in os.listdir(out))
  logs = []
  convert.convert_folder(str(folder), str(out), num_shards=4, workers=2, log=logs.append)
  assert "[train] 2 of 13 inspection chunk(s) already done" in logs   # 13 files, 1 per chunk
  _assert_same_output(out, uninterrupted)


def test_rerun_with_other_settings_is_refused(folder, tmp_path):
  out = tmp_path / "out"
  killed = _killed_run(folder, out, KILL_AFTER_TWO_SHARDS)
  assert killed.returncode == -9
  with pytest.raises(FileExistsError, match=r"other settings \(num_shards\)"):
    convert.convert_folder(str(folder), str(out), num_shards=3, workers=2, log=lambda _: None)
  # Nor may the input change under an interrupted conversion.
  (folder / "train" / "class_0" / "v0.mp4").rename(folder / "train" / "class_0" / "v0_.mp4")
  try:
    with pytest.raises(FileExistsError, match="files or labels changed"):
      convert.convert_folder(str(folder), str(out), num_shards=4, workers=2, log=lambda _: None)
  finally:
    (folder / "train" / "class_0" / "v0_.mp4").rename(folder / "train" / "class_0" / "v0.mp4")
  # A finished conversion still needs --overwrite, as before.
  convert.convert_folder(str(folder), str(out), num_shards=4, workers=2, log=lambda _: None)
  with pytest.raises(FileExistsError, match="pass --overwrite"):
    convert.convert_folder(str(folder), str(out), num_shards=4, workers=2, log=lambda _: None)


def test_unknown_flags_without_beam_runner_are_one_clear_error(folder, tmp_path):
  run = subprocess.run(
      [sys.executable, "-m", "layerlock_jax.data.convert", f"--input={folder}",
       f"--output={tmp_path / 'out'}", "--runner=processes", "--direct_num_workers=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1].startswith("error: unknown flag(s)")


# ------------------------------------------------------------------------------------------------
# Apache Beam is in the test extra: a missing install fails these tests, it does not skip them.

@pytest.mark.parametrize("short_side", [0])
def test_direct_runner_writes_what_the_process_pool_writes(folder, reference, tmp_path,
                                                           short_side):
  out = tmp_path / "beam"
  runner = convert_beam.BeamRunner("DirectRunner", ["--direct_num_workers=2"])
  report = convert.convert_folder(str(folder), str(out), num_shards=4, short_side=short_side,
                                  log=lambda _: None, runner=runner)
  assert report["splits"]["train"]["converted"] == 12
  assert report["splits"]["train"]["skipped"] == 1
  _assert_same_output(out, reference(short_side))


def test_beam_run_killed_half_way_resumes_byte_identical(folder, uninterrupted, tmp_path):
  out = tmp_path / "out"
  # In-memory DirectRunner: the stages run in this process, where the patch kills it.
  killed = _killed_run(folder, out, KILL_AFTER_TWO_SHARDS,
                       runner=("--runner=DirectRunner", "--direct_running_mode=in_memory"))
  assert killed.returncode == -9, killed.stderr[-2000:]
  assert not (out / "metadata.json").exists()
  run = subprocess.run(
      [sys.executable, "-m", "layerlock_jax.data.convert", f"--input={folder}",
       f"--output={out}", "--num_shards=4", "--runner=DirectRunner", "--direct_num_workers=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "runner: DirectRunner --direct_num_workers=2" in run.stdout
  assert re.search(r"\[train\] [23] of 4 shard\(s\) already written", run.stdout)
  _assert_same_output(out, uninterrupted)
  report = json.loads((out / "conversion_report.json").read_text())
  assert report["splits"]["train"]["converted"] == 12
