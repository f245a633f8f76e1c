"""``--formats diffusers``: per task a complete pipeline folder that the matching stock diffusers pipeline loads.

=============  ==========================================  ======================================
task           stock pipeline                              image condition it concatenates
=============  ==========================================  ======================================
t2i            ``StableDiffusionPipeline``                 –
edit           ``StableDiffusionInstructPix2PixPipeline``  raw VAE latents (``latent_dist.mode()``)
inpaint        ``StableDiffusionInstructPix2PixPipeline``  the same (object removal shares its layout)
inpaint-mask   ``StableDiffusionInpaintPipeline``          mask + scaled masked-image latents
=============  ==========================================  ======================================

taskfold trains and samples each of these tasks with the convention its pipeline uses
(:attr:`taskfold.tasks.TaskSpec.image_latents`), so a fine-tuned fold behaves the same in the
stock pipeline as in taskfold. A folder holds ``model_index.json``, ``unet/`` (the task's folded
UNet), ``vae/``, ``text_encoder/``, ``tokenizer/`` (the model's own, trained or its base's) and
``scheduler/`` (the base pipeline's scheduler, else DDIM on the model's training schedule);
the safety checker is left out (``requires_safety_checker: false``).

A task no stock pipeline fits (``sr``, declared tasks), a model with DTR masks (stock pipelines
would run it without them), a pixel-space model (no VAE) and SDXL (two text encoders, other
pipeline classes) get the UNet folder alone, and the manifest says why.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from taskfold._io import write_json_atomic

#: task -> the stock pipeline class that runs its folded UNet (SD 1.x / 2.x layouts)
STOCK_PIPELINES = {"t2i": "StableDiffusionPipeline", "edit": "StableDiffusionInstructPix2PixPipeline",
                   "inpaint": "StableDiffusionInstructPix2PixPipeline",
                   "inpaint-mask": "StableDiffusionInpaintPipeline"}


def why_no_pipeline(mtu, task: str, text_encoder, codec) -> str | None:
    """Why ``task`` of ``mtu`` gets no stock pipeline folder (``None``: it does)."""
    from .graph import is_sdxl

    spec = mtu.tasks[mtu.task_index(task)]
    if task not in STOCK_PIPELINES:
        return f"no stock diffusers pipeline takes the {task!r} task's input layout {list(spec.inputs)}"
    if spec.image_latents != {"t2i": spec.image_latents, "edit": "unscaled", "inpaint": "unscaled",
                              "inpaint-mask": "scaled"}[task]:
        return (f"the model was trained with {spec.image_latents} image latents; "
                f"{STOCK_PIPELINES[task]} feeds the other kind (re-train with this taskfold)")
    if mtu.dtr is not None:
        return "a model with Denoising Task Routing masks: stock pipelines would run it without them"
    if is_sdxl(mtu.unet.config):
        return "SDXL pipelines (two text encoders) are not written"
    if codec is None or getattr(codec, "kind", None) != "vae":
        return "a pixel-space model: the stock pipelines need a VAE"
    if text_encoder is None or getattr(text_encoder, "kind", None) != "clip":
        return "the stock pipelines need a CLIP text encoder"
    return None


def write_pipeline(out: Path, task: str, unet, text_encoder, codec, scheduler_config: dict, base_source) -> str:
    """Write the stock pipeline folder of ``task`` into ``out``; returns the pipeline class name."""
    cls = STOCK_PIPELINES[task]
    unet.save_pretrained(out / "unet", safe_serialization=True)
    codec.vae.save_pretrained(str(out / "vae"), safe_serialization=True)
    text_encoder.model.save_pretrained(str(out / "text_encoder"), safe_serialization=True)
    text_encoder.tokenizer.save_pretrained(str(out / "tokenizer"))
    base_scheduler = Path(base_source) / "scheduler" / "scheduler_config.json" if base_source else None
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    if base_scheduler is not None and base_scheduler.is_file():
        shutil.copyfile(base_scheduler, out / "scheduler" / "scheduler_config.json")
        scheduler_class = json.loads(base_scheduler.read_text()).get("_class_name", "DDIMScheduler")
    else:
        scheduler_class = "DDIMScheduler"
        keep = {k: v for k, v in scheduler_config.items() if not k.startswith("_") and k != "source"}
        write_json_atomic(out / "scheduler" / "scheduler_config.json", {"_class_name": scheduler_class} | keep)
    import diffusers

    write_json_atomic(out / "model_index.json", {
        "_class_name": cls, "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", type(text_encoder.model).__name__],
        "tokenizer": ["transformers", type(text_encoder.tokenizer).__name__],
        "scheduler": ["diffusers", scheduler_class],
        "safety_checker": [None, None], "feature_extractor": [None, None], "image_encoder": [None, None],
        "requires_safety_checker": False})
    return cls
