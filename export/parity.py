"""The parity gate (DESIGN.md invariant 8): an exported graph reproduces the MTU model or the export fails.

For each graph the gate draws fresh seeded inputs at several timesteps spread over the whole
training range (plus a fractional one, which exercises the DTR rounding rule), runs the
graph and the unfolded MTU model for that task, and measures

    relative error = max |graph - mtu| / max(max |mtu|, 1e-6)

against the tolerance of the graph's backend and precision (:data:`TOLERANCES`). Every
failing graph is collected, then one :class:`~taskfold.errors.ParityError` names each task,
output, error and tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from taskfold.errors import ParityError
from taskfold.runtime.backends import BACKENDS

from .graph import GraphSpec, MTUTaskGraph, example_inputs

#: (backend, precision) -> maximum relative error, from the backend registry
#: (:data:`taskfold.runtime.backends.BACKENDS`). fp32 graphs differ from PyTorch only by kernel
#: summation order (~1e-6 measured); fp16 carries ~3 decimal digits through ~100 layers.
TOLERANCES = {(b.name, precision): tol for b in BACKENDS.values() for precision, tol in b.tolerances.items()}


def default_timesteps(train_timesteps: int = 1000, n: int = 4) -> list[float]:
    """``n`` integer timesteps from 0 to T-1, plus a fractional one (n >= 2)."""
    ts = [float(round(x)) for x in np.linspace(0, train_timesteps - 1, max(2, n))]
    return ts + [train_timesteps / 2 + 0.5]


@dataclass
class ParityResult:
    task: str
    backend: str
    precision: str
    output: str
    max_abs_error: float
    output_scale: float
    tolerance: float
    timesteps: list[float] = field(default_factory=list)
    per_timestep: list[float] = field(default_factory=list)

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / max(self.output_scale, 1e-6)

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.relative_error)) and self.relative_error <= self.tolerance

    def to_dict(self) -> dict:
        return {"output": self.output, "max_abs_error": self.max_abs_error, "output_scale": self.output_scale,
                "relative_error": self.relative_error, "tolerance": self.tolerance,
                "timesteps": self.timesteps, "relative_error_per_timestep": self.per_timestep,
                "status": "passed" if self.passed else "failed"}

    def describe(self) -> str:
        return (f"task {self.task!r} ({self.backend} {self.precision}) output {self.output!r}: "
                f"relative error {self.relative_error:.2e} > tolerance {self.tolerance:.0e} "
                f"(max abs {self.max_abs_error:.3e}, output scale {self.output_scale:.3g})")


@torch.no_grad()
def check_graph(run, mtu, task: str, spec: GraphSpec, batch: int, height: int, width: int, backend: str,
                precision: str, timesteps: list[float], seed: int = 1234,
                tolerance: float | None = None, reference: torch.nn.Module | None = None) -> ParityResult:
    """Compare ``run(inputs: dict[str, np.ndarray]) -> np.ndarray`` with the MTU model for ``task``.

    ``reference`` replaces the MTU model (a module with the graph's signature, e.g. the base
    UNet behind a benchmark's base graph); ``task`` then only names the result.
    """
    ref_model = MTUTaskGraph(mtu, task).eval() if reference is None else reference
    tol = TOLERANCES[(backend, precision)] if tolerance is None else tolerance
    worst, scale, per_t = 0.0, 0.0, []
    for i, t in enumerate(timesteps):
        inputs = example_inputs(spec, batch, height, width, seed=seed + i, timestep=t)
        ref_in = {k: v.float() if v.is_floating_point() else v for k, v in inputs.items()}
        ref = ref_model(*ref_in.values()).double().numpy()
        got = np.asarray(run({k: v.numpy() for k, v in inputs.items()}), dtype=np.float64)
        if got.shape != ref.shape:
            raise ParityError(f"task {task!r} ({backend}) output {spec.output_names[0]!r} has shape "
                              f"{list(got.shape)}, the model gives {list(ref.shape)}")
        err = float(np.max(np.abs(got - ref))) if np.all(np.isfinite(got)) else float("inf")
        s = float(np.max(np.abs(ref)))
        per_t.append(err / max(s, 1e-6))
        worst, scale = max(worst, err), max(scale, s)
    return ParityResult(task, backend, precision, spec.output_names[0], worst, scale, tol, list(timesteps), per_t)


def raise_on_failures(results: list[ParityResult]) -> None:
    failed = [r for r in results if not r.passed]
    if failed:
        raise ParityError("parity gate failed for " + "; ".join(r.describe() for r in failed),
                          hint="the export was not written; report this with the model and export flags")
