"""A fine-tuned model's pipeline folders run in the stock diffusers pipelines exactly as in taskfold.

A random-weight SD-layout pipeline (narrow UNet, CLIP, VAE) is upcycled, fine-tuned a few steps
(routers, task norms and conv_in move) and exported with ``--formats diffusers,onnx``. For
``t2i``, ``edit`` and ``inpaint-mask`` the stock pipeline loaded offline from the exported folder
gives the image the PyTorch reference sampler and the ONNX runtime give, with the same initial
noise, DDIM steps and guidance. (diffusers' inpainting pipeline samples the masked image's
latent posterior; the test hands it the posterior's mode through the pipeline's own
``masked_image_latents`` argument, as taskfold encodes, so both sides are deterministic.)

The runtime's call options give the stock pipelines' images too: a negative prompt (``t2i`` and the
dual-guided ``edit``), two prompts x two images per prompt, and a package exported with ``--dynamic``
run at 64x128.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from taskfold.cli import main
from taskfold.runtime.noise import noise_source, normal
from taskfold.train.shapes import make_shapes, shapes_world_prompts
from taskfold.upcycle import build_unet, preset_config

from .._standins import save_random_clip, save_random_vae

SIZE = 128
#: max |stock pipeline - taskfold| on images in [0, 1]: both run the same float32 modules; the
#: difference is summation order (the UNet, VAE and guidance, over 4 steps).
TOLERANCE = 2e-4
#: the ONNX runtime against the stock pipeline: graphs agree with the model to ~1e-6 relative per call.
RUNTIME_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("stock")
    pipe = root / "sd15-narrow"
    build_unet(preset_config("sd15-narrow"), seed=0).save_pretrained(pipe / "unet")
    save_random_clip(pipe, shapes_world_prompts(), hidden=32)
    save_random_vae(pipe, block_out_channels=(8, 16, 16, 16), latent_channels=4)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    tasks = "t2i,edit,sr,inpaint-mask"
    make_shapes(root / "data", n=4, size=SIZE, seed=0, tasks=tuple(tasks.split(",")))
    assert main(["upcycle", "--base", str(pipe), "--tasks", tasks, "--experts", "2", "--out", str(root / "mtu")]) == 0
    assert main(["train", str(root / "mtu"), "--data", str(root / "data"), "--steps", "3", "--batch-size", "2",
                 "--lr", "3e-3", "--no-progress", "--out", str(root / "run")]) == 0
    assert main(["export", str(root / "run" / "mtu"), "--formats", "diffusers,onnx", "--height", str(SIZE),
                 "--width", str(SIZE), "--parity-timesteps", "1", "--out", str(root / "pkg")]) == 0
    return root


def _rows(root):
    out = {}
    for line in open(root / "data" / "metadata.jsonl"):
        r = json.loads(line)
        out.setdefault(r["task"], r)
    return out


def _ours(root, task, prompt, condition, mask, noise_seed, guidance, image_guidance):
    from taskfold.train.pipeline import generate, mtu_fn
    from taskfold.upcycle.bundle import find_encoders
    from taskfold.upcycle.checkpoint import load_mtu

    mtu = load_mtu(root / "run" / "mtu").eval()
    te, codec = find_encoders(root / "run" / "mtu", mtu)
    sched = json.loads((root / "pkg" / "diffusers" / task / "scheduler" / "scheduler_config.json").read_text())
    spec = mtu.tasks[mtu.task_index(task)]
    return generate(mtu_fn(mtu, task), spec, [prompt], text_encoder=te, codec=codec, scheduler_config=sched,
                    condition=condition, mask=mask, height=SIZE, width=SIZE, steps=4, seed=noise_seed,
                    guidance_scale=guidance, image_guidance_scale=image_guidance), codec


def test_folders_load_in_their_stock_pipelines_and_say_when_none_fits(exported):
    from diffusers import DiffusionPipeline

    manifest = json.loads((exported / "pkg" / "manifest.json").read_text())
    folders = {g["task"]: g for g in manifest["graphs"] if g["format"] == "diffusers"}
    assert {t: g["pipeline"] for t, g in folders.items()} == {
        "t2i": "StableDiffusionPipeline", "edit": "StableDiffusionInstructPix2PixPipeline", "sr": None,
        "inpaint-mask": "StableDiffusionInpaintPipeline"}
    assert "no stock diffusers pipeline takes the 'sr' task's input layout" in folders["sr"]["note"]
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    for task in ("t2i", "edit", "inpaint-mask"):
        folder = str(exported / "pkg" / "diffusers" / task)
        pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
        assert type(pipe).__name__ == folders[task]["pipeline"]
        assert pipe.unet.config.in_channels == {"t2i": 4, "edit": 8, "inpaint-mask": 9}[task]
        # every weight file loads with no missing, unexpected or mismatched key
        for cls, sub in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae"), (CLIPTextModel, "text_encoder")):
            _, info = cls.from_pretrained(folder, subfolder=sub, local_files_only=True, output_loading_info=True)
            bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
            assert not bad, (task, sub, bad)


@pytest.mark.parametrize("task", ["t2i", "edit", "inpaint-mask"])
def test_stock_pipeline_gives_taskfolds_image(exported, task):
    import diffusers

    from taskfold.runtime import open_package

    row = _rows(exported)[task]
    data = exported / "data"
    cond_img = Image.open(data / row["condition"]).convert("RGB") if "condition" in row else None
    mask_img = Image.open(data / row["mask"]).convert("L") if "mask" in row else None
    cond = np.asarray(cond_img, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1 if cond_img else None
    mask = (np.asarray(mask_img, np.float32)[None, None] >= 128).astype(np.float32) if mask_img else None
    # The stock inpainting pipeline guides by text only, the mask and masked image in both branches:
    # taskfold's two-scale guidance with image guidance 1.
    guidance, image_guidance = (7.5, 1.6) if task == "edit" else (7.5, None) if task == "t2i" else (4.0, 1.0)
    ours, codec = _ours(exported, task, row["prompt"], cond, mask, 5, guidance, image_guidance)
    noise = torch.from_numpy(normal(noise_source(5), (1, 4, SIZE // 8, SIZE // 8)))  # what seed 5 draws
    folder = str(exported / "pkg" / "diffusers" / task)
    kw = dict(num_inference_steps=4, guidance_scale=guidance, latents=noise.clone(), output_type="np")
    if task == "t2i":
        got = diffusers.StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)(row["prompt"], **kw)
    elif task == "edit":
        pipe = diffusers.StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, local_files_only=True)
        got = pipe(row["prompt"], image=cond_img, image_guidance_scale=image_guidance, **kw)
    else:
        pipe = diffusers.StableDiffusionInpaintPipeline.from_pretrained(folder, local_files_only=True)
        with torch.no_grad():
            masked = codec.encode(torch.from_numpy(cond * (1 - mask)))
        got = pipe(row["prompt"], image=cond_img, mask_image=mask_img, masked_image_latents=masked, strength=1.0,
                   height=SIZE, width=SIZE, **kw)
    stock = got.images[0]  # [H, W, 3] in [0, 1]
    mine = (ours[0].transpose(1, 2, 0) + 1) / 2
    assert stock.shape == mine.shape == (SIZE, SIZE, 3)
    assert float(np.abs(stock - mine).max()) < TOLERANCE
    assert float(stock.std()) > 0.01  # an image, not a constant
    pkg = open_package(exported / "pkg")
    runtime = pkg.generate(task, row["prompt"], image=cond[0] if cond is not None else None,
                           mask=mask[0] if mask is not None else None, steps=4, seed=5, guidance_scale=guidance,
                           image_guidance_scale=image_guidance)
    assert float(np.abs((runtime[0].transpose(1, 2, 0) + 1) / 2 - stock).max()) < RUNTIME_TOLERANCE


# --- the call options: negative prompt, several images per prompt, another size -------------------

NEGATIVE = "a blue square"


def _stock(exported, task):
    import diffusers

    folder = str(exported / "pkg" / "diffusers" / task)
    cls = diffusers.StableDiffusionPipeline if task == "t2i" else diffusers.StableDiffusionInstructPix2PixPipeline
    return cls.from_pretrained(folder, local_files_only=True)


def _condition(exported, size=None):
    row = _rows(exported)["edit"]
    im = Image.open(exported / "data" / row["condition"]).convert("RGB")
    im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC) if size else im
    return row["prompt"], im, np.asarray(im, np.float32).transpose(2, 0, 1) / 127.5 - 1


def _compare(stock, runtime):
    """max |stock - runtime| on images in [0, 1], every image of the batch, and that they are images."""
    mine = (runtime.transpose(0, 2, 3, 1) + 1) / 2
    assert stock.shape == mine.shape
    assert float(stock.std()) > 0.01
    return float(np.abs(stock - mine).max())


@pytest.mark.parametrize("task", ["t2i", "edit"])
def test_a_negative_prompt_gives_the_stock_pipelines_image(exported, task):
    """Text CFG's unconditional branch reads the negative prompt; dual guidance's two unconditional branches do,
    as StableDiffusionInstructPix2PixPipeline's do."""
    from taskfold.runtime import open_package

    pkg = open_package(exported / "pkg")
    noise = torch.from_numpy(normal(noise_source(5), (1, 4, SIZE // 8, SIZE // 8)))
    kw = dict(num_inference_steps=4, guidance_scale=7.5, latents=noise.clone(), output_type="np",
              negative_prompt=NEGATIVE)
    if task == "t2i":
        prompt = _rows(exported)["t2i"]["prompt"]
        stock = _stock(exported, task)(prompt, **kw).images
        runtime = pkg.generate(task, prompt, steps=4, seed=5, guidance_scale=7.5, negative_prompt=NEGATIVE)
    else:
        prompt, im, cond = _condition(exported)
        stock = _stock(exported, task)(prompt, image=im, image_guidance_scale=1.6, **kw).images
        runtime = pkg.generate(task, prompt, image=cond, steps=4, seed=5, guidance_scale=7.5,
                               image_guidance_scale=1.6, negative_prompt=NEGATIVE, strength=1.0)
    assert _compare(stock, runtime) < RUNTIME_TOLERANCE
    without = pkg.generate(task, prompt, image=None if task == "t2i" else cond, steps=4, seed=5, guidance_scale=7.5,
                           image_guidance_scale=1.6 if task == "edit" else None, strength=1.0 if task == "edit" else None)
    assert _compare(stock, without) > 10 * RUNTIME_TOLERANCE  # the negative prompt changed the image


def test_several_images_per_prompt_give_the_stock_pipelines_images(exported):
    """Two prompts x two images: rows p, p, q, q from one noise draw of [4, ...] (diffusers' order)."""
    from taskfold.runtime import open_package

    prompts = [_rows(exported)["t2i"]["prompt"], "a green triangle"]
    noise = torch.from_numpy(normal(noise_source(5), (4, 4, SIZE // 8, SIZE // 8)))
    stock = _stock(exported, "t2i")(prompts, num_images_per_prompt=2, num_inference_steps=4, guidance_scale=7.5,
                                    latents=noise.clone(), output_type="np").images
    runtime = open_package(exported / "pkg").generate("t2i", prompts, num_images_per_prompt=2, steps=4, seed=5,
                                                      guidance_scale=7.5)
    assert runtime.shape == (4, 3, SIZE, SIZE)
    assert _compare(stock, runtime) < RUNTIME_TOLERANCE
    assert float(np.abs(stock[0] - stock[1]).max()) > 0.05 and float(np.abs(stock[1] - stock[2]).max()) > 0.05


@pytest.fixture(scope="module")
def dynamic(exported):
    """The fine-tuned model exported again with dynamic batch, height and width (its graphs and its VAE)."""
    out = exported / "pkg-dynamic"
    assert main(["export", str(exported / "run" / "mtu"), "--formats", "onnx", "--tasks", "t2i,edit", "--dynamic",
                 "--height", str(SIZE), "--parity-timesteps", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("task", ["t2i", "edit"])
def test_a_dynamic_package_at_another_size_gives_the_stock_pipelines_image(exported, dynamic, task):
    from taskfold.runtime import open_package

    h, w = SIZE // 2, SIZE  # 64 x 128: another size and another aspect
    pkg = open_package(dynamic)
    assert pkg.image_size == (SIZE, SIZE)
    noise = torch.from_numpy(normal(noise_source(5), (1, 4, h // 8, w // 8)))
    kw = dict(num_inference_steps=4, guidance_scale=7.5, latents=noise.clone(), output_type="np")
    if task == "t2i":
        prompt = _rows(exported)["t2i"]["prompt"]
        stock = _stock(exported, task)(prompt, height=h, width=w, **kw).images
        runtime = pkg.generate(task, prompt, steps=4, seed=5, guidance_scale=7.5, height=h, width=w)
    else:
        prompt, im, cond = _condition(exported, (h, w))
        stock = _stock(exported, task)(prompt, image=im, image_guidance_scale=1.6, **kw).images
        runtime = pkg.generate(task, prompt, image=cond, steps=4, seed=5, guidance_scale=7.5,
                               image_guidance_scale=1.6, height=h, width=w, strength=1.0)
    assert runtime.shape == (1, 3, h, w)
    assert _compare(stock, runtime) < RUNTIME_TOLERANCE
