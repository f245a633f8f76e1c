"""``taskfold run``: images from one task of an exported package.

    taskfold run PKG --task edit --prompt "make the circle blue" --image in.png
                     [--negative-prompt TEXT] [--num-images N] [--height H --width W]
                     [--mask mask.png] [--steps N] [--scheduler ddim|euler|...] [--seed 0] [--strength S]
                     [--guidance S] [--image-guidance S] [--backend onnx|coreml|tensorrt]
                     [--provider cpu|cuda] [--resize] [--no-verify] [--threads N] [--quiet]
                     --out out.png|.jpg|.jpeg|.webp [--overwrite]

Every check that needs no model (output paths, options the task does not use, inputs, backend)
runs before any sampling; each image is written through a temp file and a rename. With
``--num-images N`` (N > 1) the images are ``OUT_0.png`` .. ``OUT_{N-1}.png`` beside ``--out``'s
name (:func:`output_paths`), in the order :meth:`Package.generate` makes them. On a terminal a
progress bar of the sampling steps is drawn on stderr (not when stderr is piped or redirected, nor
with ``--quiet``). With the ONNX backend the command imports numpy, onnxruntime and Pillow only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


class _Once(argparse.Action):
    """A value option that may be given once: a second one is refused instead of replacing the first."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            raise argparse.ArgumentError(self, f"given twice ({getattr(namespace, self.dest)!r} and {values!r}); "
                                               "give it once (quote a prompt with spaces)")
        setattr(namespace, self.dest, values)


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    from .backends import BACKENDS, PROVIDERS
    from .schedulers import SCHEDULERS

    p = subparsers.add_parser("run", help="generate images with one task of an exported package",
                              description="Run one task of a package from `taskfold export` (ONNX Runtime by "
                                          "default; numpy, onnxruntime and Pillow only).")
    p.add_argument("package", help="package directory written by `taskfold export`")
    p.add_argument("--task", required=True, action=_Once, help="task to run (see the package's manifest.json)")
    p.add_argument("--prompt", action=_Once, help="text prompt or instruction (default: empty)")
    p.add_argument("--negative-prompt", action=_Once,
                   help="what classifier-free guidance steers away from: read instead of the empty prompt by the "
                        "unconditional evaluations (text-guided and dual-guided tasks)")
    p.add_argument("--num-images", type=int, default=1,
                   help="images of the prompt, one noise draw for all (default 1); N > 1 writes OUT_0 .. OUT_{N-1}")
    p.add_argument("--height", type=int, help="image height in pixels (default: the package's; another size needs "
                                              "a package exported with --dynamic)")
    p.add_argument("--width", type=int, help="image width in pixels (default: the package's)")
    p.add_argument("--image", action=_Once, help="condition image (edit, sr, inpaint); sr also takes the half-size image")
    p.add_argument("--mask", action=_Once, help="mask for inpaint-mask: white (>=128) = region to fill")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line (errors and warnings "
                                                        "still print)")
    p.add_argument("--out", required=True, action=_Once, help="output image: .png, .jpg/.jpeg (quality 95) or .webp "
                                                              "(lossless)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_run)
    return p


def output_paths(out: str | Path, n: int) -> list[Path]:
    """The files ``run`` writes: ``out`` itself for one image; ``<stem>_<i><suffix>`` beside it for ``n`` > 1."""
    out = Path(out)
    return [out] if n == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def _cmd_run(args) -> int:
    from taskfold._io import check_output_file
    from taskfold.config import check_finite, check_seed, check_threads
    from taskfold.errors import ConfigError, printable

    from .images import output_format
    from .package import open_package
    from .progress import ProgressBar
    from .sampler import check_images_per_prompt

    output_format(args.out, "--out")
    n = check_images_per_prompt(args.num_images)
    outs = output_paths(args.out, n)
    for out in outs:
        check_output_file(out, args.overwrite)  # no link, no folder, an existing parent: before any generation
    prompt = check_text(args.prompt or "", "--prompt")
    negative = check_text(args.negative_prompt, "--negative-prompt") if args.negative_prompt is not None else None
    check_seed(args.seed)
    check_threads(args.threads)
    check_finite(args.guidance, "--guidance")
    check_finite(args.image_guidance, "--image-guidance")
    check_finite(args.strength, "--strength")
    pkg = open_package(args.package, backend=args.backend, provider=args.provider, verify=not args.no_verify,
                       threads=args.threads)
    given = {"steps": args.steps, "strength": args.strength, "guidance_scale": args.guidance,
             "image_guidance_scale": args.image_guidance}
    used = pkg.sampling(args.task, **given)
    unused = [FLAGS[k] for k, v in given.items() if v is not None and used[k] is None]
    if unused:
        spec = pkg.spec(args.task)
        raise ConfigError(f"task {args.task!r} does not use {', '.join(unused)} (its input is {list(spec.inputs)}, "
                          f"guidance {spec.guidance!r})", hint=f"drop {', '.join(unused)}")
    height, width = pkg.output_size(args.task, args.height, args.width)
    start = time.perf_counter()
    images = pkg.generate(args.task, prompt, image=args.image, mask=args.mask, steps=used["steps"],
                          scheduler=args.scheduler, guidance_scale=used["guidance_scale"],
                          image_guidance_scale=used["image_guidance_scale"], seed=args.seed, resize=args.resize,
                          strength=used["strength"], negative_prompt=negative, num_images_per_prompt=n,
                          height=height, width=width,
                          progress=ProgressBar(args.task, enabled=False if args.quiet else None))
    for image, out in zip(images, outs, strict=True):
        pkg.save(image, out, overwrite=args.overwrite)
    for warning in pkg.prompt_warnings(args.task, prompt):  # after the inputs passed their checks
        print(printable(f"warning: {warning}"), file=sys.stderr)
    if not args.quiet:
        what = str(outs[0]) if n == 1 else f"{outs[0]} .. {outs[-1].name}"
        print(printable(f"wrote {what} ({width}x{height}, task {args.task}, {_settings(used, given)}, "
                        f"{args.scheduler}, {args.backend}/{args.provider}, {time.perf_counter() - start:.2f} s)"))
    return 0


#: the command-line flag of each sampling setting
FLAGS = {"steps": "--steps", "strength": "--strength", "guidance_scale": "--guidance",
         "image_guidance_scale": "--image-guidance"}


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


def _settings(used: dict, given: dict) -> str:
    """What the run used, each value marked ``*`` where it came from the package rather than the command line
    (and the legend only when something is marked)."""
    names = {"steps": "steps", "strength": "strength", "guidance_scale": "guidance",
             "image_guidance_scale": "image guidance"}
    parts = [f"{names[k]} {v:g}" + ("" if given[k] is not None else "*") for k, v in used.items() if v is not None]
    starred = any(p.endswith("*") for p in parts)
    return ", ".join(parts) + (" (* = package default)" if starred else "")
