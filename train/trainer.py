"""Multi-task fine-tuning (paper 001 section 6, Eq. 2): one loop for a laptop CPU and for many GPUs.

Each optimiser step draws a *global* batch plan from a generator seeded by ``(seed, step)``:
per sample a task (by the task sampling weights), a row of that task, a training
timestep, the noise, and the two condition-dropout coins. Each process takes its slice of
that plan, so the samples of a step do not depend on how many processes share it, and a
resumed run draws exactly what the uninterrupted run drew. A sample's UNet input is
``concat[noisy target latents, encoded condition(s)]`` (the task's layout); the loss is
the mean squared error of the predicted noise (Eq. 2, epsilon prediction).

Condition dropout follows InstructPix2Pix: the prompt (replaced by the empty prompt) and
the condition image(s) (replaced by zeros) are dropped independently, 5 % each by default,
so text, image and dual classifier-free guidance all work at inference.

Samples of different tasks share one forward call: each sample's input channels come
first, zero-padded to the widest task of the batch, and ``MTUNet`` routes each sample by
its task id. Under ``accelerate launch`` the model is wrapped in DistributedDataParallel
(unused task convolutions allowed); on one process it runs as it is.

Checkpoints (``OUT/checkpoints/step-NNNNNNN``) hold the model, the optimiser, the step and
the config; each appears by one rename when complete, and ``--resume`` continues from the
newest one. The final model is written to ``OUT/mtu`` (an MTU directory that
``taskfold export`` reads) together with its text encoder and noise schedule.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskfold._io import atomic_output_dir, check_writable, write_bytes_atomic, write_json_atomic
from taskfold.errors import CheckpointError, ConfigError, OutputExistsError
from taskfold.upcycle.bundle import NOISE_SCHEDULES, find_encoders, find_noise_schedule, find_scheduler_config  # noqa: F401

from taskfold.upcycle.model import component_of

from .config import OPTIMIZER_PRESETS, TrainConfig  # noqa: F401  (the trainer's config; torch-free)

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
LOG = "log.jsonl"
#: Config fields a resumed run may change; every other one shapes the weights.
FREE_ON_RESUME = ("steps", "log_every", "checkpoint_every")


# --- The model being trained ------------------------------------------------------------------

class TrainModule(nn.Module):
    """MTU model + text encoder + codec: ``forward(batch) -> per-sample loss``."""

    def __init__(self, mtu, text_encoder, codec):
        super().__init__()
        self.mtu, self.text_encoder, self.codec = mtu, text_encoder, codec

    def forward(self, sample, timesteps, input_ids, task_ids, noise):
        text = self.text_encoder(input_ids)
        pred = self.mtu(sample, timesteps, text, task_ids)
        return F.mse_loss(pred.float(), noise.float(), reduction="none").flatten(1).mean(1)


def param_groups(module: TrainModule, cfg: TrainConfig) -> list[dict]:
    """The trainable parameters in one optimiser group per learning-rate scale (``cfg.lr_scale``, by
    MTU component; the text encoder is ``text_encoder``), each group's ``scale`` kept beside it."""
    groups: dict[float, list] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        part = component_of(module.mtu, name[len("mtu."):]) if name.startswith("mtu.") else "text_encoder"
        groups.setdefault(float(cfg.lr_scale.get(part, 1.0)), []).append(p)
    return [{"params": ps, "scale": scale} for scale, ps in sorted(groups.items())]


def loss_weights(cfg: TrainConfig, acp: torch.Tensor) -> torch.Tensor | None:
    """Per-timestep weights of the noise-prediction MSE, or ``None`` for the plain mean.

    With ``SNR = alpha_bar / (1 - alpha_bar)``, an error in the clean-image estimate enters the
    noise-prediction MSE multiplied by SNR(t): ``|eps - eps^|^2 = SNR |x0 - x0^|^2``. The plain MSE
    hardly trains the high-noise steps (SNR << 1), where a condition image decides the layout.

    * ``snr_gamma``: Min-SNR-gamma (Hang et al., "Efficient Diffusion Training via Min-SNR Weighting
      Strategy", 2023) for epsilon prediction, ``w(t) = min(SNR, gamma) / SNR``: the low-noise
      steps are capped so the others count relatively more.
    * ``x0_weight_cap``: truncated-SNR weighting (Salimans & Ho, "Progressive Distillation", 2022,
      ``max(SNR, 1) |x0 - x0^|^2``): where SNR < 1 the loss is the clean-image MSE, i.e.
      ``w(t) = max(w(t), 1 / SNR)``, the weight capped at ``x0_weight_cap`` so the last few
      hundred steps (1 / SNR past 10^4 on the linear schedule) do not fill every batch's gradient.
    """
    if cfg.snr_gamma is None and cfg.x0_weight_cap is None:
        return None
    snr = acp / (1 - acp)
    w = torch.clamp(snr, max=cfg.snr_gamma) / snr if cfg.snr_gamma is not None else torch.ones_like(snr)
    if cfg.x0_weight_cap is not None:
        w = torch.maximum(w, torch.clamp(1 / snr, max=cfg.x0_weight_cap))
    return w


def alphas_cumprod(cfg: TrainConfig) -> torch.Tensor:
    s = NOISE_SCHEDULES[cfg.noise_schedule or "sd"]
    T = cfg.num_train_timesteps
    if s["beta_schedule"] == "linear":
        betas = torch.linspace(s["beta_start"], s["beta_end"], T, dtype=torch.float64)
    else:
        betas = torch.linspace(s["beta_start"] ** 0.5, s["beta_end"] ** 0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


# --- The batch plan ---------------------------------------------------------------------------

@dataclass
class Plan:
    """One optimiser step's global samples (every process draws the same plan)."""

    tasks: list[str]
    rows: list[int]
    timesteps: torch.Tensor
    drop_prompt: torch.Tensor
    drop_image: torch.Tensor
    noise_seed: torch.Tensor


def draw_plan(step: int, size: int, cfg: TrainConfig, by_task: dict[str, list[int]]) -> Plan:
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    names = list(by_task)
    w = torch.tensor([float(cfg.task_weights.get(t, 1.0)) for t in names], dtype=torch.float64)
    if not w.sum() > 0:
        raise ConfigError("every task weight is zero")
    pick = torch.multinomial(w, size, replacement=True, generator=g).tolist()
    tasks = [names[i] for i in pick]
    u = torch.rand(size, generator=g, dtype=torch.float64)
    rows = [by_task[t][int(x * len(by_task[t]))] for t, x in zip(tasks, u.tolist())]
    return Plan(tasks, rows, torch.randint(0, cfg.num_train_timesteps, (size,), generator=g),
                torch.rand(size, generator=g) < cfg.prompt_dropout, torch.rand(size, generator=g) < cfg.image_dropout,
                torch.randint(0, 2**62, (size,), generator=g))


def build_inputs(plan: Plan, sel: range, dataset, mtu, codec, tokenize, acp: torch.Tensor, device) -> dict:
    """Model inputs for the plan's samples ``sel`` (one process, one micro-step).

    Each sample's input is ``concat[noisy target, its task's condition parts]``
    (:func:`taskfold.runtime.sampler.condition_parts`, what sampling feeds too), zero-padded to the
    widest task of the batch; a dropped image condition is zeros, a dropped prompt the empty one.
    """
    from taskfold.runtime.sampler import condition_parts

    items = [dataset[plan.rows[i]] for i in sel]
    c = mtu.latent_channels
    width = max(mtu.task_in_channels(plan.tasks[i]) for i in sel)
    with torch.no_grad():
        target = codec.encode(torch.from_numpy(np.stack([it["target"] for it in items])).to(device))
    h, w = target.shape[-2:]
    noise = torch.stack([torch.randn(target.shape[1:], generator=torch.Generator().manual_seed(int(plan.noise_seed[i])))
                         for i in sel]).to(device)
    t = plan.timesteps[list(sel)].to(device)
    a = acp.to(device)[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * target + (1 - a).sqrt() * noise
    sample = torch.zeros(len(items), width, h, w, device=device)
    sample[:, :c] = noisy

    @torch.no_grad()
    def encode(x):
        return codec.encode(torch.from_numpy(x).to(device)).float().cpu().numpy()

    specs = [mtu.tasks[mtu.task_index(plan.tasks[i])] for i in sel]
    for j, (i, it, spec) in enumerate(zip(sel, items, specs)):
        if plan.drop_image[i]:
            continue
        parts = condition_parts(spec, encode, it["condition"][None] if spec.needs_condition else None,
                                it["mask"][None] if spec.needs_mask else None, (h, w), codec.scaling_factor,
                                codec.shift_factor)
        if parts is not None:
            sample[j, c:c + parts.shape[1]] = torch.from_numpy(parts[0]).to(device)
    prompts = ["" if plan.drop_prompt[i] or not spec.uses_text else it["prompt"]
               for i, it, spec in zip(sel, items, specs)]
    return {"sample": sample, "timesteps": t, "input_ids": torch.from_numpy(tokenize(prompts)).to(device),
            "task_ids": torch.tensor([mtu.task_index(plan.tasks[i]) for i in sel], device=device), "noise": noise}


# --- Checkpoints --------------------------------------------------------------------------------

def _checkpoint_dirs(out: Path) -> list[Path]:
    d = out / CHECKPOINTS
    return sorted(p for p in d.glob("step-*") if (p / "state.json").is_file()) if d.is_dir() else []


def save_checkpoint(out: Path, step: int, module: TrainModule, optimizer, cfg: TrainConfig) -> Path:
    from safetensors.torch import save_file

    final = out / CHECKPOINTS / f"step-{step:07d}"
    with atomic_output_dir(final, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                  str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        write_json_atomic(tmp / "state.json", {"step": step, "config": cfg.to_dict()})
    for old in _checkpoint_dirs(out)[:-KEEP_CHECKPOINTS]:
        # hidden first (one rename), then deleted: a kill mid-delete leaves a .step-* that resume removes,
        # never a visible checkpoint with some of its files gone
        gone = old.with_name(f".{old.name}.old")
        old.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)
    return final


def left_behind(out: str | Path) -> str:
    """What an interrupted run leaves in ``out``, in words: its complete checkpoints (kept on purpose, for
    ``--resume``), or the config of a run that wrote none yet, or nothing."""
    out = Path(out)
    ckpts = _checkpoint_dirs(out)
    if ckpts:
        return (f"{out} keeps its newest complete checkpoint{'s' if len(ckpts) > 1 else ''} "
                f"({', '.join(c.name for c in ckpts)}), {LOG} and train_config.json; run the same command with "
                f"--resume to continue from {ckpts[-1].name}")
    if out.exists():
        return f"{out} keeps train_config.json and no checkpoint yet; --resume starts the run again from step 0"
    return "no output was left behind"


def load_checkpoint(path: Path, module: TrainModule, optimizer) -> int:
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    module.load_state_dict(load_file(str(path / "model.safetensors")))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    return int(state["step"])


# --- The loop -------------------------------------------------------------------------------------

@dataclass
class TrainRun:
    """Everything the loop needs, set up (and every refusal made) before anything is written."""

    cfg: TrainConfig
    out: Path
    accel: object
    mtu: nn.Module
    module: TrainModule
    optimizer: torch.optim.Optimizer
    params: list
    data: object
    by_task: dict[str, list[int]]
    tasks: list[str]
    start: int
    log: object
    t0: float = 0.0

    @property
    def main(self) -> bool:
        return self.accel.is_main_process


def train(mtu_dir: str | Path, data_dir: str | Path, cfg: TrainConfig, out: str | Path, resume: bool = False,
          skip_bad_rows: bool = False, log=print, progress: bool = True) -> Path:
    """Fine-tune the MTU model in ``mtu_dir`` on ``data_dir``; returns ``OUT/mtu``.

    A refused run (bad config, dataset or output folder) writes nothing; ``resume`` continues
    from the newest complete checkpoint and cuts ``log.jsonl`` back to it.
    """
    run = prepare_run(mtu_dir, data_dir, cfg, Path(out), resume, skip_bad_rows, log)
    model = run_loop(run, progress)
    final = run.out / "mtu"
    if run.main:
        unwrapped = run.accel.unwrap_model(model)
        _record_trained_words(run)
        save_mtu_run(unwrapped, final, run.cfg)
        log(f"wrote {final} ({run.cfg.steps} steps, {math.ceil(time.time() - run.t0)} s)")
    run.accel.wait_for_everyone()
    return final


def prepare_run(mtu_dir, data_dir, cfg: TrainConfig, out: Path, resume: bool, skip_bad_rows: bool, log) -> TrainRun:
    """Load and check everything; on resume, load the newest checkpoint. Writes only ``train_config.json``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from taskfold.train.data import load_dataset
    from taskfold.upcycle.checkpoint import load_mtu
    from taskfold.upcycle.model import set_trainable

    if out.exists() and any(out.iterdir()) and not resume:
        raise OutputExistsError(f"output directory {str(out)!r} already exists and is not empty",
                                hint="pass --resume to continue its run, or choose another --out")
    check_writable(out)
    # cpu=True without CUDA: under torchrun (accelerate launch --multi_gpu) the processes join a gloo group.
    accel = Accelerator(cpu=not torch.cuda.is_available(), gradient_accumulation_steps=cfg.grad_accum,
                        mixed_precision=cfg.mixed_precision,
                        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = accel.is_main_process
    say = log if main else (lambda *_: None)
    mtu = load_mtu(mtu_dir)
    tasks = list(mtu.task_names)
    cfg.check_tasks(tasks)
    data = load_dataset(data_dir, tasks=mtu.tasks, skip_bad_rows=skip_bad_rows, log=say, split="train")
    by_task = {t: data.indices(t) for t in tasks if data.indices(t)}
    if not by_task:
        raise ConfigError(f"dataset {str(data_dir)!r} has no training rows for the model's tasks {tasks}")
    cfg.check_tasks(list(by_task))  # the tasks with rows must not all weigh zero
    text_encoder, codec = _encoders_for(mtu_dir, mtu, data_dir, cfg, say)
    if main:
        _warn_untrained_words(text_encoder, data, mtu, cfg)
    cfg = _with_noise_schedule(cfg, mtu_dir, mtu, say)
    set_trainable(mtu, cfg.trainable)
    text_encoder.requires_grad_(cfg.train_text_encoder)
    codec.requires_grad_(False)
    module = TrainModule(mtu, text_encoder, codec).train()
    codec.eval()
    params = [p for p in module.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(param_groups(module, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = _resume(out, cfg, module, optimizer, main, say) if resume else 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "train_config.json", cfg.to_dict())
    return TrainRun(cfg, out, accel, mtu, module, optimizer, params, data, by_task, tasks, start, say)


def _encoders_for(mtu_dir, mtu, data_dir, cfg: TrainConfig, say):
    text_encoder, codec = find_encoders(mtu_dir, mtu)
    if text_encoder is None:  # a base without one (presets): the project's tiny encoder, fresh
        text_encoder = new_tiny_text_encoder(mtu, data_dir, cfg.seed)
        say(f"no text encoder with the model or its base: a new tiny one ({text_encoder.vocab_size} tokens, "
            f"{'trained' if cfg.train_text_encoder else 'frozen'})")
    if codec is None:
        raise ConfigError(f"the model takes {mtu.latent_channels}-channel samples but no VAE was found beside it "
                          f"or its base {mtu.base_info.source!r}",
                          hint="upcycle from a pipeline folder with vae/, or train a 3-channel pixel-space model")
    return text_encoder, codec


def _text_rows(data, mtu) -> list[tuple[str, str]]:
    """``(task, prompt)`` of the rows whose task reads its prompt."""
    reads = {t.name for t in mtu.tasks if t.uses_text}
    return [(r.task, r.prompt) for r in data.rows if r.task in reads]


def _warn_untrained_words(text_encoder, data, mtu, cfg: TrainConfig) -> None:
    """On stderr: the rows' words a frozen text encoder never trained on (:mod:`.coverage`)."""
    from .coverage import coverage_warning

    if not cfg.train_text_encoder:
        warning = coverage_warning(getattr(text_encoder, "token_counts", None), _text_rows(data, mtu))
        if warning:
            print(warning, file=sys.stderr)


def _record_trained_words(run: TrainRun) -> None:
    """A trained tiny encoder's record gains the words of the rows it was trained on (one count per row). An
    encoder that came without a record keeps none: what trained it before is unknown."""
    from taskfold.upcycle.text_encoders import count_words

    te = run.module.text_encoder
    if run.cfg.train_text_encoder and getattr(te, "token_counts", None) is not None:
        counts = dict(te.token_counts)
        for word, n in count_words([p for _, p in _text_rows(run.data, run.mtu)]).items():
            counts[word] = counts.get(word, 0) + n
        te.token_counts = counts


def _with_noise_schedule(cfg: TrainConfig, mtu_dir, mtu, say) -> TrainConfig:
    inherited = find_noise_schedule(mtu_dir, mtu)
    if cfg.noise_schedule is None:
        if inherited:
            say(f"noise schedule {inherited!r}: the one the model was trained with")
        return cfg.replace(noise_schedule=inherited or "sd")
    if inherited and cfg.noise_schedule != inherited:
        say(f"warning: training with the {cfg.noise_schedule!r} noise schedule; the model was trained with "
            f"{inherited!r}")
    return cfg


def _resume(out: Path, cfg: TrainConfig, module, optimizer, main: bool, say) -> int:
    """Load the newest complete checkpoint (same config, but for ``FREE_ON_RESUME``); cut the log back to it."""
    if main:  # a run killed while writing leaves a hidden .step-*.partial directory: never a checkpoint
        for partial in (out / CHECKPOINTS).glob(".step-*"):
            shutil.rmtree(partial, ignore_errors=True)
    ckpts = _checkpoint_dirs(out)
    start = 0
    if ckpts:
        saved = TrainConfig.from_dict(json.loads((ckpts[-1] / "state.json").read_text())["config"])
        changed = {k: (getattr(saved, k), getattr(cfg, k)) for k in saved.to_dict()
                   if k not in FREE_ON_RESUME and getattr(saved, k) != getattr(cfg, k)}
        if changed:
            raise CheckpointError(f"--resume with a different config than {str(ckpts[-1])!r} was written with: "
                                  + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()),
                                  hint="resume with the same flags (only --steps and the intervals may change)")
        start = load_checkpoint(ckpts[-1], module, optimizer)
        say(f"resuming from {ckpts[-1]} (step {start})")
    if main:
        cut_log(out / LOG, start)
    return start


def cut_log(path: Path, step: int) -> None:
    """Keep the records of ``log.jsonl`` up to ``step`` (a resumed run writes the later ones again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line half-written when the run was killed
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            keep.append(line)
    write_bytes_atomic(path, "".join(f"{ln}\n" for ln in keep).encode())


def run_loop(run: TrainRun, progress: bool):
    """The optimiser steps from ``run.start`` to ``cfg.steps``: plan, forward, backward, log, checkpoint."""
    cfg, accel = run.cfg, run.accel
    model, optimizer = accel.prepare(run.module, run.optimizer)
    acp = alphas_cumprod(cfg)
    weights = loss_weights(cfg, acp)
    world, rank = accel.num_processes, accel.process_index
    micro = cfg.batch_size
    global_batch = micro * world * cfg.grad_accum
    tokenize = run.module.text_encoder.tokenize
    bar = _progress(cfg, run.start) if run.main and progress else None
    run.t0 = time.time()
    running: dict[str, list[float]] = {}
    for step in range(run.start, cfg.steps):
        plan = draw_plan(step, global_batch, cfg, run.by_task)
        lr = cfg.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("scale", 1.0)
        for a in range(cfg.grad_accum):
            first = (a * world + rank) * micro
            sel = range(first, first + micro)
            batch = build_inputs(plan, sel, run.data, run.mtu, run.module.codec, tokenize, acp, accel.device)
            with accel.accumulate(model):
                losses = model(**batch)  # per-sample MSE, logged as it is
                w = weights.to(losses.device)[batch["timesteps"]] if weights is not None else 1.0
                accel.backward((losses * w).mean())
                if accel.sync_gradients and cfg.max_grad_norm:
                    accel.clip_grad_norm_(run.params, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            for i, loss_i in zip(sel, losses.detach().cpu().tolist()):
                running.setdefault(plan.tasks[i], []).append(loss_i)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            _log_step(run, done, running, global_batch, bar, lr)
            running = {}
        if bar:
            bar.update(1)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            accel.wait_for_everyone()
            if run.main:
                save_checkpoint(run.out, done, accel.unwrap_model(model), optimizer, cfg)
    if bar:
        bar.close()
    accel.wait_for_everyone()
    return model


def _progress(cfg: TrainConfig, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=None)  # None: no bar off a terminal


def _log_step(run: TrainRun, done: int, running: dict[str, list[float]], global_batch: int, bar,
              lr: float) -> None:
    """One ``log.jsonl`` record: the mean loss per task over every process since the last record."""
    accel = run.accel
    local = torch.tensor([[sum(running.get(t, [])), len(running.get(t, []))] for t in run.tasks],
                         dtype=torch.float64, device=accel.device)
    totals = accel.reduce(local, reduction="sum").cpu() if accel.num_processes > 1 else local.cpu()
    if not run.main:
        return
    per_task = {t: float(totals[i, 0] / totals[i, 1]) for i, t in enumerate(run.tasks) if totals[i, 1] > 0}
    rec = {"step": done, "loss": float(totals[:, 0].sum() / max(float(totals[:, 1].sum()), 1.0)),
           "loss_per_task": per_task, "lr": lr, "samples": done * global_batch,
           "seconds": round(time.time() - run.t0, 2)}
    with open(run.out / LOG, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if bar:
        bar.set_postfix({t: f"{v:.3f}" for t, v in per_task.items()})


def save_mtu_run(module: TrainModule, final: Path, cfg: TrainConfig) -> None:
    """The trained MTU directory with its text encoder, codec record and noise schedule."""
    from taskfold.upcycle.checkpoint import save_mtu

    save_mtu(module.mtu.eval(), final, overwrite=True, extra=lambda d: _write_components(d, module, cfg))


def new_tiny_text_encoder(mtu, data_dir, seed: int = 0):
    """The project's tiny text encoder sized for ``mtu``, vocabulary = the dataset's and the shapes world's words."""
    from taskfold.upcycle.text_encoders import TinyTextEncoder, build_vocabulary

    from .data import dataset_prompts
    from .shapes import shapes_world_prompts

    vocab = build_vocabulary(dataset_prompts(data_dir) + shapes_world_prompts())
    encoder = TinyTextEncoder(vocab, dim=int(mtu.unet.config.cross_attention_dim), layers=2,
                              heads=4 if mtu.unet.config.cross_attention_dim % 4 == 0 else 1, max_length=16,
                              seed=seed)
    encoder.token_counts = {}  # nothing trained yet: training records its rows' words
    return encoder


def _write_components(d: Path, module: TrainModule, cfg: TrainConfig) -> None:
    if module.text_encoder.kind == "tiny" or cfg.train_text_encoder:
        module.text_encoder.save_pretrained(d / "text_encoder")
    write_json_atomic(d / "scheduler_config.json", cfg.scheduler_config())
    write_json_atomic(d / "codec.json", module.codec.to_dict())
