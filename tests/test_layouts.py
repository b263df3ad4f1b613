"""The benchmark layouts (data.layout=kinetics|ssv2|ucf101|hmdb51) on tiny fixture trees.

Each tree holds PyAV-encoded videos whose pixels say which video they are (green level) and which
frame (red level), next to annotation files written the way the datasets publish them. Expected
labels are hand-written here from those annotation files, never computed by the code under test.
"""
import csv
import json
import logging
import os

import av
import ml_collections
import numpy as np
import pytest

from layerlock_jax import config_loading, config_validation
from layerlock_jax.data import layouts, pipeline, video_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, S = 4, 16
RATE = 10  # frames per second of every fixture video


def red_of(t):
  return 10 + 6 * t          # frame t's red level (t <= 40)


def green_of(vid):
  return 30 + 20 * vid       # video vid's green level (vid <= 10)


def write_video(path, vid, n, size=(24, 32)):
  """n frames at RATE fps: red = red_of(t), green = green_of(vid), blue = 128."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  codec = {"webm": "libvpx-vp9", "avi": "mpeg4"}.get(path.rsplit(".", 1)[-1], "libx264")
  with av.open(path, "w") as c:
    s = c.add_stream(codec, rate=RATE)
    s.height, s.width = size
    s.pix_fmt = "yuv420p"
    s.bit_rate = 4_000_000
    for t in range(n):
      f = np.empty(size + (3,), np.uint8)
      f[..., 0], f[..., 1], f[..., 2] = red_of(t), green_of(vid), 128
      for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def which_video(clip):
  return int(round((clip[..., 1].mean() - 30) / 20))


def frame_times(clip):
  return [int(round((f[..., 0].mean() - 10) / 6)) for f in clip]


def data_cfg(layout, path, annotations, **kw):
  c = ml_collections.ConfigDict()
  c.source, c.path, c.num_frames, c.image_size = "video_folder", str(path), T, S
  c.layout, c.annotations, c.split_id = layout, str(annotations), 1
  c.num_workers, c.prefetch, c.frame_stride = 0, 2, 1
  for k, v in kw.items():
    c[k] = v
  return c


def source(cfg, split):
  return video_files.source_from_config(cfg, split, seed=0)


def labels_by_video(src):
  """{video id (from its pixels): label} over every record of a source."""
  return {which_video(src[i]["video"]): int(src[i]["label"]) for i in range(len(src))}


# ------------------------------------------------------------------------------------------------
# Fixture trees, one per layout, with the annotation files as the datasets publish them.


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
  return build_trees(str(tmp_path_factory.mktemp("layouts")))


def build_trees(base):
  """{layout: (video folder, annotations, {split: {video id: label}})} under `base`."""
  out = {}

  # Kinetics-400/700: annotations/{train,val}.csv; pre-trimmed clips in class folders, as the
  # downloaders write them, and one full video (with its segment) in a flat folder.
  k = os.path.join(base, "kinetics")
  ann = os.path.join(k, "annotations")
  os.makedirs(ann)
  with open(os.path.join(ann, "train.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
    w.writerow(["abseiling", "-3B32lodo2M", 59, 69, "train", 0])
    w.writerow(["playing guitar", "a_b-Cd3", 10, 20, "train", 0])
    w.writerow(["abseiling", "fullVid_1", 1.5, 3, "train", 0])       # a full video's segment
    w.writerow(["playing guitar", "gone00000", 0, 10, "train", 0])   # listed, never downloaded
  with open(os.path.join(ann, "val.csv"), "w", newline="", encoding="utf-8-sig") as f:  # a BOM
    w = csv.writer(f)
    w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
    w.writerow(["playing guitar", "val_0001", 0, 10, "val"])
    w.writerow(["abseiling", "val_0002", 5, 15, "val"])
  write_video(os.path.join(k, "train", "abseiling", "-3B32lodo2M_000059_000069.mp4"), 0, 12)
  write_video(os.path.join(k, "train", "playing guitar", "a_b-Cd3_000010_000020.mp4"), 1, 12)
  write_video(os.path.join(k, "full", "fullVid_1.mp4"), 2, 40)   # 4 s; segment [1.5, 3) s
  write_video(os.path.join(k, "val", "playing guitar", "val_0001_000000_000010.mp4"), 3, 12)
  write_video(os.path.join(k, "val", "abseiling", "val_0002_000005_000015.mp4"), 4, 12)
  out["kinetics"] = (k, ann, {"train": {0: 0, 1: 1, 2: 0}, "test": {3: 1, 4: 0}})

  # Something-Something-v2: labels/something-something-v2-{labels,train,validation}.json and
  # 20bn-something-something-v2/<id>.webm.
  s = os.path.join(base, "ssv2")
  ann = os.path.join(s, "labels")
  os.makedirs(ann)
  with open(os.path.join(ann, "something-something-v2-labels.json"), "w") as f:
    json.dump({"Holding something next to something": "1",
               "Pushing something from left to right": "0"}, f)
  train = [{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
            "template": "Holding [something] next to [something]",
            "placeholders": ["potato", "vicks vaporub bottle"]},
           {"id": "42326", "label": "pushing a cup from left to right",
            "template": "Pushing [something] from left to right", "placeholders": ["a cup"]}]
  val = [{"id": "74225", "label": "pushing pen from left to right",
          "template": "Pushing [something] from left to right", "placeholders": ["pen"]},
         {"id": "3", "label": "holding a cup next to a phone",
          "template": "Holding [something] next to [something]",
          "placeholders": ["a cup", "a phone"]}]
  for name, items in (("train", train), ("validation", val)):
    with open(os.path.join(ann, f"something-something-v2-{name}.json"), "w") as f:
      json.dump(items, f)
  for vid, i in ((0, "78687"), (1, "42326"), (2, "74225"), (3, "3")):
    write_video(os.path.join(s, "20bn-something-something-v2", f"{i}.webm"), vid, 8)
  out["ssv2"] = (s, ann, {"train": {0: 1, 1: 0}, "test": {2: 0, 3: 1}})

  # UCF101: ucfTrainTestlist/ (CRLF line ends, as published; the list spells a class
  # "HandStandPushups" where classInd.txt and the folder say "HandstandPushups") and UCF-101/.
  u = os.path.join(base, "ucf101")
  ann = os.path.join(u, "ucfTrainTestlist")
  os.makedirs(ann)
  lines = {
      "classInd.txt": ["1 ApplyEyeMakeup", "2 HandstandPushups"],
      "trainlist01.txt": ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1",
                          "HandStandPushups/v_HandStandPushups_g08_c01.avi 2"],
      "testlist01.txt": ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                         "HandStandPushups/v_HandStandPushups_g01_c01.avi"],
      "trainlist02.txt": ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1",
                          "HandStandPushups/v_HandStandPushups_g01_c01.avi 2"],
      "testlist02.txt": ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"],
  }
  for name, rows in lines.items():
    with open(os.path.join(ann, name), "w", newline="") as f:
      f.write("".join(r + "\r\n" for r in rows))
  videos = os.path.join(u, "UCF-101")
  write_video(os.path.join(videos, "ApplyEyeMakeup", "v_ApplyEyeMakeup_g08_c01.avi"), 0, 8)
  write_video(os.path.join(videos, "HandstandPushups", "v_HandStandPushups_g08_c01.avi"), 1, 8)
  write_video(os.path.join(videos, "ApplyEyeMakeup", "v_ApplyEyeMakeup_g01_c01.avi"), 2, 8)
  write_video(os.path.join(videos, "HandstandPushups", "v_HandStandPushups_g01_c01.avi"), 3, 8)
  out["ucf101"] = (videos, ann, {"train": {0: 0, 1: 1}, "test": {2: 0, 3: 1}})

  # HMDB51: testTrainMulti_7030_splits/<class>_test_split<N>.txt (1 train, 2 test, 0 neither;
  # a trailing space on each line, as published) and hmdb51/<class>/<file>.avi.
  h = os.path.join(base, "hmdb51")
  ann = os.path.join(h, "testTrainMulti_7030_splits")
  os.makedirs(ann)
  marks = {"brush_hair": {"April_09_brush_hair_u_nm_np1_ba_goo_0.avi": "1",
                          "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi": "2",
                          "Brushing_Hair_with_Beth_brush_hair_h_nm_np1_le_goo_0.avi": "0"},
           "cartwheel": {"Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8.avi": "1",
                         "Bodenturnen_2004_cartwheel_f_cm_np1_le_med_0.avi": "2"}}
  for cls, table in marks.items():
    for split in (1, 2, 3):
      with open(os.path.join(ann, f"{cls}_test_split{split}.txt"), "w") as f:
        f.write("".join(f"{name} {mark} \n" for name, mark in table.items()))
  videos = os.path.join(h, "hmdb51")
  for vid, (cls, name) in enumerate((c, n) for c in marks for n in marks[c]):
    write_video(os.path.join(videos, cls, name), vid, 8)
  # vids: 0 brush train, 1 brush test, 2 brush unused, 3 cartwheel train, 4 cartwheel test
  out["hmdb51"] = (videos, ann, {"train": {0: 0, 3: 1}, "test": {1: 0, 4: 1}})
  return out


LAYOUT_NAMES = ("kinetics", "ssv2", "ucf101", "hmdb51")


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_labels_come_from_the_annotation_files(trees, layout):
  path, ann, expected = trees[layout]
  cfg = data_cfg(layout, path, ann)
  config_validation.validate(_full_config(cfg), num_devices=1)  # the annotations pass the checks
  for split in ("train", "test"):
    assert labels_by_video(source(cfg, split)) == expected[split], (layout, split)


def test_class_names_follow_each_datasets_numbering(trees):
  def names(layout):
    path, ann, _ = trees[layout]
    return source(data_cfg(layout, path, ann), "train").class_names
  assert names("kinetics") == ["abseiling", "playing guitar"]          # sorted label names
  assert names("ssv2") == ["Pushing something from left to right",     # labels.json's numbers
                           "Holding something next to something"]
  assert names("ucf101") == ["ApplyEyeMakeup", "HandstandPushups"]     # classInd.txt
  assert names("hmdb51") == ["brush_hair", "cartwheel"]                # split file names


def test_ucf101_split_id_selects_the_lists(trees):
  path, ann, _ = trees["ucf101"]
  cfg = data_cfg("ucf101", path, ann, split_id=2)
  assert labels_by_video(source(cfg, "train")) == {2: 0, 3: 1}
  assert labels_by_video(source(cfg, "test")) == {0: 0}


def test_kinetics_segment_of_a_full_video(trees):
  """fullVid_1.mp4 is 4 s of 10 fps; its row says [1.5, 3) s: frames 15..29, nothing else."""
  path, ann, _ = trees["kinetics"]
  src = source(data_cfg("kinetics", path, ann), "train")
  full = [i for i in range(len(src)) if which_video(src[i]["video"]) == 2]
  assert len(full) == 1
  seen = set()
  for position in range(40):   # random temporal offsets
    clip = src.training_item(position, full[0], seed=3)["video"][0]
    assert which_video(clip) == 2
    times = frame_times(clip)
    assert times == list(range(times[0], times[0] + T)), times   # frame_stride 1
    seen.update(times)
  assert seen <= set(range(15, 30)), sorted(seen)
  assert {15, 29} <= seen      # both ends of the segment are reachable
  # The evaluation clip is centred in the segment, not in the video.
  assert frame_times(src[full[0]]["video"]) == [20, 21, 22, 23]


def test_kinetics_annotations_as_one_json_file(trees, tmp_path):
  """The JSON form ({youtube_id: {annotations: {label, segment}, subset}}) reads the same."""
  path, _, expected = trees["kinetics"]
  table = {
      "-3B32lodo2M": {"annotations": {"label": "abseiling", "segment": [59.0, 69.0]},
                      "duration": 10.0, "subset": "train", "url": "https://www.youtube.com/"},
      "a_b-Cd3": {"annotations": {"label": "playing guitar", "segment": [10.0, 20.0]},
                  "duration": 10.0, "subset": "train", "url": ""},
      "fullVid_1": {"annotations": {"label": "abseiling", "segment": [1.5, 3.0]},
                    "duration": 10.0, "subset": "train", "url": ""},
      "val_0001": {"annotations": {"label": "playing guitar", "segment": [0.0, 10.0]},
                   "duration": 10.0, "subset": "validate", "url": ""},
      "val_0002": {"annotations": {"label": "abseiling", "segment": [5.0, 15.0]},
                   "duration": 10.0, "subset": "validate", "url": ""}}
  ann = tmp_path / "kinetics_700.json"
  ann.write_text(json.dumps(table))
  cfg = data_cfg("kinetics", path, ann)
  for split in ("train", "test"):
    assert labels_by_video(source(cfg, split)) == expected[split]


def test_listed_but_missing_video_is_counted_and_listed(trees, caplog):
  path, ann, _ = trees["kinetics"]
  caplog.set_level(logging.INFO)
  src = source(data_cfg("kinetics", path, ann), "train")
  assert len(src) == 3  # the 4 rows less the one never downloaded
  bad = src.bad_input.summary()["bad"]
  assert list(bad) == ["gone00000_000000_000010"]
  assert "train.csv but no video file" in bad["gone00000_000000_000010"][1]
  assert "gone00000_000000_000010" in caplog.text
  assert "3 usable video(s) in 2 class(es); 1 skipped" in caplog.text


# ------------------------------------------------------------------------------------------------
# Bad annotations: one clear line from config validation, before any video is opened.


def _full_config(data):
  c = config_loading.load_config(os.path.join(REPO, "configs", "tiny.py"))  # a 16-pixel clip fits
  for k, v in data.items():
    c.data[k] = v
  return c


def _config_error(cfg) -> str:
  with pytest.raises(config_validation.ConfigError) as err:
    config_validation.validate(_full_config(cfg), num_devices=1)
  line = config_validation.format_error(err.value)
  assert "\n" not in line
  return line


def _copy_tree(src, dst):
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(src, dst)
  return str(dst)


def test_missing_annotation_file(trees, tmp_path):
  path, ann, _ = trees["ucf101"]
  line = _config_error(data_cfg("ucf101", path, ann, split_id=3))
  assert "no trainlist03.txt" in line, line
  line = _config_error(data_cfg("ssv2", path, tmp_path / "nowhere"))
  assert "does not exist" in line, line
  empty = tmp_path / "empty"
  empty.mkdir()
  line = _config_error(data_cfg("hmdb51", path, empty))
  assert "no <class>_test_split1.txt" in line, line
  line = _config_error(data_cfg("kinetics", path, ""))
  assert "data.annotations" in line, line


def test_bad_annotation_row_names_file_and_line(trees, tmp_path):
  path, ann, _ = trees["kinetics"]
  bad = _copy_tree(ann, tmp_path / "k")
  with open(os.path.join(bad, "val.csv"), "a") as f:
    f.write("abseiling,xyz,ten,20,val\n")
  line = _config_error(data_cfg("kinetics", path, bad))
  assert "val.csv:4: time_start 'ten' is not a number" in line, line
  path, ann, _ = trees["hmdb51"]
  bad = _copy_tree(ann, tmp_path / "h")
  with open(os.path.join(bad, "cartwheel_test_split1.txt"), "a") as f:
    f.write("some_video.avi 7\n")
  line = _config_error(data_cfg("hmdb51", path, bad))
  assert "cartwheel_test_split1.txt:3: expected '<file> <0|1|2>'" in line, line


def test_unknown_class_name(trees, tmp_path):
  path, ann, _ = trees["ucf101"]
  bad = _copy_tree(ann, tmp_path / "u")
  with open(os.path.join(bad, "testlist01.txt"), "a", newline="") as f:
    f.write("Juggling/v_Juggling_g01_c01.avi\r\n")
  line = _config_error(data_cfg("ucf101", path, bad))
  assert "testlist01.txt:3: unknown class name 'Juggling'" in line, line
  path, ann, _ = trees["ssv2"]
  bad = _copy_tree(ann, tmp_path / "s")
  name = os.path.join(bad, "something-something-v2-validation.json")
  items = json.load(open(name)) + [{"id": "1", "label": "x", "template": "Opening [something]",
                                    "placeholders": ["x"]}]
  json.dump(items, open(name, "w"))
  line = _config_error(data_cfg("ssv2", path, bad))
  assert "unknown class name 'Opening something'" in line, line
  path, ann, _ = trees["kinetics"]
  bad = _copy_tree(ann, tmp_path / "k")
  with open(os.path.join(bad, "val.csv"), "a") as f:
    f.write("juggling balls,xyz,0,10,val\n")
  line = _config_error(data_cfg("kinetics", path, bad))
  assert "val.csv:4: unknown class name 'juggling balls'" in line, line


def test_layout_needs_video_folder_source_and_annotations(trees):
  path, ann, _ = trees["ucf101"]
  line = _config_error(data_cfg("ucf101", path, ann, source="array_record"))
  assert "needs data.source='video_folder'" in line, line
  line = _config_error(data_cfg("ucf101", path, ann, split_id=4))
  assert "split_id" in line, line
  line = _config_error(data_cfg("imagenet", path, ann))
  assert "data.layout" in line, line


def test_training_command_stops_on_bad_annotations_with_one_line(trees, tmp_path):
  """The entry point: exit status 2 and one line, before the model or the data is built."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  path, ann, _ = trees["ucf101"]
  proc = subprocess.run(
      [sys.executable, "-m", "layerlock_jax.main", "--config=configs/tiny.py",
       f"--workdir={tmp_path / 'w'}", "--config.data.source=video_folder",
       "--config.data.layout=ucf101", f"--config.data.path={path}",
       f"--config.data.annotations={ann}", "--config.data.split_id=3",
       "--config.data.num_frames=4", "--config.data.image_size=16"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last == (f"Config error: config.data.annotations: data.annotations={ann!r} has no "
                  "trainlist03.txt (ucf101 split 3)"), last
  assert "=== data" not in proc.stderr and "=== mesh" not in proc.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_reader_reports_bad_input_directly():
  with pytest.raises(layouts.AnnotationError, match="needs data.annotations"):
    layouts.read("ssv2", "", "train")


# ------------------------------------------------------------------------------------------------
# Each layout trains a few steps through the pipeline and the training loop.


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_pipeline_batches_carry_annotation_labels(trees, layout):
  path, ann, expected = trees[layout]
  it = pipeline.make_train_iterator(data_cfg(layout, path, ann), seed=0, global_batch_size=2,
                                    process_index=0, process_count=1)
  for _ in range(3):
    batch = next(it)
    assert batch["video"].shape == (2, T, S, S, 3)
    for clip, label in zip(batch["video"], batch["label"]):
      assert expected["train"][which_video(clip)] == label


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_each_layout_trains_a_few_steps_and_evaluates(trees, layout, tmp_path):
  from layerlock_jax import evaluate  # pylint: disable=g-import-not-at-top
  from layerlock_jax import train  # pylint: disable=g-import-not-at-top
  path, ann, _ = trees[layout]
  config = config_loading.load_config(os.path.join(REPO, "configs", "tiny.py"))
  config.total_steps, config.log_every, config.checkpoint_every = 2, 1, 0
  config.batch_size = 8  # one clip per forced CPU device (conftest)
  config.model.width, config.model.depth, config.model.mlp_dim = 32, 1, 64
  config.model.num_heads = config.model.decoder.num_heads = 2
  config.model.decoder.width, config.model.decoder.mlp_dim = 32, 64
  for k, v in data_cfg(layout, path, ann).items():
    if k in config.data:
      config.data[k] = v
  config.data.num_workers = 0
  config_validation.validate(config, num_devices=8)
  train.run(config, str(tmp_path / "wd"))
  rows = [json.loads(l) for l in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in rows)
  # The probes read both splits through the same layout: every test clip, labels as annotated.
  out = evaluate.run_evaluation(config, str(tmp_path / "wd"), num_clips=2, attentive_steps=0,
                                random_baseline=False)
  task = out["result"]["tasks"]["label"]
  assert task["chance"] == 0.5  # one test clip of each of the two classes
  assert all(0 <= row["linear/label"] <= 1 for row in out["result"]["rows"])
