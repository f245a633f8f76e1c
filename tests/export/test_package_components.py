"""Text encoder, tokenizer, codec and noise schedule: exported once per package, next to the task graphs."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from taskfold.cli import main
from taskfold.export.package import ExportConfig, export_package, verify_package
from taskfold.train.shapes import shapes_world_prompts
from taskfold.upcycle import build_unet, preset_config

from .._standins import save_random_clip, save_random_vae


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def sd_like_pipeline(tmp_path_factory):
    """An SD1.5-layout pipeline folder (narrow UNet, random CLIP and VAE), all built offline."""
    root = tmp_path_factory.mktemp("pipe") / "sd15-narrow"
    unet = build_unet(preset_config("sd15-narrow"), seed=0)
    unet.save_pretrained(root / "unet")
    save_random_clip(root, shapes_world_prompts(), hidden=32)
    save_random_vae(root, block_out_channels=(8, 16, 16, 16), latent_channels=4)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return root


def test_sd_layout_package_has_clip_vae_and_tokenizer(sd_like_pipeline, tmp_path):
    assert main(["upcycle", "--base", str(sd_like_pipeline), "--tasks", "t2i,edit", "--out", str(tmp_path / "mtu")]) == 0
    manifest = export_package(tmp_path / "mtu", ExportConfig(height=128, width=128, parity_timesteps=2),
                              tmp_path / "pkg", log=_quiet)
    te, codec = manifest["text_encoder"], manifest["codec"]
    assert te["kind"] == "clip" and te["graph"]["parity"]["status"] == "passed"
    assert te["graph"]["parity"]["relative_error"] < 1e-5 and manifest["sample"]["text_len"] == te["max_length"]
    assert codec["kind"] == "vae" and codec["scale_factor"] == 8 and manifest["sample"]["height"] == 16
    assert sorted(codec["graphs"]) == ["vae_decoder", "vae_encoder"]
    for g in codec["graphs"].values():
        assert g["parity"]["status"] == "passed"
    assert manifest["scheduler"]["beta_schedule"] == "scaled_linear"
    files = set(manifest["files"])
    assert {"text_encoder/text_encoder.onnx", "codec/vae_encoder.onnx", "codec/vae_decoder.onnx"} <= files
    # the decoder graph turns the t2i graph's latents into an image of the declared size
    dec = ort.InferenceSession(str(tmp_path / "pkg/codec/vae_decoder.onnx"))
    img = dec.run(None, {dec.get_inputs()[0].name: np.zeros((1, 4, 16, 16), np.float32)})[0]
    assert img.shape == (1, 3, 128, 128)
    assert verify_package(tmp_path / "pkg") == []
    # the exporting machine's paths stay on it: sources are names
    strings = []

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                strings.append(str(k))
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str):
            strings.append(v)
    on_disk = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    walk(on_disk)
    leaks = [x for x in strings if str(tmp_path) in x or str(sd_like_pipeline.parent) in x or x.startswith("/")]
    assert leaks == []
    assert on_disk["model"]["base"]["source"] == "sd15-narrow" and te["source"] == "sd15-narrow"


def test_text_len_conflict_is_refused(sd_like_pipeline, tmp_path, capsys):
    assert main(["upcycle", "--base", str(sd_like_pipeline), "--tasks", "t2i", "--out", str(tmp_path / "mtu")]) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "mtu"), "--text-len", "5", "--out", str(tmp_path / "pkg")]) == 2
    err = capsys.readouterr().err
    assert "--text-len 5 differs from the model's text encoder" in err and not (tmp_path / "pkg").exists()
