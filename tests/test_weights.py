"""Pretrained weights in and out (layerlock_jax.weights) and extract_features.

References are independent of the code under test: HF's own forward pass (live when torch is
installed, else the committed fixture tests/fixtures/hf_videomae_tiny made by make_hf_fixture.py),
and a plain-numpy forward pass of the 4DS backbone written below from its published structure.
"""
import json
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from layerlock_jax import checkpoint
from layerlock_jax import checkpoint_params
from layerlock_jax import config_loading
from layerlock_jax import extract_features as fx
from layerlock_jax import train
from layerlock_jax.weights import WeightsError, fourds, hf_videomae
from layerlock_jax.weights import __main__ as weights_cli
from layerlock_jax.weights import workdir as workdir_lib

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "hf_videomae_tiny")
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
try:
  import torch  # noqa: F401  pylint: disable=unused-import
  import transformers  # noqa: F401  pylint: disable=unused-import
  HAVE_TORCH = True
except ImportError:
  HAVE_TORCH = False


def _fixture_script():
  return config_loading.load_module(os.path.join(os.path.dirname(FIXTURE), "make_hf_fixture.py"))


def rel_err(a, b) -> float:
  return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def fixture_io():
  return dict(np.load(os.path.join(FIXTURE, "io.npz")))


@pytest.fixture(scope="module")
def hf_workdir(tmp_path_factory):
  """The fixture imported through the CLI (one import for every test that reads it)."""
  w = str(tmp_path_factory.mktemp("hf") / "w")
  assert weights_cli.main(["import", "--from=hf_videomae", f"--path={FIXTURE}",
                           f"--workdir={w}"]) == 0
  return w


def features(workdir, clips, tmp_path, **kw):
  np.save(tmp_path / "clips.npy", clips)
  out = str(tmp_path / "f.npy")
  fx.extract(workdir, out, input_path=str(tmp_path / "clips.npy"), batch_size=1,
             progress=False, **kw)
  return np.load(out)


# --- Hugging Face VideoMAE -----------------------------------------------------------------------
def test_hf_import_then_extract_features_matches_hf_last_hidden_state(hf_workdir, fixture_io,
                                                                      tmp_path):
  """uint8 clips -> our features of the last block == HF's last_hidden_state (ImageNet mean/std
  preprocessing) to 1e-4 relative; mean pooling is the mean of those tokens."""
  want = fixture_io["last_hidden_state"]  # (2, 128, 192)
  got = features(hf_workdir, fixture_io["clips"], tmp_path)
  assert got.shape == want.shape
  assert rel_err(got, want) < 1e-4
  pooled = features(hf_workdir, fixture_io["clips"], tmp_path, pool="mean")
  assert rel_err(pooled, want.mean(1)) < 1e-4
  config = workdir_lib.load_config(hf_workdir)
  assert config.model.posemb == "sincos_1d" and not config.model.gelu_approximate
  assert config.model.layer_norm_eps == 1e-12
  assert tuple(config.model.input_std) == hf_videomae.IMAGENET_STD


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TORCH, reason="torch/transformers not installed (the optional "
                    "`torch` extra); the committed fixture test covers the same comparison")
def test_hf_live_model_and_export_load_in_transformers(hf_workdir, fixture_io, tmp_path):
  """A freshly built random HF model matches after import; our export loads with
  VideoMAEModel.from_pretrained and reproduces the fixture's features."""
  import transformers  # pylint: disable=g-import-not-at-top
  mk = _fixture_script()
  model = mk.build_model(seed=1)
  model.save_pretrained(tmp_path / "live", safe_serialization=True)
  clips = mk.clips(seed=1)
  imported = hf_videomae.read(str(tmp_path / "live"))
  config = workdir_lib.config_for(imported)
  from layerlock_jax.models import video_mae  # pylint: disable=g-import-not-at-top
  ours = video_mae.VideoMAE(config).block_outputs(imported.params["embed"],
                                                  [imported.params["encoder"]], clips)[-1]
  assert rel_err(ours, mk.hf_features(model, clips)) < 1e-4

  # Without mean pooling HF adds a final LayerNorm: imported as model.final_norm, and exported back.
  normed = mk.build_model(seed=2, mean_pooling=False)
  normed.save_pretrained(tmp_path / "normed", safe_serialization=True)
  w = str(tmp_path / "normed_w")
  weights_cli.import_weights("hf_videomae", str(tmp_path / "normed"), w)
  assert workdir_lib.load_config(w).model.final_norm
  assert rel_err(features(w, clips, tmp_path), mk.hf_features(normed, clips)) < 1e-4
  weights_cli.export_weights(w, "hf_videomae", str(tmp_path / "normed_out"))
  back = transformers.VideoMAEModel.from_pretrained(str(tmp_path / "normed_out")).eval()
  assert back.layernorm is not None
  assert rel_err(mk.hf_features(back, clips), mk.hf_features(normed, clips)) < 1e-5

  weights_cli.export_weights(hf_workdir, "hf_videomae", str(tmp_path / "exported"))
  reloaded = transformers.VideoMAEModel.from_pretrained(str(tmp_path / "exported")).eval()
  assert rel_err(mk.hf_features(reloaded, fixture_io["clips"]),
                 fixture_io["last_hidden_state"]) < 1e-4


# The VideoMAEConfig fields read by VideoMAEModel (the encoder; decoder_* and initializer_range are
# pretraining / initialisation only).
HF_ENCODER_KEYS = ("model_type", "image_size", "patch_size", "num_channels", "num_frames",
                   "tubelet_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                   "intermediate_size", "hidden_act", "hidden_dropout_prob",
                   "attention_probs_dropout_prob", "layer_norm_eps", "use_mean_pooling",
                   "qv_bias", "qkv_bias")  # the q/v bias flag: transformers 5 / 4 spelling


def test_transformers_parses_our_export_and_its_tensors_match_the_hf_written_fixture(hf_workdir,
                                                                                   tmp_path):
  """HF's own code reads the export (transformers without torch: its config class): every config
  field equals the one HF parses from the fixture HF wrote with save_pretrained, and every tensor
  name, shape and dtype of our model.safetensors equals the fixture's."""
  import transformers  # pylint: disable=g-import-not-at-top
  out = tmp_path / "exported"
  weights_cli.export_weights(hf_workdir, "hf_videomae", str(out))
  ours = transformers.VideoMAEConfig.from_pretrained(str(out)).to_dict()
  hf = transformers.VideoMAEConfig.from_pretrained(FIXTURE).to_dict()
  # Every key that shapes VideoMAEModel's forward is spelled out in our file: an absent one would
  # fall back silently to HF's default, which may differ from the trained model.
  written = json.loads((out / "config.json").read_text())
  with open(os.path.join(FIXTURE, "config.json")) as f:
    hf_written = json.load(f)
  missing = (set(HF_ENCODER_KEYS) & set(hf_written)) - set(written)
  assert not missing and len(set(HF_ENCODER_KEYS) & set(hf_written)) >= 16, missing
  differ = {k: (ours.get(k), v) for k, v in hf.items()
            if k not in ("transformers_version", "dtype") and ours.get(k) != v}
  assert not differ, differ
  assert ours["model_type"] == "videomae" and ours["hidden_size"] == 192

  def layout(path):
    return {name: (tuple(t.shape), t.dtype.str) for name, t in load_file(path).items()}

  mine, theirs = layout(str(out / "model.safetensors")), layout(os.path.join(FIXTURE,
                                                                             "model.safetensors"))
  assert sorted(mine) == sorted(theirs)
  assert {k: v for k, v in mine.items() if theirs[k] != v} == {}
  assert len(theirs) == 4 * 15 + 2  # 4 layers of 15 tensors (no key bias), the patch embedding's 2


def test_hf_final_layernorm_without_mean_pooling(fixture_io, tmp_path):
  """use_mean_pooling=false: HF applies `layernorm` (eps 1e-12) to the last block's output. The
  fixture's encoder plus a random final norm must give numpy's LayerNorm of HF's fixture output."""
  tensors = load_file(os.path.join(FIXTURE, "model.safetensors"))
  rng = np.random.default_rng(5)
  scale, bias = (1 + 0.1 * rng.standard_normal(192)).astype(np.float32), \
      (0.1 * rng.standard_normal(192)).astype(np.float32)
  (tmp_path / "normed").mkdir()
  save_file({**tensors, "layernorm.weight": scale, "layernorm.bias": bias},
            str(tmp_path / "normed" / "model.safetensors"))
  with open(os.path.join(FIXTURE, "config.json")) as f:
    hf = json.load(f)
  (tmp_path / "normed" / "config.json").write_text(json.dumps({**hf, "use_mean_pooling": False}))
  imported = hf_videomae.read(str(tmp_path / "normed"))
  config = workdir_lib.config_for(imported)
  assert config.model.final_norm
  from layerlock_jax.models import video_mae  # pylint: disable=g-import-not-at-top
  model = video_mae.VideoMAE(config)
  last = model.block_outputs(imported.params["embed"], [imported.params["encoder"]],
                             fixture_io["clips"])[-1]
  got = model.encoder_output(imported.params["encoder_norm"], last)
  h = fixture_io["last_hidden_state"].astype(np.float64)
  want = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12) * scale + bias
  assert rel_err(got, want) < 1e-4
  # Export keeps it: the written file has `layernorm` and use_mean_pooling=false, and reads back.
  w = str(tmp_path / "w")
  weights_cli.import_weights("hf_videomae", str(tmp_path / "normed"), w)
  weights_cli.export_weights(w, "hf_videomae", str(tmp_path / "out"))
  written = load_file(str(tmp_path / "out" / "model.safetensors"))
  np.testing.assert_array_equal(written["layernorm.weight"], scale)
  assert not json.loads((tmp_path / "out" / "config.json").read_text())["use_mean_pooling"]


def test_export_then_reimport_is_the_identity(hf_workdir, tmp_path):
  out = str(tmp_path / "hf")
  assert weights_cli.main(["export", f"--workdir={hf_workdir}", "--to=hf_videomae",
                           f"--path={out}"]) == 0
  again = hf_videomae.read(out)
  _, config, params = workdir_lib.load_params(hf_workdir)
  flat_a = jax.tree_util.tree_leaves_with_path({"embed": params["embed"],
                                                "encoder": params["encoder"]})
  flat_b = dict(jax.tree_util.tree_leaves_with_path(again.params))
  assert len(flat_a) == len(flat_b)
  for path, value in flat_a:
    np.testing.assert_array_equal(np.asarray(value), flat_b[path], err_msg=str(path))
  for key, value in again.model.items():
    assert config.model[key] == value, key
  assert again.data == {"num_frames": 16, "image_size": 64}


def test_hf_pretraining_layout_reads_the_same_encoder(tmp_path):
  """VideoMAEForPreTraining / classification files prefix the encoder with 'videomae.' and carry
  decoder / head tensors (ignored); transformers-4 files name the biases q_bias / v_bias."""
  tensors = load_file(os.path.join(FIXTURE, "model.safetensors"))
  renamed = {}
  for k, v in tensors.items():
    k = k.replace("attention.attention.query.bias", "attention.attention.q_bias")
    k = k.replace("attention.attention.value.bias", "attention.attention.v_bias")
    renamed["videomae." + k] = v
  renamed["decoder.head.weight"] = np.zeros((4, 4), np.float32)
  renamed["encoder_to_decoder.weight"] = np.zeros((4, 4), np.float32)
  (tmp_path / "pre").mkdir()
  save_file(renamed, str(tmp_path / "pre" / "model.safetensors"))
  with open(os.path.join(FIXTURE, "config.json")) as f:
    hf = json.load(f)
  hf["architectures"] = ["VideoMAEForPreTraining"]
  hf.pop("qv_bias")
  hf["qkv_bias"] = True
  (tmp_path / "pre" / "config.json").write_text(json.dumps(hf))
  a, b = hf_videomae.read(FIXTURE), hf_videomae.read(str(tmp_path / "pre"))
  for (pa, va), (pb, vb) in zip(jax.tree_util.tree_leaves_with_path(a.params),
                                jax.tree_util.tree_leaves_with_path(b.params)):
    assert pa == pb
    np.testing.assert_array_equal(va, vb)


# --- 4DS -----------------------------------------------------------------------------------------
D, HEADS, MLP, LAYERS, PATCH, FRAMES, SIZE = 64, 4, 128, 3, (2, 8, 8), 8, 32


def make_4ds_npz(path, seed=0, root="params/layers_0/"):
  """Random values in exactly the layout of a released scaling4d_*.npz (a depth readout saved
  next to the backbone under params/layers_2/, as in the depth checkpoint)."""
  rng = np.random.default_rng(seed)
  r = lambda *s: (0.2 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
  grid = (FRAMES // PATCH[0], SIZE // PATCH[1], SIZE // PATCH[2])
  flat = {root + "encoder/patch_embedding/Conv_0/kernel": r(*PATCH, 3, D),
          root + "encoder/patch_embedding/Conv_0/bias": r(D),
          root + "encoder/posenc/embeddings": r(*grid, D),
          "params/layers_2/readout/Dense_0/kernel": r(D, 7)}
  for i in range(LAYERS):
    b = f"{root}processor/layers_{i}/"
    for norm in ("attention_norm", "mlp_norm"):
      flat[b + norm + "/scale"] = 1 + r(D)
      flat[b + norm + "/bias"] = r(D)
    for n in ("query", "key", "value"):
      flat[b + f"attention/{n}/kernel"] = r(D, HEADS, D // HEADS)
      flat[b + f"attention/{n}/bias"] = r(HEADS, D // HEADS)
    flat[b + "attention/out/kernel"] = r(HEADS, D // HEADS, D)
    flat[b + "attention/out/bias"] = r(D)
    flat[b + "mlp/dense_in/kernel"], flat[b + "mlp/dense_in/bias"] = r(D, MLP), r(MLP)
    flat[b + "mlp/dense_out/kernel"], flat[b + "mlp/dense_out/bias"] = r(MLP, D), r(D)
  np.savez(path, **flat)
  return flat


def numpy_4ds_forward(flat, video_uint8, root="params/layers_0/"):
  """The 4DS backbone in plain numpy (float64): Conv3d tokenizer (kernel = stride), learned
  (T', h, w, D) table, pre-norm blocks (LayerNorm eps 1e-6, tanh GELU), no final norm."""
  x = video_uint8.astype(np.float64) / 255.0
  b, t, h, w, c = x.shape
  pt, ph, pw = PATCH
  k = flat[root + "encoder/patch_embedding/Conv_0/kernel"]
  tokens = np.zeros((b, t // pt, h // ph, w // pw, D))
  for i in range(t // pt):
    for j in range(h // ph):
      for l in range(w // pw):
        cube = x[:, i * pt:(i + 1) * pt, j * ph:(j + 1) * ph, l * pw:(l + 1) * pw]
        tokens[:, i, j, l] = np.einsum("btyxc,tyxcd->bd", cube, k)
  tokens += flat[root + "encoder/patch_embedding/Conv_0/bias"]
  tokens += flat[root + "encoder/posenc/embeddings"]
  z = tokens.reshape(b, -1, D)

  def ln(v, p):
    mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
    return (v - mu) / np.sqrt(var + 1e-6) * flat[p + "/scale"] + flat[p + "/bias"]

  def gelu_tanh(v):
    return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))

  for i in range(LAYERS):
    p = f"{root}processor/layers_{i}/"
    y = ln(z, p + "attention_norm")
    q, kk, v = (np.einsum("bnd,dhe->bnhe", y, flat[p + f"attention/{n}/kernel"])
                + flat[p + f"attention/{n}/bias"] for n in ("query", "key", "value"))
    logits = np.einsum("bqhe,bkhe->bhqk", q / np.sqrt(D // HEADS), kk)
    att = np.exp(logits - logits.max(-1, keepdims=True))
    att /= att.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhe->bqhe", att, v)
    z = z + np.einsum("bqhe,hed->bqd", o, flat[p + "attention/out/kernel"]) \
        + flat[p + "attention/out/bias"]
    y = ln(z, p + "mlp_norm")
    y = gelu_tanh(y @ flat[p + "mlp/dense_in/kernel"] + flat[p + "mlp/dense_in/bias"])
    z = z + y @ flat[p + "mlp/dense_out/kernel"] + flat[p + "mlp/dense_out/bias"]
  return z


@pytest.fixture(scope="module")
def fourds_workdir(tmp_path_factory):
  base = tmp_path_factory.mktemp("fourds")
  flat = make_4ds_npz(base / "scaling4d_test.npz")
  w = str(base / "w")
  assert weights_cli.main(["import", "--from=4ds_npz", f"--path={base / 'scaling4d_test.npz'}",
                           f"--workdir={w}"]) == 0
  return w, flat


def test_4ds_import_matches_numpy_reference(fourds_workdir, tmp_path):
  w, flat = fourds_workdir
  clips = np.random.default_rng(3).integers(0, 256, (3, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
  want = numpy_4ds_forward(flat, clips)
  got = features(w, clips, tmp_path)
  assert rel_err(got, want) < 1e-4
  # Batches split over the 8 test devices give what one device gives.
  np.save(tmp_path / "c.npy", clips)
  fx.extract(w, str(tmp_path / "one.npy"), input_path=str(tmp_path / "c.npy"), batch_size=2,
             progress=False, devices=jax.devices()[:1])
  np.testing.assert_allclose(np.load(tmp_path / "one.npy"), got, rtol=1e-5, atol=1e-5)
  every = features(w, clips, tmp_path, block="all", pool="mean")
  assert every.shape == (3, LAYERS + 1, D)
  assert rel_err(every[:, -1], want.mean(1)) < 1e-4
  config = workdir_lib.load_config(w)
  assert (config.model.posemb, config.model.depth, config.model.num_heads) == ("learned_3d", 3, 4)
  # evaluate reads the same parameters (and no optimizer state) with the workdir's config.
  from layerlock_jax import evaluate  # pylint: disable=g-import-not-at-top
  step, params = evaluate.load_checkpoint_params(config, w)
  assert step == 0 and sorted(params) == ["embed", "encoder"]
  np.testing.assert_array_equal(params["embed"]["pos"],
                                flat["params/layers_0/encoder/posenc/embeddings"])


def test_init_from_imported_encoder_and_mismatch(fourds_workdir):
  """init_from an imported encoder: embedding and blocks are the imported ones (with the 4DS query
  decoder, its last blocks become the decoder's), the rest is fresh; a different model is one
  clear line naming the field."""
  w, flat = fourds_workdir
  config = workdir_lib.load_config(w)
  config.model.decoder.type, config.model.decoder.depth = "query", 1
  config.batch_size = 8
  config.mesh.data, config.mesh.fsdp = 1, 8  # FSDP over the 8 test devices: read straight in
  trainer = train.StagePrograms(config)
  spec = trainer.spec_at(0)
  state = checkpoint_params.init_from(w, trainer, spec)
  kernel = state.params["encoder"]["layers"]["mlp1"]["kernel"]
  assert kernel.sharding == trainer.state_shardings(spec).params["encoder"]["layers"]["mlp1"][
      "kernel"] and "fsdp" in str(kernel.sharding.spec)
  root = "params/layers_0/"
  params = {**state.frozen, **state.params}
  np.testing.assert_array_equal(params["embed"]["pos"], flat[root + "encoder/posenc/embeddings"])
  enc, dec = params["encoder"]["layers"], params["decoder"]["blocks"]["layers"]
  assert enc["mlp1"]["kernel"].shape[0] == LAYERS - 1
  np.testing.assert_array_equal(enc["mlp1"]["kernel"][1],
                                flat[root + "processor/layers_1/mlp/dense_in/kernel"])
  np.testing.assert_array_equal(dec["out"]["kernel"][0],
                                flat[root + f"processor/layers_{LAYERS - 1}/attention/out/kernel"])
  assert int(state.step) == 0
  config.model.posemb = "rope"
  with pytest.raises(checkpoint.IncompatibleCheckpointError, match="model.posemb") as err:
    checkpoint_params.init_from(w, train.StagePrograms(config), spec)
  assert "\n" not in str(err.value)


def test_vit4b_init_from_4ds_e_shapes_check_abstractly():
  """configs/vit4b.py:mae takes a 4DS-e encoder: its 52 + 4 query-decoder blocks are the 56 4DS-e
  blocks, with the same width / MLP / heads / tubelet / table (no arrays are built)."""
  from layerlock_jax.weights import layout  # pylint: disable=g-import-not-at-top
  from layerlock_jax.models import video_mae  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  config = config_loading.load_config(os.path.join(CONFIGS, "vit4b.py:mae"))
  m = config.model
  model = {"width": 1792, "depth": 56, "mlp_dim": 15360, "num_heads": 16,
           "patch_size": (2, 16, 16), "posemb": "learned_3d"}
  want = layout.expected_shapes(model, {"num_frames": 16, "image_size": 224})
  ours = jax.eval_shape(lambda: nn.unbox(video_mae.VideoMAE(config).init(jax.random.key(0))))
  assert jax.tree.map(lambda x: x.shape, ours["embed"]) == want["embed"]
  enc = jax.tree.map(lambda x: x.shape, ours["encoder"]["layers"])
  dec = jax.tree.map(lambda x: x.shape, ours["decoder"]["blocks"]["layers"])
  stacked = jax.tree.map(lambda a, b: (a[0] + b[0],) + a[1:], enc, dec,
                         is_leaf=lambda x: isinstance(x, tuple))
  assert stacked == want["encoder"]["layers"]
  assert (m.width, m.mlp_dim, m.num_heads, m.posemb) == (1792, 15360, 16, "learned_3d")


# --- bad input: one clear error, nothing written -------------------------------------------------
def _import_fails(source, path, tmp_path, capsys, match):
  w = tmp_path / "never"
  assert weights_cli.main(["import", f"--from={source}", f"--path={path}",
                           f"--workdir={w}"]) == 2
  err = capsys.readouterr().err
  assert match in err and err.count("\n") == 1, err
  assert not w.exists()


def test_bad_hf_directories(tmp_path, capsys):
  _import_fails("hf_videomae", tmp_path, tmp_path, capsys, "no config.json")
  bad = tmp_path / "vit"
  bad.mkdir()
  (bad / "config.json").write_text(json.dumps({"model_type": "vit"}))
  _import_fails("hf_videomae", bad, tmp_path, capsys, "not a VideoMAE checkpoint")
  with open(os.path.join(FIXTURE, "config.json")) as f:
    hf = json.load(f)
  (bad / "config.json").write_text(json.dumps({**hf, "hidden_act": "relu"}))
  _import_fails("hf_videomae", bad, tmp_path, capsys, "hidden_act='relu' cannot be represented")
  (bad / "config.json").write_text(json.dumps(hf))
  _import_fails("hf_videomae", bad, tmp_path, capsys, "no model.safetensors")
  tensors = load_file(os.path.join(FIXTURE, "model.safetensors"))
  missing = "encoder.layer.2.intermediate.dense.bias"
  save_file({k: v for k, v in tensors.items() if k != missing}, str(bad / "model.safetensors"))
  _import_fails("hf_videomae", bad, tmp_path, capsys, missing)
  save_file(tensors, str(bad / "model.safetensors"))
  (bad / "config.json").write_text(json.dumps({**hf, "use_mean_pooling": False}))
  _import_fails("hf_videomae", bad, tmp_path, capsys, "tensor layernorm.weight is missing")
  (bad / "config.json").write_text(json.dumps(hf))
  tensors["encoder.layer.1.output.dense.weight"] = np.zeros((192, 100), np.float32)
  save_file(tensors, str(bad / "model.safetensors"))
  _import_fails("hf_videomae", bad, tmp_path, capsys,
                "encoder.layer.1.output.dense.weight has shape (192, 100), expected (192, 384)")


def test_bad_4ds_npz(tmp_path, capsys):
  flat = make_4ds_npz(tmp_path / "ok.npz")
  key = "params/layers_0/processor/layers_1/attention/key/bias"
  np.savez(tmp_path / "missing.npz", **{k: v for k, v in flat.items() if k != key})
  _import_fails("4ds_npz", tmp_path / "missing.npz", tmp_path, capsys, key)
  shaped = dict(flat)
  shaped["params/layers_0/processor/layers_2/mlp/dense_out/kernel"] = np.zeros((MLP, D + 1),
                                                                              np.float32)
  np.savez(tmp_path / "shaped.npz", **shaped)
  _import_fails("4ds_npz", tmp_path / "shaped.npz", tmp_path, capsys,
                "layers_2/mlp/dense_out/kernel has shape (128, 65), expected (128, 64)")
  np.savez(tmp_path / "other.npz", weights=np.zeros(3))
  _import_fails("4ds_npz", tmp_path / "other.npz", tmp_path, capsys, "not a 4DS backbone")
  (tmp_path / "text.npz").write_text("hello")
  _import_fails("4ds_npz", tmp_path / "text.npz", tmp_path, capsys, "not a readable npz")


def test_workdir_without_checkpoint_and_unexportable_models(hf_workdir, tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(os.path.join(hf_workdir, "config.json"), empty / "config.json")
  out = tmp_path / "f.npy"
  np.save(tmp_path / "x.npy", np.zeros((1, 16, 64, 64, 3), np.uint8))
  assert fx.main([f"--workdir={empty}", f"--input={tmp_path / 'x.npy'}", f"--output={out}"]) == 2
  assert "no checkpoint" in capsys.readouterr().err
  assert not out.exists() and not (tmp_path / "f.npy.tmp").exists()
  assert weights_cli.main(["export", f"--workdir={empty}", "--to=hf_videomae",
                           f"--path={tmp_path / 'hf'}"]) == 2
  assert "no checkpoint" in capsys.readouterr().err and not (tmp_path / "hf").exists()
  assert fx.main([f"--workdir={tmp_path / 'nowhere'}", f"--input={tmp_path / 'x.npy'}",
                  f"--output={out}"]) == 2
  assert "no config.json" in capsys.readouterr().err
  # Wrong clip shape for the model: refused before anything is read or written.
  np.save(tmp_path / "y.npy", np.zeros((1, 16, 32, 32, 3), np.uint8))
  assert fx.main([f"--workdir={hf_workdir}", f"--input={tmp_path / 'y.npy'}",
                  f"--output={out}"]) == 2
  assert "expected uint8 (N, 16, 64, 64, 3)" in capsys.readouterr().err and not out.exists()
  rope = tmp_path / "rope"
  rope.mkdir()
  config = workdir_lib.load_config(hf_workdir)
  config.model.posemb = "rope"
  train.write_config(config, str(rope))
  assert weights_cli.main(["export", f"--workdir={rope}", "--to=hf_videomae",
                           f"--path={tmp_path / 'hf'}"]) == 2
  assert "RoPE" in capsys.readouterr().err and not (tmp_path / "hf").exists()
  # An existing run is never overwritten by an import.
  assert weights_cli.main(["import", "--from=hf_videomae", f"--path={FIXTURE}",
                           f"--workdir={hf_workdir}"]) == 2
  assert "already holds a run" in capsys.readouterr().err


def test_clis_answer_help():
  for main in (weights_cli.main, fx.main):
    with pytest.raises(SystemExit) as exit_:
      main(["--help"])
    assert exit_.value.code == 0


def _encode(path, frames, rate=25, gop=30):
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path), "w") as c:
    s = c.add_stream("libx264", rate=rate)
    s.height, s.width = frames.shape[1:3]
    s.pix_fmt, s.gop_size = "yuv420p", gop
    for f in frames:
      for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


def test_extract_features_from_a_video_folder(fourds_workdir, tmp_path):
  """--videos: each video's centred evaluation clip (the data pipeline's), rows in the listed file
  order named in F.videos.txt; an unreadable file is skipped, not given a row."""
  from layerlock_jax.data import augment, video_files  # pylint: disable=g-import-not-at-top
  w, _ = fourds_workdir
  rng = np.random.default_rng(0)
  folder = tmp_path / "videos"
  folder.mkdir()
  smooth = lambda n, h, ww: np.clip(  # noqa: E731  (moving gradients, codec-friendly)
      np.linspace(0, 255, ww)[None, None, :, None] + 3 * np.arange(n)[:, None, None, None]
      + rng.integers(0, 20, (1, h, 1, 3)), 0, 255).astype(np.uint8) * np.ones((n, h, ww, 3),
                                                                                np.uint8)
  _encode(folder / "b_long.mp4", smooth(100, 180, 240), gop=100)  # 4 s, one keyframe
  _encode(folder / "a_short.mp4", smooth(20, 40, 56))
  (folder / "c_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
  out = str(tmp_path / "v.npy")
  assert fx.main([f"--workdir={w}", f"--videos={folder}", f"--output={out}", "--pool=mean",
                  "--batch_size=1"]) == 0
  got = np.load(out)
  assert (tmp_path / "v.videos.txt").read_text().split() == ["a_short.mp4", "b_long.mp4"]
  config = workdir_lib.load_config(w)
  source = video_files.VideoFolderSource(str(folder), "train",
                                         augment.spec_from_config(config.data))
  clips = np.stack([source[i]["video"] for i in range(2)])
  assert clips.shape == (2, FRAMES, SIZE, SIZE, 3)
  want = features(w, clips, tmp_path, pool="mean")
  assert got.shape == (2, D) and np.isfinite(got).all()
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_extract_features_uses_short_files(fourds_workdir, tmp_path):
  """AVIs whose containers list more frames than their streams hold (as real corpora do) give
  finite rows of their own, not NaN rows: a short file is not a broken one."""
  import test_short_files  # pylint: disable=g-import-not-at-top  (tests/ is on sys.path)
  w, _ = fourds_workdir
  folder = tmp_path / "videos"
  folder.mkdir()
  for i, (name, n, listed) in enumerate((("a.avi", 20, 28), ("b.avi", 18, 26), ("c.avi", 24, 0))):
    test_short_files.encode(folder / name, test_short_files.frames_for(i, n), "mpeg4")
    if listed:
      test_short_files.list_more_frames(folder / name, listed)
  out = str(tmp_path / "v.npy")
  assert fx.main([f"--workdir={w}", f"--videos={folder}", f"--output={out}", "--pool=mean",
                  "--batch_size=1"]) == 0
  got = np.load(out)
  assert (tmp_path / "v.videos.txt").read_text().split() == ["a.avi", "b.avi", "c.avi"]
  assert got.shape == (3, D) and np.isfinite(got).all()
  assert not np.allclose(got[0], got[1]) and not np.allclose(got[0], got[2])  # rows of their own


@pytest.mark.slow
def test_final_norm_is_trainable_and_gets_a_gradient_from_the_pixel_loss():
  """model.final_norm adds encoder_norm parameters, in the trainable tree, that the pixel loss
  depends on and differentiates (non-zero scale and bias gradients); without the knob the tree has
  no such group."""
  from layerlock_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  from layerlock_jax import train_step  # pylint: disable=g-import-not-at-top
  from layerlock_jax.models import video_mae  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  config = config_loading.load_config(os.path.join(CONFIGS, "tiny.py"))
  config.model.depth, config.model.decoder.depth = 1, 1
  config.data.num_frames, config.data.image_size = 4, 16
  assert "encoder_norm" not in jax.eval_shape(
      lambda: video_mae.VideoMAE(config).init(jax.random.key(0)))
  config.model.final_norm = True
  model = video_mae.VideoMAE(config)
  full = nn.unbox(jax.jit(model.init)(jax.random.key(0)))  # eager init compiles op by op
  spec = state_lib.stage_spec(config, 0, "pixels")
  params, frozen = state_lib.partition(full, spec)
  assert "encoder_norm" in params
  video = np.random.default_rng(0).integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)
  loss = jax.jit(lambda p: train_step.loss_fn(p, frozen, video, jax.random.key(1), 0, model=model,
                                              config=config, spec=spec)[0])
  moved = jax.tree.map(lambda x: x, params)
  moved["encoder_norm"] = {"scale": 3 * params["encoder_norm"]["scale"],
                           "bias": params["encoder_norm"]["bias"] + 1}
  assert float(loss(moved)) != float(loss(params))  # the decoder sees the normed encoder output
  grads = jax.jit(jax.grad(loss))(params)["encoder_norm"]
  assert set(grads) == {"scale", "bias"}
  assert all(np.abs(np.asarray(g)).max() > 0 for g in grads.values())


@pytest.mark.parametrize("field,value,blockwise_on", [
    ("model.input_std", (0.2, 0.0, 0.2), False), ("model.input_mean", (0.5, 0.5), False),
    ("model.final_norm", True, True)])
def test_new_model_knobs_are_validated(field, value, blockwise_on):
  from layerlock_jax import config_validation  # pylint: disable=g-import-not-at-top
  config = config_loading.load_config(os.path.join(CONFIGS, "tiny.py"))
  config.blockwise.enabled = blockwise_on
  config_loading.override(config, {field: value})
  with pytest.raises(config_validation.ConfigError) as err:
    config_validation.validate(config, num_devices=1)
  assert field in config_validation.format_error(err.value)
