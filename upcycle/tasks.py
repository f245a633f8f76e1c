"""Tasks: what each one feeds the UNet, whether it reads text, and how it is guided.

Input layouts follow DESIGN.md and the MTU paper (001, section 5 and appendix A.2). With
``c`` latent channels (4 for Stable Diffusion, 3 for the pixel-space tiny base):

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
tasks with :class:`TaskSpec` (``custom_tasks`` in the upcycle config).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from taskfold.config import Config, is_finite_number
from taskfold.errors import TaskError

#: Parts a task input can be built from, and their channel counts (c = latent channels).
INPUT_PARTS = ("noisy", "image", "mask", "masked_image")
GUIDANCE_KINDS = ("text", "image_text", "none")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class TaskSpec(Config):
    """One task of a multi-task model.

    ``inputs`` lists the parts concatenated on the channel axis, always starting with
    ``"noisy"``; ``"mask"`` is one channel, every other part has the latent channels.
    """

    name: str
    inputs: tuple[str, ...] = ("noisy",)
    uses_text: bool = True
    guidance: str = "text"
    guidance_scale: float = 7.5
    image_guidance_scale: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not _NAME_RE.match(self.name):
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
        if self.guidance == "image_text" and self.inputs == ("noisy",):
            raise TaskError(f"task {self.name!r}: image guidance needs an image input, inputs are only ['noisy']")
        for name in ("guidance_scale", "image_guidance_scale"):
            v = getattr(self, name)
            if v is not None and not is_finite_number(v):
                raise TaskError(f"task {self.name!r}: {name} must be a finite number, got {v!r}")
        if self.guidance == "image_text" and self.image_guidance_scale is None:
            raise TaskError(f"task {self.name!r}: guidance 'image_text' needs image_guidance_scale")

    def in_channels(self, latent_channels: int) -> int:
        """Channels of this task's UNet input for a model with ``latent_channels``."""
        return sum(1 if part == "mask" else latent_channels for part in self.inputs)

    @classmethod
    def from_dict(cls, d, where: str | None = None, **overrides) -> "TaskSpec":
        if isinstance(d, dict) and "name" not in d:
            raise TaskError(f"{where or 'task declaration'} needs a 'name'")
        if where is None:
            where = f"task {d.get('name')!r}" if isinstance(d, dict) else "task declaration"
        return super().from_dict(d, where=where, **overrides)


BUILTIN_TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("t2i", ("noisy",), uses_text=True, guidance="text", guidance_scale=7.5),
        TaskSpec("edit", ("noisy", "image"), uses_text=True, guidance="image_text",
                 guidance_scale=7.5, image_guidance_scale=1.6),
        TaskSpec("sr", ("noisy", "image"), uses_text=False, guidance="none", guidance_scale=1.0),
        TaskSpec("inpaint", ("noisy", "image"), uses_text=True, guidance="image_text",
                 guidance_scale=4.0, image_guidance_scale=1.5),
        TaskSpec("inpaint-mask", ("noisy", "mask", "masked_image"), uses_text=True,
                 guidance="image_text", guidance_scale=4.0, image_guidance_scale=1.5),
    )
}


def resolve_tasks(names: list[str] | tuple[str, ...], custom: tuple[TaskSpec, ...] = ()) -> tuple[TaskSpec, ...]:
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
    if not names:
        raise TaskError("no tasks given", hint=f"known tasks: {', '.join(known)}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TaskError(f"unknown task(s) {', '.join(repr(n) for n in unknown)}; known tasks: {', '.join(known)}",
                        hint="declare new tasks under 'custom_tasks' in an --config JSON file")
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise TaskError(f"task(s) listed twice: {', '.join(dup)}")
    return tuple(known[n] for n in names)
