"""``taskfold run``: one image from one task of an exported package.

    taskfold run PKG --task edit --prompt "make the circle blue" --image in.png
                     [--mask mask.png] [--steps N] [--scheduler ddim|euler] [--seed 0] [--strength S]
                     [--guidance S] [--image-guidance S] [--backend onnx|coreml|tensorrt]
                     [--provider cpu|cuda] [--resize] [--no-verify] [--threads N]
                     --out out.png [--overwrite]

Every check that needs no model (output path, task, inputs, backend) runs before any
session is created; the PNG is written through a temp file and a rename. With the ONNX
backend the command imports numpy, onnxruntime and Pillow only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    from .backends import BACKENDS, PROVIDERS
    from .schedulers import SCHEDULERS

    p = subparsers.add_parser("run", help="generate an image with one task of an exported package",
                              description="Run one task of a package from `taskfold export` (ONNX Runtime by "
                                          "default; numpy, onnxruntime and Pillow only).")
    p.add_argument("package", help="package directory written by `taskfold export`")
    p.add_argument("--task", required=True, help="task to run (see the package's manifest.json)")
    p.add_argument("--prompt", default="", help="text prompt or instruction (default: empty)")
    p.add_argument("--image", help="condition image (edit, sr, inpaint); sr also takes the half-size image")
    p.add_argument("--mask", help="mask for inpaint-mask: white (>=128) = region to fill")
    p.add_argument("--steps", type=int, help="sampling steps (default: the package's recommendation for the task)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="ddim", help="sampler (default ddim)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--strength", type=float,
                   help="image tasks: below 1, start from the condition image noised to this fraction of the "
                        "schedule (img2img; only the last steps x strength steps run); 1 = from pure noise "
                        "(default: the package's recommendation for the task)")
    p.add_argument("--guidance", type=float, help="text guidance scale (default: the task's)")
    p.add_argument("--image-guidance", type=float, help="image guidance scale, dual-guidance tasks (default: the task's)")
    p.add_argument("--backend", choices=BACKENDS, default="onnx", help="graphs to run (default onnx)")
    p.add_argument("--provider", choices=list(PROVIDERS), default="cpu", help="ONNX Runtime device (default cpu)")
    p.add_argument("--resize", action="store_true", help="resample inputs of another size (bicubic) instead of refusing")
    p.add_argument("--no-verify", action="store_true", help="skip re-hashing the graph files against the manifest")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_run)
    return p


def _cmd_run(args) -> int:
    from taskfold._io import check_output_file
    from taskfold.config import check_finite, check_seed, check_threads
    from taskfold.errors import ConfigError, printable

    from .package import open_package

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {args.out!r} must end in .png")
    check_output_file(out, args.overwrite)  # no link, no folder, an existing parent: before any generation
    check_text(args.prompt, "--prompt")
    check_seed(args.seed)
    check_threads(args.threads)
    check_finite(args.guidance, "--guidance")
    check_finite(args.image_guidance, "--image-guidance")
    check_finite(args.strength, "--strength")
    pkg = open_package(args.package, backend=args.backend, provider=args.provider, verify=not args.no_verify,
                       threads=args.threads)
    used = pkg.sampling(args.task, steps=args.steps, strength=args.strength, guidance_scale=args.guidance,
                        image_guidance_scale=args.image_guidance)
    start = time.perf_counter()
    images = pkg.generate(args.task, args.prompt, image=args.image, mask=args.mask, steps=used["steps"],
                          scheduler=args.scheduler, guidance_scale=used["guidance_scale"],
                          image_guidance_scale=used["image_guidance_scale"], seed=args.seed, resize=args.resize,
                          strength=used["strength"])
    pkg.save(images[0], out, overwrite=args.overwrite)
    for warning in pkg.prompt_warnings(args.task, args.prompt):  # after the inputs passed their checks
        print(printable(f"warning: {warning}"), file=sys.stderr)
    h, w = pkg.image_size
    print(printable(f"wrote {out} ({w}x{h}, task {args.task}, {_settings(used, args)}, {args.scheduler}, "
                    f"{args.backend}/{args.provider}, {time.perf_counter() - start:.2f} s)"))
    return 0


def check_text(text: str, what: str) -> str:
    """``text`` if it is valid Unicode text: an argument of bytes that are not UTF-8 reaches Python as lone
    surrogates (``surrogateescape``), which no tokenizer can read."""
    from taskfold.errors import ConfigError

    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raw = text[e.start:e.end].encode("utf-8", "surrogateescape")
        raise ConfigError(f"{what} is not valid UTF-8 text: byte(s) {raw.hex(' ')} at character {e.start}",
                          hint=f"give {what} as UTF-8 text") from None
    return text


def _settings(used: dict, args) -> str:
    """What the run used, each value marked where it came from the package rather than the command line."""
    given = {"steps": args.steps, "strength": args.strength, "guidance_scale": args.guidance,
             "image_guidance_scale": args.image_guidance}
    names = {"steps": "steps", "strength": "strength", "guidance_scale": "guidance",
             "image_guidance_scale": "image guidance"}
    parts = [f"{names[k]} {v:g}" + ("" if given[k] is not None else "*") for k, v in used.items() if v is not None]
    return " ".join(parts[:1]) + "".join(", " + p for p in parts[1:]) + " (* = package default)"
