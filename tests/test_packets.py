"""Converted records decode from their packets without the container (data/packets.py).

The reference for every frame is a plain sequential decode of the whole record through its
container (decode.decode_video), never the packet path itself.
"""
import io

import av
import numpy as np
import pytest

from layerlock_jax.data import augment, convert, decode, packets, records

from test_video_seek import encode, textured

N, KEY = 60, 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """Two sources of the same size (their re-encodes share one decoder configuration), one with
  B-frames and a long GOP, converted at short side 32 with a keyframe every KEY frames."""
  base = tmp_path_factory.mktemp("packets")
  src = base / "in"
  src.mkdir()
  encode(src / "a.mp4", textured(N, seed=1), "libx264", 40, options={"bf": "3"})
  encode(src / "b.mkv", textured(N, seed=2), "libx264", 25, options={"bf": "2"})
  convert.convert_folder(str(src), str(base / "out"), short_side=32, keyframe_interval=KEY,
                         workers=1, min_frames=8, log=lambda s: None)
  source = records.ArrayRecordSource(str(base / "out"), "train", augment.ClipSpec(8, 16))
  out = {}
  for r in range(2):
    header, data = records.decode_record(source.raw_records[r])
    video = decode.decode_video(data, limit=1000)
    out[header["name"]] = (header, data, np.stack([video.rgb(i) for i in range(N)]))
  return out


def _rgb_span(data, table, start, needed):
  got = {}
  count = packets.decode_span(data, table, start, needed,
                              lambda i, f: got.__setitem__(i, f.to_ndarray(format="rgb24")))
  return got, count


def test_records_carry_a_table_that_round_trips_through_json(shards):
  for header, data, _ in shards.values():
    index = decode.VideoIndex.from_json(header["index"])
    table = index.packets
    assert table is not None and table.codec == "h264" and len(table.sizes) == N
    assert "start" in header["index"]["packets"]  # mp4 samples are contiguous: one offset stored
    assert table.offsets[-1] + table.sizes[-1] <= len(data)
    # Every packet is where the container's demuxer finds it.
    with av.open(io.BytesIO(data)) as c:
      demuxed = [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]
    assert [data[o:o + s] for o, s in zip(table.offsets, table.sizes)] == demuxed
    # The general form (explicit offsets) round-trips too.
    gappy = table._replace(offsets=table.offsets + np.arange(N) * 3)
    again = packets.PacketTable.from_json(gappy.to_json())
    assert "offsets" in gappy.to_json()
    np.testing.assert_array_equal(again.offsets, gappy.offsets)
    assert again.extradata == table.extradata


def test_packet_spans_equal_the_full_decode_and_start_at_the_keyframe(shards):
  # Alternating between the two records exercises the kept decoder (same configuration).
  assert len({h["index"]["packets"]["extradata"] for h, _, _ in shards.values()}) == 1
  for needed in ([KEY + s for s in range(0, 16, 2)], [KEY - 1 + s for s in range(8)],
                 [N - 1 - 3 * s for s in range(10)][::-1], [3, 4, 5], [0]):
    for header, data, full in shards.values():
      index = decode.VideoIndex.from_json(header["index"])
      key = max(k for k in index.keyframes if k <= needed[0])
      got, count = _rgb_span(data, index.packets, key, needed)
      assert sorted(got) == sorted(needed)
      for i in needed:
        np.testing.assert_array_equal(got[i], full[i], err_msg=f"{header['name']} frame {i}")
      assert count == needed[-1] - key + 1


def test_load_clips_is_the_same_with_and_without_the_table(shards):
  """Same draws, same crops: the packet path and the container path give identical clips."""
  spec = augment.ClipSpec(8, 16, clips_per_video=2)
  for header, data, _ in shards.values():
    index = decode.VideoIndex.from_json(header["index"])
    for position in range(6):
      fast = decode.load_clips(data, spec, augment.clip_rng(3, position), index=index)
      plain = decode.load_clips(data, spec, augment.clip_rng(3, position),
                                index=index._replace(packets=None))
      assert fast.shape == (2, 8, 16, 16, 3)
      np.testing.assert_array_equal(fast, plain)


def test_a_cut_record_fails_only_the_clips_past_the_cut(shards):
  header, data, full = shards["a.mp4"]
  index = decode.VideoIndex.from_json(header["index"])
  cut = data[:int(index.packets.offsets[40])]
  spec = augment.ClipSpec(4, 16, frame_stride=1, crop="center", flip=False)
  draws = {s: int(np.random.default_rng(s).integers(N - 3)) for s in range(80)}
  late = next(s for s, d in draws.items() if d > 45)
  early = next(s for s, d in draws.items() if d < 20)
  with pytest.raises(decode.BadVideoError) as err:
    decode.load_clips(cut, spec, np.random.default_rng(late), index=index)
  assert "record" in err.value.reason and not err.value.whole_file
  clip = decode.load_clips(cut, spec, np.random.default_rng(early), index=index)
  ref = decode.load_clips(data, spec, np.random.default_rng(early),
                          index=index._replace(packets=None))
  np.testing.assert_array_equal(clip, ref)
  assert full.std() > 10


def test_streams_with_reordered_frames_get_no_table(tmp_path):
  """B-frames (decode order != presentation order): no table, the container path serves them."""
  path = tmp_path / "b.mp4"
  encode(path, textured(30), "libx264", 10, options={"bf": "3"})
  with av.open(str(path)) as c:
    assert packets.table_of(c, c.streams.video[0]) is None
  path = tmp_path / "p.mp4"
  encode(path, textured(30), "libx264", 10, options={"bf": "0"})
  with av.open(str(path)) as c:
    table = packets.table_of(c, c.streams.video[0])
  assert table is not None and len(table.sizes) == 30


def test_bad_tables_are_rejected_when_read():
  good = {"codec": "h264", "extradata": "AA==", "sizes": [3, 4], "start": 10}
  assert packets.PacketTable.from_json(good).offsets.tolist() == [10, 13]
  with pytest.raises(ValueError):
    packets.PacketTable.from_json({**good, "sizes": [3, 0]})
  index = {"num_frames": 3, "height": 2, "width": 2, "keyframes": [0],
           "pts": {"start": 0, "step": 1}, "packets": good}
  with pytest.raises(ValueError):  # 2 packets for 3 frames
    decode.VideoIndex.from_json(index)
