"""Tasks: the one definition every stage reads — upcycling, data checking, training, sampling, export, runtime.

A task says what it feeds the UNet, whether it reads text, and how it is guided. Input
layouts follow DESIGN.md and the MTU paper (001, section 5 and appendix A.2). With ``c``
latent channels (4 for Stable Diffusion, 3 for the pixel-space tiny base):

=============  ==========================================  ============  ==============
task           UNet input (concatenated on channels)        text          guidance
=============  ==========================================  ============  ==============
t2i            noisy latents                  (c)           yes           text CFG
edit           noisy latents, image latents   (2c)          yes           image + text
sr             noisy latents, low-res image   (2c)          empty prompt  none
inpaint        noisy latents, image latents   (2c)          yes           image + text
inpaint-mask   noisy, mask, masked image      (2c + 1)      yes           image + text
=============  ==========================================  ============  ==============

Default guidance scales are the paper's SDv1.5 values (appendix A.2). Users declare more
tasks with :class:`TaskSpec` (``custom_tasks`` in the upcycle config); a declared task goes
through every stage exactly like a built-in one, because every stage asks the spec:

* data rows (:meth:`TaskSpec.needs_condition`, :meth:`needs_mask`, :attr:`condition_scale`,
  :attr:`uses_text`),
* the UNet input (:attr:`inputs`, :meth:`in_channels`, :attr:`image_latents`; assembled by
  :func:`taskfold.runtime.sampler.condition_parts`),
* guidance (:attr:`guidance` and its scales; :mod:`taskfold.runtime.guidance`),
* the manifest (:meth:`to_dict`, read back with :func:`task_from_record`).

This module imports nothing heavy: the runtime reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from taskfold.config import Config, is_finite_number
from taskfold.errors import TaskError

#: Parts a task input can be built from: ``mask`` is one channel, every other part has the
#: latent channels; ``masked_image`` is the condition image with the mask's region blanked.
INPUT_PARTS = ("noisy", "image", "mask", "masked_image")
#: ``none``: one evaluation; ``text``: classifier-free guidance on the prompt; ``image_text``:
#: InstructPix2Pix dual guidance on the image and the prompt.
GUIDANCE_KINDS = ("none", "text", "image_text")
#: How an image condition enters the UNet: the codec's latents as the UNet denoises them (``scaled``:
#: ``vae.encode(x) * scaling_factor``, what SD's inpainting pipeline concatenates), or the VAE's raw
#: latents (``unscaled``: ``vae.encode(x).latent_dist.mode()``, what InstructPix2Pix concatenates).
#: Identical for pixel-space models (scaling 1).
IMAGE_LATENTS = ("scaled", "unscaled")
#: Values a task entry written before the field existed means (an older model or package).
LEGACY_FIELDS = {"image_latents": "scaled"}
_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class TaskSpec(Config):
    """One task of a multi-task model.

    ``inputs`` lists the parts concatenated on the channel axis, always starting with
    ``"noisy"``. ``condition_scale``: the condition image is given at ``1 / condition_scale``
    of the output size (2 for 2x super-resolution) and upsampled bicubically to it, in
    training and at sampling alike.
    """

    label = "task declaration"

    name: str
    inputs: tuple[str, ...] = ("noisy",)
    uses_text: bool = True
    guidance: str = "text"
    guidance_scale: float = 7.5
    image_guidance_scale: float | None = None
    condition_scale: int = 1
    image_latents: str = "scaled"
    #: Recommended sampling, what ``run``/``generate`` use when the caller gives none: image tasks start
    #: from their condition image noised to ``strength`` of the schedule (1 = from pure noise), ``steps``
    #: sampling steps. A model's ``sampling.json`` (the evaluation that chose them) overrides them at export.
    strength: float = 1.0
    steps: int = 20

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            raise TaskError(f"invalid task name {self.name!r}: expected lower-case letters, digits, "
                            "'-' or '_', starting with a letter (at most 32 characters)")
        if not self.inputs or self.inputs[0] != "noisy":
            raise TaskError(f"task {self.name!r}: inputs must start with 'noisy', got {list(self.inputs)}")
        bad = [p for p in self.inputs if p not in INPUT_PARTS]
        if bad:
            raise TaskError(f"task {self.name!r}: unknown input part(s) {bad}; known: {list(INPUT_PARTS)}")
        if len(set(self.inputs)) != len(self.inputs):
            raise TaskError(f"task {self.name!r}: input parts repeat: {list(self.inputs)}")
        if self.guidance not in GUIDANCE_KINDS:
            raise TaskError(f"task {self.name!r}: guidance {self.guidance!r} is not one of {list(GUIDANCE_KINDS)}")
        for name in ("guidance_scale", "image_guidance_scale"):
            v = getattr(self, name)
            if v is not None and not is_finite_number(v):
                raise TaskError(f"task {self.name!r}: {name} must be a finite number, got {v!r}")
        if self.guidance == "image_text" and not self.needs_condition:
            raise TaskError(f"task {self.name!r}: image guidance needs an image input, inputs are {list(self.inputs)}")
        if self.guidance == "image_text" and self.image_guidance_scale is None:
            raise TaskError(f"task {self.name!r}: guidance 'image_text' needs image_guidance_scale")
        if not isinstance(self.condition_scale, int) or not 1 <= self.condition_scale <= 8:
            raise TaskError(f"task {self.name!r}: condition_scale must be an integer from 1 to 8, "
                            f"got {self.condition_scale!r}")
        if self.image_latents not in IMAGE_LATENTS:
            raise TaskError(f"task {self.name!r}: image_latents {self.image_latents!r} is not one of "
                            f"{list(IMAGE_LATENTS)}")
        if isinstance(self.strength, bool) or not is_finite_number(self.strength) or not 0 < self.strength <= 1:
            raise TaskError(f"task {self.name!r}: strength must be a number in (0, 1], got {self.strength!r}")
        if self.strength < 1 and not self.needs_condition:
            raise TaskError(f"task {self.name!r}: strength {self.strength:g} needs an image input (a task without "
                            "one always starts from noise)")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise TaskError(f"task {self.name!r}: steps must be an integer from 1 to 1000, got {self.steps!r}")
        if int(self.steps * self.strength) < 1:
            raise TaskError(f"task {self.name!r}: strength {self.strength:g} with {self.steps} steps runs no denoising "
                            f"step (int({self.steps} x {self.strength:g}) = 0)")
        if self.condition_scale > 1 and not self.needs_condition:
            raise TaskError(f"task {self.name!r}: condition_scale {self.condition_scale} needs an image input")

    @classmethod
    def from_dict(cls, d, where: str | None = None, **overrides) -> "TaskSpec":
        if isinstance(d, dict) and "name" not in d:
            raise TaskError(f"{where or 'task declaration'} needs a 'name'")
        if where is None:
            where = f"task {d.get('name')!r}" if isinstance(d, dict) else "task declaration"
        return super().from_dict(d, where=where, **overrides)

    # --- what the task reads ---------------------------------------------------------------

    @property
    def needs_condition(self) -> bool:
        """A condition image (``image`` or ``masked_image`` in the input)."""
        return any(p in ("image", "masked_image") for p in self.inputs)

    @property
    def needs_mask(self) -> bool:
        """A mask (``mask`` or ``masked_image`` in the input); 1 = the region to fill."""
        return any(p in ("mask", "masked_image") for p in self.inputs)

    @property
    def data_columns(self) -> tuple[str, ...]:
        """The fields a dataset row of this task must have, in the order they are checked."""
        return (("task", "prompt") if self.uses_text else ("task",)) + ("target",) \
            + (("condition",) if self.needs_condition else ()) + (("mask",) if self.needs_mask else ())

    def in_channels(self, latent_channels: int) -> int:
        """Channels of this task's UNet input for a model with ``latent_channels``."""
        return sum(1 if part == "mask" else latent_channels for part in self.inputs)


BUILTIN_TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("t2i", ("noisy",), uses_text=True, guidance="text", guidance_scale=7.5),
        TaskSpec("edit", ("noisy", "image"), uses_text=True, guidance="image_text",
                 guidance_scale=7.5, image_guidance_scale=1.6, image_latents="unscaled"),  # as InstructPix2Pix
        TaskSpec("sr", ("noisy", "image"), uses_text=False, guidance="none", guidance_scale=1.0,
                 condition_scale=2),
        TaskSpec("inpaint", ("noisy", "image"), uses_text=True, guidance="image_text",
                 guidance_scale=4.0, image_guidance_scale=1.5, image_latents="unscaled"),  # InstructPix2Pix's layout
        TaskSpec("inpaint-mask", ("noisy", "mask", "masked_image"), uses_text=True,
                 guidance="image_text", guidance_scale=4.0, image_guidance_scale=1.5),  # as SD inpainting: scaled
    )
}


def resolve_tasks(names, custom: tuple[TaskSpec, ...] = ()) -> tuple[TaskSpec, ...]:
    """Turn task names into specs: built-ins first, then the user's declarations.

    Unknown names fail with the list of known ones; a custom task may not redefine a
    built-in name, and a name may appear only once.
    """
    known = dict(BUILTIN_TASKS)
    for spec in custom:
        if spec.name in BUILTIN_TASKS:
            raise TaskError(f"custom task {spec.name!r} redefines a built-in task",
                            hint="pick another name for the custom task")
        known[spec.name] = spec
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names:
        raise TaskError("no tasks given", hint=f"known tasks: {', '.join(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TaskError(f"unknown task(s) {', '.join(repr(n) for n in unknown)}; known tasks: {', '.join(known)}",
                        hint="declare new tasks under 'custom_tasks' in an --config JSON file")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TaskError(f"task(s) listed twice: {', '.join(dup)}")
    return tuple(known[n] for n in names)


def check_object(value, known, where: str, expected: str, error=TaskError) -> None:
    """``value`` is a dict whose keys are all in ``known``; else ``error`` naming ``where`` and what was expected."""
    if not isinstance(value, dict):
        raise error(f"{where} needs {expected}, got {type(value).__name__}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise error(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; expected {', '.join(known)}")


#: The recommended-sampling fields of a task, as ``sampling.json`` and the manifest name them.
SAMPLING_FIELDS = ("strength", "guidance_scale", "image_guidance_scale", "steps")


def with_sampling(spec: TaskSpec, values: dict, where: str = "sampling") -> TaskSpec:
    """``spec`` with recommended sampling ``values`` (a subset of :data:`SAMPLING_FIELDS`), checked."""
    check_object(values, SAMPLING_FIELDS, f"{where}: task {spec.name!r}", f"an object of {', '.join(SAMPLING_FIELDS)}")
    if values.get("image_guidance_scale") is not None and spec.guidance != "image_text":
        raise TaskError(f"{where}: task {spec.name!r} has no image guidance (its guidance is {spec.guidance!r})")
    return TaskSpec.from_dict(spec.to_dict() | values, where=f"{where}: task {spec.name!r}")


def task_from_record(record: dict) -> TaskSpec:
    """A task from its manifest entry (``to_dict()`` plus the package's own keys, which are ignored).

    Entries written before a field existed take :data:`LEGACY_FIELDS` (what such a package was made
    with: scaled image latents) or else the built-in task's value (an ``sr`` of an older package keeps
    its half-size condition), else the field's default.
    """
    fields = TaskSpec.field_types()
    base = BUILTIN_TASKS[record["name"]].to_dict() if record.get("name") in BUILTIN_TASKS else {}
    legacy = {k: v for k, v in LEGACY_FIELDS.items() if k not in record}
    return TaskSpec.from_dict(base | legacy | {k: v for k, v in record.items() if k in fields})
