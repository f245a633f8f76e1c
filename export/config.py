"""``ExportConfig``: everything ``taskfold export`` was asked for (torch-free: the CLI reads it without the toolchain)."""

from __future__ import annotations

from dataclasses import dataclass

from taskfold.config import Config
from taskfold.errors import ConfigError

FORMATS = ("onnx", "coreml", "tensorrt", "diffusers")
#: How the ONNX tasks of a package are laid out (taskfold.export.adapters).
LAYOUTS = ("graphs", "adapters")
MIN_OPSET = 17


def max_opset() -> int:
    """The newest opset this PyTorch's TorchScript-based ONNX exporter writes (20 in torch 2.x)."""
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):
        return 20
PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class ExportConfig(Config):
    """Everything ``taskfold export`` was asked for; saved in the manifest."""

    label = "export config"

    formats: tuple[str, ...] = ("onnx",)
    layout: tuple[str, ...] = ("graphs",)
    tasks: tuple[str, ...] = ("all",)
    precision: str = "fp32"
    batch: int = 1
    height: int | None = None  # image pixels; default: the width, else the UNet's sample_size x codec scale
    width: int | None = None  # default: the height, else the UNet's sample_size x codec scale
    text_len: int | None = None  # default: the model's text encoder's max_length, else 77
    dynamic: bool = False
    opset: int = 17
    optimize: bool = False
    ort_mobile: bool = False
    coreml_precision: str = "fp16"
    coreml_multifunction: bool = False
    palettize: int | None = None
    trt_refit: bool = False
    parity_timesteps: int = 4
    parity_seed: int = 1234

    def __post_init__(self):
        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "layout", tuple(self.layout))
        if not self.layout or any(x not in LAYOUTS for x in self.layout) or len(set(self.layout)) != len(self.layout):
            raise ConfigError(f"--layout {','.join(self.layout) or '(none)'} is not one or both of "
                              f"{', '.join(LAYOUTS)}", hint="graphs: one folded graph per task; adapters: one shared "
                                                            "graph and a task-tensors file per task")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ConfigError(f"unknown export format(s) {bad or '(none)'}; choose from {', '.join(FORMATS)}")
        for name, value in (("precision", self.precision), ("coreml precision", self.coreml_precision)):
            if value not in PRECISIONS:
                raise ConfigError(f"{name} {value!r} is not one of {', '.join(PRECISIONS)}")
        for name in ("batch", "text_len", "parity_timesteps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"--{name} must be a positive pixel count, got {v}")
        if (self.height is None) != (self.width is None):  # one side given: a square image of that side
            side = self.width if self.height is None else self.height
            object.__setattr__(self, "height", side)
            object.__setattr__(self, "width", side)
        from taskfold.runtime.limits import bound  # a package's sizes are bounded where the runtime reads them

        for name, top in (("batch", bound("batch")), ("text_len", bound("text_len")), ("height", bound("image_side")),
                          ("width", bound("image_side")), ("parity_timesteps", 64)):
            v = getattr(self, name)
            if v is not None and v > top:
                raise ConfigError(f"--{name.replace('_', '-')} {v} is more than {top}, the most a package may hold "
                                  "(runtime/package_schema.json)")
        if self.opset < MIN_OPSET:
            raise ConfigError(f"--opset {self.opset} is below {MIN_OPSET}, the oldest opset taskfold exports")
        if self.opset > max_opset():
            raise ConfigError(f"--opset {self.opset} is outside {MIN_OPSET}..{max_opset()}, the opsets taskfold "
                              "exports with this PyTorch (its TorchScript ONNX exporter)",
                              hint=f"use --opset {MIN_OPSET} (the default)")
