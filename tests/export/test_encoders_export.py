"""ONNX export of text encoders and codecs: graph signatures, parity with PyTorch, the gate, tokenizer files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from taskfold.errors import ConfigError, ExportError, ParityError
from taskfold.export import encoders as ex
from taskfold.export.onnx import ort_runner
from taskfold.train.shapes import shapes_world_prompts
from taskfold.upcycle.codecs import IdentityCodec, load_codec
from taskfold.upcycle.text_encoders import TinyTextEncoder, build_vocabulary, load_text_encoder

from .._standins import save_random_clip, save_random_vae

PROMPTS = shapes_world_prompts()
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny():
    return TinyTextEncoder(build_vocabulary(PROMPTS), dim=32, max_length=16).eval()


@pytest.fixture(scope="module")
def sd_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd") / "pipe"
    save_random_clip(root, PROMPTS, num_merges=80, max_length=16)
    return save_random_vae(root, block_out_channels=(8, 16))


def _torch_vs_ort(module_out: torch.Tensor, got: np.ndarray) -> float:
    ref = module_out.double().numpy()
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def test_tiny_text_encoder_graph_matches_pytorch(tiny, tmp_path):
    tiny.train()  # the export runs in eval mode and gives the module back as it came
    rec = ex.export_text_encoder_onnx(tiny, tmp_path / "text_encoder.onnx", batch=2, dynamic=True)
    assert tiny.training
    tiny.eval()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text_encoder.onnx"]
    assert rec["file"] == "text_encoder.onnx" and rec["weights"] == [] and rec["opset"] == 17
    assert rec["inputs"] == [{"name": "input_ids", "shape": ["batch", 16], "dtype": "int64"}]
    assert rec["outputs"] == [{"name": "last_hidden_state", "shape": ["batch", 16, 32], "dtype": "float32"}]
    assert rec["encoder"]["kind"] == "tiny" and rec["bytes"] == (tmp_path / "text_encoder.onnx").stat().st_size
    p = rec["parity"]
    assert p["status"] == "passed" and p["checks"] == 6 and p["relative_error"] < 1e-5 and p["tolerance"] == TOL
    # fresh prompts at another batch size, outside the gate
    run = ort_runner(tmp_path / "text_encoder.onnx")
    ids = tiny.tokenize(PROMPTS[:5])
    with torch.no_grad():
        assert _torch_vs_ort(tiny(torch.from_numpy(ids)), run({"input_ids": ids})) < 1e-5


def test_clip_text_encoder_graph_matches_pytorch(sd_pipeline, tmp_path):
    clip = load_text_encoder(sd_pipeline)
    rec = ex.export_text_encoder_onnx(clip, tmp_path / "text_encoder.onnx", batch=2)
    assert rec["inputs"][0]["shape"] == [2, 16] and rec["outputs"][0]["shape"] == [2, 16, 32]
    assert rec["encoder"]["kind"] == "clip" and rec["parity"]["relative_error"] < 1e-5
    run = ort_runner(tmp_path / "text_encoder.onnx")
    ids = clip.tokenize(["a large red circle", "remove the green square"])
    with torch.no_grad():
        assert _torch_vs_ort(clip(torch.from_numpy(ids)), run({"input_ids": ids})) < 1e-5


def test_vae_graphs_match_pytorch(sd_pipeline, tmp_path):
    codec = load_codec(sd_pipeline)
    rec = ex.export_codec_onnx(codec, tmp_path, height=32, width=16, batch=1, dynamic=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae_decoder.onnx", "vae_encoder.onnx"]
    assert rec["kind"] == "vae" and rec["scaling_factor"] == 0.18215 and set(rec["graphs"]) == {"vae_encoder",
                                                                                                 "vae_decoder"}
    enc, dec = rec["graphs"]["vae_encoder"], rec["graphs"]["vae_decoder"]
    assert enc["inputs"] == [{"name": "images", "shape": ["batch", 3, "height", "width"], "dtype": "float32"}]
    assert enc["outputs"] == dec["inputs"] == [{"name": "latents", "dtype": "float32",
                                                "shape": ["batch", 4, "latent_height", "latent_width"]}]
    assert enc["parity"]["checks"] == 2 and enc["parity"]["relative_error"] < 1e-5
    assert dec["parity"]["relative_error"] < 1e-5
    # the encoder graph holds the scaling: its output is codec.encode, at a size not used by the gate
    x = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(5)) * 2 - 1
    z = ort_runner(tmp_path / "vae_encoder.onnx")({"images": x.numpy()})
    with torch.no_grad():
        assert z.shape == (2, 4, 4, 6) and _torch_vs_ort(codec.encode(x), z) < 1e-5
        y = ort_runner(tmp_path / "vae_decoder.onnx")({"latents": z})
        assert y.shape == (2, 3, 8, 12) and _torch_vs_ort(codec.decode(torch.from_numpy(z)), y) < 1e-5


def test_identity_codec_writes_nothing(tmp_path):
    rec = ex.export_codec_onnx(IdentityCodec(), tmp_path / "codec", height=32, width=32, batch=2)
    assert rec == {"kind": "identity", "scale_factor": 1, "latent_channels": 3, "scaling_factor": 1.0,
                   "shift_factor": 0.0, "source": None, "graphs": {}}
    assert not (tmp_path / "codec").exists()


def test_failing_gate_raises_and_writes_nothing(tiny, sd_pipeline, tmp_path, monkeypatch):
    def off_by_a_bit(path):
        run = ort_runner(path)
        return lambda inputs: run(inputs) + 1e-2

    monkeypatch.setattr(ex, "ort_runner", off_by_a_bit)
    with pytest.raises(ParityError, match=r"graph 'text_encoder': relative error \d\.\d\de-03 > tolerance 1e-04"):
        ex.export_text_encoder_onnx(tiny, tmp_path / "te" / "text_encoder.onnx", batch=2)
    with pytest.raises(ParityError, match="graph 'vae_encoder'"):
        ex.export_codec_onnx(load_codec(sd_pipeline), tmp_path / "vae", height=16, width=16, batch=1)
    assert [list(d.iterdir()) for d in (tmp_path / "te", tmp_path / "vae")] == [[], []]


def test_export_argument_errors(tiny, sd_pipeline, tmp_path):
    with pytest.raises(ExportError, match="opset 13 is below the supported minimum 17"):
        ex.export_text_encoder_onnx(tiny, tmp_path / "te.onnx", batch=1, opset=13)
    with pytest.raises(ConfigError, match="must end in .onnx"):
        ex.export_text_encoder_onnx(tiny, tmp_path / "te.bin", batch=1)
    with pytest.raises(ConfigError, match="batch must be a positive integer, got 0"):
        ex.export_text_encoder_onnx(tiny, tmp_path / "te.onnx", batch=0)
    with pytest.raises(ConfigError, match="image size 31x32 is not a positive multiple of the vae codec's scale"):
        ex.export_codec_onnx(load_codec(sd_pipeline), tmp_path, height=31, width=32, batch=1)


def test_export_tokenizer_checks_the_runtime_reader(tiny, sd_pipeline, tmp_path):
    from taskfold.runtime.tokenizers import load_tokenizer

    rec = ex.export_tokenizer(tiny, tmp_path / "tiny", prompts=PROMPTS)
    assert rec == {"kind": "wordlevel", "files": ["tokenizer.json"], "max_length": 16, "pad_id": 0,
                   "checked_prompts": len(PROMPTS)}
    np.testing.assert_array_equal(load_tokenizer(tmp_path / "tiny")(PROMPTS), tiny.tokenize(PROMPTS))
    clip = load_text_encoder(sd_pipeline)
    rec = ex.export_tokenizer(clip, tmp_path / "clip", prompts=PROMPTS)
    assert rec["kind"] == "clip-bpe" and rec["pad_id"] == clip.tokenizer.pad_token_id
    assert set(rec["files"]) <= {p.name for p in (tmp_path / "clip").iterdir()}
    np.testing.assert_array_equal(load_tokenizer(tmp_path / "clip")(PROMPTS), clip.tokenize(PROMPTS))
