"""The ``taskfold`` command: parse arguments, build a typed config, make one library call.

Errors a user can cause are raised by the library as ``TaskfoldError``; ``main`` prints
them as one ``error: ...`` line (with a hint) and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import from_args, option
from .errors import TOOLCHAIN_MODULES, TaskfoldError, printable

#: The arguments, by name in every command that has them, that name files or folders the user gave. A
#: command's ``--out`` may not be, contain or lie inside any of them (nor be or contain the current folder).
INPUT_ARGS = ("base", "model", "finetuned", "data", "package", "config", "sampling", "image", "mask")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# --- upcycle -----------------------------------------------------------------------------

UPCYCLE_FIELDS = ("tasks", "num_experts", "expert_width", "top_k", "router_hidden", "task_embedding_dim", "norm_mode",
                  "blocks", "dtr", "dtr_alpha", "dtr_beta", "seed")


def _add_upcycle(sub):
    from .upcycle.config import UpcycleConfig as U

    p = sub.add_parser("upcycle", help="turn a base UNet into a multi-task (MTU/DTR) model",
                       description="Split every FFN into N experts with a task router, add per-task norms "
                                   "and conv_in (MTU), optionally DTR channel masks; save config.json + "
                                   "model.safetensors.")
    p.add_argument("--base", required=True,
                   help="diffusers pipeline/UNet folder, single-file .safetensors, or preset:NAME "
                        "(tiny, sd15, sd21, sdxl, sd15-narrow, sd21-narrow, sdxl-narrow)")
    option(p, U, "seed", help="seed for preset weights and router init")
    p.add_argument("--config", help="JSON file with UpcycleConfig fields (e.g. custom_tasks); flags override it")
    option(p, U, "tasks", help="comma-separated tasks", unset=True)
    option(p, U, "num_experts", "--experts", help="experts per FFN layer, N", unset=True)
    option(p, U, "expert_width", help="hidden width of one expert (unset: FFN width / N)", unset=True)
    option(p, U, "top_k", help="route each task to its k best experts (unset: all)", unset=True)
    option(p, U, "router_hidden", help="router MLP hidden size", unset=True)
    option(p, U, "task_embedding_dim", "--task-dim", help="task embedding size", unset=True)
    option(p, U, "norm_mode", "--norms", choices=["task", "task-expert"], unset=True,
           help="task norms per task or per (task, expert)")
    option(p, U, "blocks", help="fnmatch patterns of transformer blocks to upcycle", unset=True)
    option(p, U, "dtr", action="store_true", help="add Denoising Task Routing masks", unset=True)
    option(p, U, "dtr_alpha", help="DTR window shift exponent", unset=True)
    option(p, U, "dtr_beta", help="DTR active channel ratio", unset=True)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_cmd_upcycle)


def _upcycle_config(args):
    from .upcycle.config import UpcycleConfig

    if args.norm_mode:
        args.norm_mode = args.norm_mode.replace("-", "_")
    given = {n: getattr(args, n) for n in UPCYCLE_FIELDS if getattr(args, n) is not None}
    if args.config:
        return UpcycleConfig.from_json_file(args.config, **given)
    return UpcycleConfig.from_dict(given)


def _cmd_upcycle(args) -> int:
    from .upcycle.convert import upcycle_to_dir

    report = upcycle_to_dir(args.base, _upcycle_config(args), args.out, seed=args.seed, overwrite=args.overwrite,
                            asked_dtr={"dtr": args.dtr, "dtr_alpha": args.dtr_alpha, "dtr_beta": args.dtr_beta})
    cfg = report.config
    if report.inherited_dtr:
        print(f"base trained with DTR {report.inherited_dtr}: the upcycled model keeps its masks")
    if report.identity_task:
        print(f"identity check ({report.identity_task} vs base, random input): max abs error "
              f"{report.identity_error:.2e} (output scale {report.output_scale:.2f})")
    else:
        print("identity check: skipped (DTR or top-k change the function at initialisation, "
              "or no task takes the base's input channels)")
    print(f"wrote {args.out}: {len(cfg.tasks)} tasks ({', '.join(cfg.tasks)}), "
          f"{report.layers} FFN layers x {cfg.num_experts} experts" + (", DTR" if cfg.dtr else ""))
    return 0


# --- inspect -----------------------------------------------------------------------------

def _add_inspect(sub):
    p = sub.add_parser("inspect", help="print tasks, experts, parameter counts and router weights")
    p.add_argument("model", help="MTU model directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--heatmap", metavar="PNG", help="also draw each task's router weights per layer (paper Fig. 5)")
    p.add_argument("--quiet", action="store_true", help="print one summary line instead of the whole summary")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args) -> int:
    from .upcycle.checkpoint import load_mtu
    from .upcycle.inspect import format_summary, router_heatmap, summarize

    if args.heatmap and not args.heatmap.lower().endswith(".png"):
        from .errors import ConfigError

        raise ConfigError(f"--heatmap {args.heatmap!r} must end in .png")
    summary = summarize(load_mtu(args.model))
    if args.quiet:
        print(f"{args.model}: {len(summary['tasks'])} tasks, {summary['upcycled_layers']} upcycled FFN layers, "
              f"{summary['parameters']['total']:,} parameters")
    else:
        print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if args.heatmap:
        router_heatmap(summary, args.heatmap)
        if not args.json:
            print(f"wrote {args.heatmap}")
    return 0


# --- analyze-deviation -------------------------------------------------------------------

def _add_deviation(sub):
    p = sub.add_parser("analyze-deviation", help="per-block weight deviation of fine-tuned UNets (paper Fig. 2)")
    p.add_argument("base", help="base UNet (folder, .safetensors or preset:NAME)")
    p.add_argument("finetuned", nargs="+", help="one or more fine-tuned UNets of the same architecture")
    p.add_argument("--out", required=True, help="output directory for deviation.json and deviation.png")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_deviation)


def _cmd_deviation(args) -> int:
    from ._io import check_output_dir
    from .upcycle.deviation import analyze_deviation

    check_output_dir(args.out, args.overwrite)
    table = analyze_deviation(args.base, args.finetuned, args.out, overwrite=args.overwrite)
    ranks = ", ".join(f"{c} {r:.1f}" for c, r in table["mean_rank_per_component"].items())
    print(f"mean deviation rank per component (of {len(table['rows'])}): {ranks}")
    print(f"wrote {args.out}/deviation.json and {args.out}/deviation.png")
    return 0


# --- train ---------------------------------------------------------------------------------

def _name_numbers(what: str):
    """An argparse type for ``NAME=NUMBER,...`` (task weights, learning-rate factors)."""
    def parse(value: str) -> dict:
        out = {}
        for item in _csv(value):
            name, sep, w = item.partition("=")
            try:
                out[name] = float(w)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{what} {item!r} is not NAME=NUMBER") from None
            if not sep:
                raise argparse.ArgumentTypeError(f"{what} {item!r} is not NAME=NUMBER")
        return out
    return parse


TRAIN_FIELDS = ("steps", "batch_size", "optimizer", "lr", "lr_schedule", "lr_warmup", "lr_scale", "weight_decay",
                "task_weights", "grad_accum", "mixed_precision", "prompt_dropout", "image_dropout", "trainable", "train_text_encoder",
                "noise_schedule", "snr_gamma", "x0_weight_cap", "checkpoint_every", "log_every", "seed")


def _add_train(sub):
    from .train.config import TrainConfig as T

    p = sub.add_parser("train", help="fine-tune an MTU model on several tasks at once (CPU or accelerate launch)",
                       description="Multi-task fine-tuning (paper Eq. 2). Runs as is on one CPU, or under "
                                   "`accelerate launch` on several processes/GPUs.")
    p.add_argument("model", help="MTU model directory (from `taskfold upcycle`)")
    p.add_argument("--data", required=True, help="dataset folder with metadata.jsonl (see `taskfold data check`)")
    p.add_argument("--steps", type=int, required=True, help="optimiser steps")
    p.add_argument("--out", required=True, help="run directory: checkpoints/, log.jsonl, mtu/ (the trained model)")
    p.add_argument("--preset", choices=["sd15", "sdxl"], help="optimiser preset: sd15 = Adam 1e-4, sdxl = AdamW 5e-5 wd 0.01")
    option(p, T, "batch_size", help="samples per process per micro-step", unset=True)
    option(p, T, "optimizer", choices=["adam", "adamw"], help="optimiser", unset=True)
    option(p, T, "lr", help="learning rate", unset=True)
    option(p, T, "lr_schedule", choices=["constant", "cosine"], unset=True,
           help="constant, or cosine: from --lr down to 0 at --steps (after the warm-up)")
    option(p, T, "lr_warmup", help="steps of linear warm-up from 0 to --lr", unset=True)
    option(p, T, "lr_scale", type=_name_numbers("learning-rate factor"), unset=True,
           help="learning-rate factor per component, e.g. task_conv_in=10 (components: experts, routers, "
                "task_embedding, task_norms, task_conv_in, backbone, text_encoder; unset: 1)")
    option(p, T, "weight_decay", help="weight decay", unset=True)
    option(p, T, "task_weights", type=_name_numbers("task weight"), unset=True,
           help="task sampling weights, e.g. t2i=1,edit=2 (unset: equal)")
    option(p, T, "grad_accum", help="micro-steps per optimiser step", unset=True)
    option(p, T, "mixed_precision", choices=["no", "fp16", "bf16"], help="autocast precision", unset=True)
    option(p, T, "prompt_dropout", help="probability of dropping the prompt", unset=True)
    option(p, T, "image_dropout", help="probability of dropping the condition image(s)", unset=True)
    option(p, T, "trainable", choices=["mtu", "all"], help="MTU components only, or everything", unset=True)
    option(p, T, "train_text_encoder", action="store_true", help="also train the text encoder", unset=True)
    option(p, T, "noise_schedule", choices=["sd", "ddpm"], unset=True,
           help="sd = scaled_linear, ddpm = linear (unset: the model's own, else sd)")
    option(p, T, "snr_gamma", help="Min-SNR-gamma loss weighting, e.g. 5 (unset: plain MSE)", unset=True)
    option(p, T, "x0_weight_cap", unset=True,
           help="at high noise weigh the clean-image error at least like the noise error, the weight capped "
                "here, e.g. 100 (truncated-SNR weighting; unset: off)")
    option(p, T, "checkpoint_every", help="steps between checkpoints", unset=True)
    option(p, T, "log_every", help="steps between log.jsonl records", unset=True)
    option(p, T, "seed", help="seed of the batch plan and the fresh text encoder", unset=True)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--skip-bad-rows", action="store_true", help="train on the good rows of a dataset with bad ones")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train, left_behind=lambda args: _run_left_behind(args.out))


def _run_left_behind(out: str) -> str:
    """What an interrupted training run keeps (its checkpoints stay, for --resume)."""
    from .train.trainer import left_behind

    return left_behind(out)


def _cmd_train(args) -> int:
    from .train.trainer import TrainConfig, train

    cfg = TrainConfig.with_preset(args.preset, **{n: getattr(args, n) for n in TRAIN_FIELDS})
    train(args.model, args.data, cfg, args.out, resume=args.resume, skip_bad_rows=args.skip_bad_rows,
          progress=not args.no_progress)
    return 0


def _add_pretrain(sub):
    p = sub.add_parser("pretrain", help="train a small pixel-space text-to-image base from scratch (DTR on)",
                       description="Train a preset UNet and the project's tiny text encoder from scratch on the t2i "
                                   "rows of a dataset, with Denoising Task Routing by default; write OUT/base, a "
                                   "folder `taskfold upcycle --base` reads.")
    p.add_argument("--data", required=True, help="dataset folder (t2i rows are used)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", required=True, help="run directory; the base is written to OUT/base")
    p.add_argument("--preset", default="tiny-pixel", help="UNet architecture preset (default tiny-pixel)")
    p.add_argument("--no-dtr", action="store_true", help="train without DTR masks")
    p.add_argument("--dtr-alpha", type=float, default=4.0)
    p.add_argument("--dtr-beta", type=float, default=0.8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--noise-schedule", choices=["sd", "ddpm"], default="ddpm",
                   help="ddpm = linear 1e-4..0.02 (default: near-zero terminal SNR, right for pixel space); "
                        "sd = scaled_linear 0.00085..0.012 (latent SD's)")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_pretrain, left_behind=lambda args: _run_left_behind(os.path.join(args.out, "run")))


def _cmd_pretrain(args) -> int:
    from .train.pretrain import pretrain, pretrain_config

    cfg = pretrain_config(args.steps, args.batch_size, args.lr, args.noise_schedule, args.checkpoint_every,
                          args.log_every, args.seed)
    pretrain(args.data, cfg, args.out, preset=args.preset, dtr=not args.no_dtr, dtr_alpha=args.dtr_alpha,
             dtr_beta=args.dtr_beta, seed=args.seed, resume=args.resume, overwrite=args.overwrite,
             progress=not args.no_progress)
    return 0


# --- export / verify ---------------------------------------------------------------------

EXPORT_FIELDS = ("formats", "layout", "tasks", "precision", "batch", "height", "width", "text_len", "dynamic", "opset", "optimize",
                 "ort_mobile", "coreml_precision", "coreml_multifunction", "palettize", "trt_refit", "parity_timesteps")


def _add_export(sub):
    from .export.config import ExportConfig as E

    p = sub.add_parser("export", help="fold each task and export one graph per task into a package",
                       description="Fold every task of an MTU model into a plain UNet and export it (ONNX with "
                                   "the backbone stored once, CoreML, TensorRT, diffusers folders). Every graph "
                                   "must pass the parity gate against the MTU model, or nothing is written.")
    p.add_argument("model", help="MTU model directory (from `taskfold upcycle` or `taskfold train`)")
    option(p, E, "formats", help="comma-separated: onnx, coreml, tensorrt, diffusers")
    option(p, E, "layout", help="ONNX: graphs (one folded graph per task), adapters (one shared graph + a "
                                "task-tensors file per task), or graphs,adapters")
    option(p, E, "tasks", help="tasks to export, or 'all'")
    option(p, E, "precision", choices=["fp32", "fp16"], help="ONNX/TensorRT precision")
    option(p, E, "batch", help="batch size of the graphs")
    option(p, E, "height", help="image height in pixels (unset: as --width, else the UNet's sample size x codec "
                                "scale)")
    option(p, E, "width", help="image width in pixels (unset: as --height)")
    option(p, E, "text_len", help="text tokens of encoder_hidden_states (unset: the model's text encoder's "
                                  "length, else 77)")
    option(p, E, "dynamic", action="store_true", help="dynamic batch, height and width (unset: static)")
    option(p, E, "opset", help="ONNX opset")
    option(p, E, "optimize", action="store_true", help="ONNX Runtime transformer optimiser (UNet fusions)")
    option(p, E, "ort_mobile", action="store_true", help="also write each graph in ONNX Runtime's .ort format")
    option(p, E, "coreml_precision", choices=["fp32", "fp16"], help="CoreML compute precision")
    option(p, E, "coreml_multifunction", action="store_true",
           help="one .mlpackage with a function per task, backbone deduplicated")
    option(p, E, "palettize", metavar="BITS", help="palettize CoreML weights to BITS bits")
    option(p, E, "trt_refit", action="store_true", help="one refittable TensorRT engine plus per-task refits")
    option(p, E, "parity_timesteps", help="timesteps the parity gate checks (+ 1 fractional)")
    p.add_argument("--sampling", metavar="FILE",
                   help="recommended steps/strength/guidance per task for the manifest (a taskfold-sampling JSON; "
                        "default: the model folder's sampling.json where it has one)")
    p.add_argument("--out", required=True, help="package directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from ._io import check_output_dir
    from .export.package import ExportConfig, export_package

    cfg = from_args(ExportConfig, args, EXPORT_FIELDS)
    check_output_dir(args.out, args.overwrite)
    export_package(args.model, cfg, args.out, overwrite=args.overwrite, sampling=args.sampling)
    return 0


def _add_verify(sub):
    p = sub.add_parser("verify", help="re-hash every file of a package against its manifest")
    p.add_argument("package", help="package directory written by `taskfold export`")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from .errors import PackageError
    from .runtime.reader import PackageReader

    reader = PackageReader(args.package)
    problems = reader.verify_all()
    if problems:
        for p in problems:  # a problem can quote a file name the package chose: escaped, it cannot fake a line
            print(printable(f"{args.package}: {p}"), file=sys.stderr)
        raise PackageError(f"{len(problems)} problem(s) in {args.package!r}: it does not match its manifest",
                           hint="re-export the package or restore the files")
    print(printable(f"ok: {len(reader.files)} files match {args.package}/manifest.json, and they are every file "
                    "its graphs, weight indexes, text encoder and codec refer to"))
    return 0


# --- bench ---------------------------------------------------------------------------------

BENCH_FIELDS = ("package", "preset", "model", "tasks", "experts", "backend", "provider", "precision", "runs", "warmup",
                "height", "width", "batch", "threads", "parity_timesteps", "seed", "keep_graphs")


def _add_bench(sub):
    from .benchmarks.bench import BenchConfig as B
    from .runtime.backends import BACKENDS, PROVIDERS

    p = sub.add_parser("bench", help="measure FLOPs and latency: base UNet vs each folded task graph vs unfolded",
                       description="Time, interleaved in one process, the base UNet graph, every folded task graph, "
                                   "the unfolded multi-task graph and PyTorch eager on the same shapes; count each "
                                   "graph's FLOPs; write report.json, report.md and latency.png.")
    p.add_argument("package", nargs="?", help="package directory from `taskfold export` (or use --preset)")
    option(p, B, "preset", help="upcycle and export a preset with random weights first: sd15, sd21, sdxl, tiny, "
                                "tiny-pixel, sd15-narrow, ...")
    option(p, B, "model", help="with PKG: the MTU directory it was exported from (real weights for the "
                               "reference graphs; unset: random weights of the same architecture)")
    option(p, B, "tasks", help="tasks to time ('all': the package's, or t2i,edit,sr,inpaint for a preset)")
    option(p, B, "experts", help="experts per FFN layer for a preset")
    option(p, B, "backend", choices=list(BACKENDS), help="graphs to time")
    option(p, B, "provider", choices=list(PROVIDERS), help="ONNX Runtime device")
    option(p, B, "precision", choices=["fp32", "fp16"], help="preset export precision (unset: fp32 on cpu, fp16 on "
                                                             "cuda)")
    option(p, B, "runs", help="interleaved rounds")
    option(p, B, "warmup", help="warm-up rounds before timing")
    option(p, B, "height", help="preset image height in pixels (unset: the model's native size)")
    option(p, B, "width", help="preset image width in pixels (unset: as --height)")
    option(p, B, "batch", help="preset batch size")
    p.add_argument("--no-eager", action="store_true", help="skip the PyTorch eager rows")
    p.add_argument("--no-unfolded", action="store_true", help="skip the unfolded multi-task graph")
    option(p, B, "threads", help="ONNX Runtime intra-op threads (unset: one per core)")
    p.add_argument("--no-share-weights", action="store_true",
                   help="each ONNX Runtime session loads (and pre-packs) its own weights")
    option(p, B, "parity_timesteps", help="timesteps of the parity gate (+ 1 fractional)")
    option(p, B, "seed", help="seed of the preset's random weights")
    option(p, B, "keep_graphs", action="store_true", help="keep the exported graphs under OUT/graphs")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    import shlex

    from .benchmarks.bench import BenchConfig, run_bench

    cfg = from_args(BenchConfig, args, BENCH_FIELDS, eager=not args.no_eager, unfolded=not args.no_unfolded,
                    share_weights=not args.no_share_weights)
    command = "taskfold " + " ".join(shlex.quote(a) for a in args.argv)
    run_bench(cfg, args.out, overwrite=args.overwrite, command=command)
    return 0


# --- entry point ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="taskfold", description="Upcycle, fold and export multi-task diffusion UNets.")
    parser.add_argument("--version", action="version", version=f"taskfold {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback behind an error (default: one line and a hint)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_upcycle(sub)
    _add_inspect(sub)
    _add_deviation(sub)
    _add_train(sub)
    _add_pretrain(sub)
    _add_export(sub)
    _add_verify(sub)
    _add_bench(sub)
    from .train.cli_data import add_data_parser

    add_data_parser(sub)
    from .runtime.cli_run import add_run_parser
    from .benchmarks.evaluate import add_evaluate_parser

    add_run_parser(sub)
    from .runtime.serve import add_serve_parser

    add_serve_parser(sub)
    add_evaluate_parser(sub)
    from .demo import add_demo_parser
    from .demo_report import add_report_parser

    add_demo_parser(sub)
    add_report_parser(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The parser of the innermost (sub)command ``args`` was parsed by (``taskfold data make-shapes``: its own)."""
    while True:
        subs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if subs is None or getattr(args, subs.dest, None) not in subs.choices:
            return parser
        parser = subs.choices[getattr(args, subs.dest)]


def _inputs(args) -> list[tuple[str, str]]:
    """``(name, path)`` of what the command was given (:data:`INPUT_ARGS`), the current folder first."""
    pairs = [(".", os.curdir)]
    for name in INPUT_ARGS:
        value = getattr(args, name, None)
        pairs += [(name, v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    return pairs


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub: everything loads from local paths
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")  # read when diffusers is first imported
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the (sub)command's own parser, so the usage shown is that command's
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if "diffusers" in sys.modules:  # already imported (a test, an embedding app): set it directly
            from diffusers.utils import logging as dlogging

            dlogging.set_verbosity_error()
        if getattr(args, "out", None) is not None:  # before any work: never write over what the user gave
            from ._io import check_apart_from_inputs

            check_apart_from_inputs(args.out, _inputs(args))
        return args.func(args)
    except (TaskfoldError, OSError) as e:
        if args.debug:
            import traceback

            traceback.print_exc()
        if isinstance(e, OSError):  # the machine said no: full disk, read-only folder, permission denied
            where = f": {e.filename!r}" if e.filename else ""
            msg, hint = f"{e.strerror or e}{where}", "check free space and permissions of the paths given"
            code = 2
        else:
            msg, hint, code = " ".join(str(e).split()), e.hint, e.exit_code
        print(printable(f"error: {msg}" + (f" (hint: {hint})" if hint else "")), file=sys.stderr)
        return code
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TOOLCHAIN_MODULES:
            raise
        print(f"error: `taskfold {args.command}` needs the toolchain, and {e.name!r} is not installed "
              "(hint: pip install 'taskfold[toolchain]'; a runtime-only install runs `taskfold run` and `verify`)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        left = args.left_behind(args) if hasattr(args, "left_behind") else "no output was left behind"
        print(printable(f"error: interrupted; {left}"), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
