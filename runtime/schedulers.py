"""Sampling schedulers in numpy, step for step equal to diffusers'.

The runtime feeds an exported UNet graph and turns its outputs into the next latent
without torch. Each sampler matches its diffusers counterpart for the options listed in
:class:`SchedulerConfig`; ``tests/runtime/test_schedulers.py`` holds the parity checks:

=================  =========================================================================
``ddim``           ``DDIMScheduler``
``euler``          ``EulerDiscreteScheduler``
``euler-a``        ``EulerAncestralDiscreteScheduler`` (noise added every step)
``dpmpp-2m``       ``DPMSolverMultistepScheduler`` (DPM-Solver++, second order, midpoint)
``dpmpp-2m-karras``  the same with ``use_karras_sigmas=True`` (Karras et al. 2022, rho 7)
=================  =========================================================================

Common interface (:func:`make_scheduler` builds one)::

    s = make_scheduler("euler", SchedulerConfig(), num_inference_steps=30)
    x = noise * s.init_noise_sigma
    for i, t in enumerate(s.timesteps):              # t: float32, the UNet's `timestep`
        eps = unet(s.scale_model_input(x, i), t)
        x = s.step(eps, i, x)

Steps are addressed by their index ``i`` in ``timesteps``, not by the timestep value, so
starting part-way (img2img: ``add_noise`` then the loop from index ``k``; :func:`start_latents`)
needs no search.

Notation: ``abar_t`` is the cumulative product of ``1 - beta`` up to training step ``t``
(``alphas_cumprod`` in diffusers). The ``beta`` and ``abar`` tables are float32 and
bit-identical to diffusers' (its ``torch.linspace`` rounding and float64-accumulated
``cumprod`` are reproduced), so the noise levels are the ones a diffusers-trained model
saw; square roots of them may differ by one float32 ulp, because numpy's ``sqrt`` is
correctly rounded and torch's AVX-512 CPU kernel is not always. Each step is evaluated in
float32 with the operations in diffusers' order, and the result is cast to the input's
dtype: diffusers' latents are float32, so a float64 evaluation, though more exact, would
drift further from them (up to 4e-5 after 50 DDIM steps on latents grown to ~30, against
2.5e-5 in float32); on SD-scale latents the two stay within 4e-6 (a float32 ulp at 50).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from taskfold.errors import ConfigError

from .noise import NoiseSource, noise_source, normal

SCHEDULERS = ("ddim", "euler", "euler-a", "dpmpp-2m", "dpmpp-2m-karras")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")

#: Spacing used when the config names none, per scheduler: the diffusers class defaults,
#: which is what ``from_config`` gives for SD1.5's ``scheduler_config.json`` (no such key).
DEFAULT_SPACING = {"ddim": "leading", "euler": "linspace", "euler-a": "linspace", "dpmpp-2m": "linspace",
                   "dpmpp-2m-karras": "linspace"}


def _one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} {value!r} is not supported; expected one of: {', '.join(map(str, allowed))}")


# --- config ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerConfig:
    """The noise schedule and sampling options; the defaults are Stable Diffusion 1.5's.

    ``timestep_spacing=None`` means the scheduler's own default (:data:`DEFAULT_SPACING`).
    ``clip_sample`` clips DDIM's predicted ``x0`` to [-1, 1]; Euler has no such option and
    ignores it, as diffusers does. ``set_alpha_to_one`` chooses DDIM's ``abar`` after the
    last step: 1 (True) or ``abar_0`` (False, as SD ships it).
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"
    timestep_spacing: str | None = None
    steps_offset: int = 1
    clip_sample: bool = False
    set_alpha_to_one: bool = False

    def __post_init__(self):
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 2:
            raise ConfigError(f"num_train_timesteps {self.num_train_timesteps!r} must be an integer >= 2")
        numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool)
                      for b in (self.beta_start, self.beta_end))
        if not numbers or not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ConfigError(f"beta_start {self.beta_start!r} and beta_end {self.beta_end!r} "
                              "must satisfy 0 < beta_start <= beta_end < 1")
        _one_of("beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        _one_of("prediction_type", self.prediction_type, PREDICTION_TYPES)
        if self.timestep_spacing is not None:
            _one_of("timestep_spacing", self.timestep_spacing, TIMESTEP_SPACINGS)
        if not isinstance(self.steps_offset, int) or not 0 <= self.steps_offset < self.num_train_timesteps:
            raise ConfigError(f"steps_offset {self.steps_offset!r} must be an integer in "
                              f"[0, {self.num_train_timesteps})")
        for key in ("clip_sample", "set_alpha_to_one"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} {getattr(self, key)!r} must be true or false")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_diffusers_config(cls, config: Mapping) -> SchedulerConfig:
        """Read a diffusers ``scheduler_config.json`` dict (any scheduler class).

        Keys this module models are read; missing ones take the defaults above. Keys that
        would change the math in a way not implemented here (``trained_betas``,
        ``rescale_betas_zero_snr``, Karras sigmas, ...) raise :class:`ConfigError` unless
        they hold their neutral value. Every other key is ignored.
        """
        for key, neutral in _NEUTRAL.items():
            if key in config and config[key] != neutral:
                raise ConfigError(f"{key} {config[key]!r} is not supported; only {neutral!r} is implemented")
        if config.get("clip_sample") and config.get("clip_sample_range", 1.0) != 1.0:
            raise ConfigError(f"clip_sample_range {config['clip_sample_range']!r} is not supported; "
                              "only 1.0 is implemented")
        values = {}
        for key, kind in _FIELD_TYPES.items():
            if key not in config:
                continue
            value = config[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"{key} {value!r} must be of type {kind.__name__}")
            values[key] = value
        return cls(**values)


_FIELD_TYPES = {"num_train_timesteps": int, "beta_start": float, "beta_end": float, "beta_schedule": str,
                "prediction_type": str, "timestep_spacing": str, "steps_offset": int, "clip_sample": bool,
                "set_alpha_to_one": bool}

#: diffusers keys whose non-default values this module does not implement.
_NEUTRAL = {"trained_betas": None, "rescale_betas_zero_snr": False, "thresholding": False,
            "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
            "interpolation_type": "linear", "timestep_type": "discrete", "final_sigmas_type": "zero"}


# --- noise schedule ----------------------------------------------------------------------


def _torch_linspace_float32(start: float, end: float, n: int) -> np.ndarray:
    """float32 ``linspace`` rounded as ``torch.linspace`` rounds it.

    torch takes a float32 step, fills the first half as ``start + i * step`` and the second
    as ``end - (n - 1 - i) * step``, each with a single (fused) rounding. The products are
    exact in float64, so evaluating there and rounding once reproduces it.
    """
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(n - 1))
    i = np.arange(n, dtype=np.float64)
    values = np.where(i < n // 2, np.float64(start32) + step * i, np.float64(end32) - step * (n - 1 - i))
    return values.astype(np.float32)


def betas(config: SchedulerConfig) -> np.ndarray:
    """Training betas, float32 ``[num_train_timesteps]``.

    * ``linear``: evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020).
    * ``scaled_linear``: evenly spaced in ``sqrt(beta)``, then squared (latent diffusion).
    * ``squaredcos_cap_v2``: ``beta_t = min(1 - abar(t+1)/abar(t), 0.999)`` with
      ``abar(u) = cos((u/T + 0.008) / 1.008 * pi/2)^2`` (Nichol & Dhariwal 2021, Eq. 17).
    """
    n = config.num_train_timesteps
    if config.beta_schedule == "linear":
        return _torch_linspace_float32(config.beta_start, config.beta_end, n)
    if config.beta_schedule == "scaled_linear":
        return _torch_linspace_float32(config.beta_start ** 0.5, config.beta_end ** 0.5, n) ** 2
    u = np.arange(n + 1) / n
    abar = np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    return np.minimum(1.0 - abar[1:] / abar[:-1], 0.999).astype(np.float32)


def alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
    """``abar_t = prod_{s<=t} (1 - beta_s)``, float32, accumulated in float64 (as torch does)."""
    return np.cumprod((1.0 - betas(config)).astype(np.float64)).astype(np.float32)


def _spaced_timesteps(config: SchedulerConfig, spacing: str, n: int, integer: bool) -> np.ndarray:
    """Training timesteps visited by an ``n``-step sampler, descending (float64 values).

    * ``leading``: ``k * (T // n) + steps_offset`` for k = n-1 .. 0.
    * ``linspace``: ``n`` points from T-1 to 0, rounded half-to-even when ``integer``.
    * ``trailing``: ``round(T - k * T / n) - 1`` for k = 0 .. n-1. (diffusers builds this
      with a float ``arange`` that sometimes yields an (n+1)-th timestep, -1; it is not
      produced here.)
    """
    T = config.num_train_timesteps
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= T:
        raise ConfigError(f"num_inference_steps {n!r} must be an integer in [1, {T}]")
    if spacing == "leading":
        steps = (np.arange(n - 1, -1, -1) * (T // n) + config.steps_offset).astype(np.float64)
    elif spacing == "linspace":
        steps = np.linspace(0, T - 1, n)[::-1]
        steps = np.round(steps) if integer else steps.astype(np.float32).astype(np.float64)
    else:
        steps = np.round(np.arange(T, 0, -T / n)[:n]) - 1
    return steps


# --- schedulers --------------------------------------------------------------------------


class Scheduler(Protocol):
    """What the runtime needs from a sampler."""

    name: str
    spacing: str  # the timestep spacing in use (the config's, or the scheduler's default)
    num_inference_steps: int
    timesteps: np.ndarray  # float32 [num_inference_steps]: the UNet's ``timestep`` input
    init_noise_sigma: float

    def scale_model_input(self, x: np.ndarray, i: int) -> np.ndarray: ...

    def step(self, model_output: np.ndarray, i: int, x: np.ndarray,
             generator: NoiseSource | None = None) -> np.ndarray: ...

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray: ...

    def add_noise_at(self, x0: np.ndarray, noise: np.ndarray, i: int) -> np.ndarray:
        """Forward diffusion to the noise level of step ``i`` (where img2img starts)."""


def _check_index(i: int, n: int) -> int:
    if not 0 <= i < n:
        raise IndexError(f"step index {i} is outside [0, {n})")
    return int(i)


def _per_sample(coef: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape per-sample coefficients ``[B]`` (or a scalar) to broadcast over ``[B, ...]``."""
    coef = np.asarray(coef, dtype=np.float32)
    return coef.reshape(coef.shape + (1,) * (ndim - coef.ndim)) if coef.ndim else coef


class DDIMScheduler:
    """DDIM (Song et al. 2021, Eq. 12): with ``x0`` and ``eps`` predicted at step ``t``,

        x_prev = sqrt(abar_prev) * x0 + sqrt(1 - abar_prev - sigma_t^2) * eps + sigma_t * z
        sigma_t = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))

    ``prev`` is ``t - T // n`` for every spacing, as in diffusers (for ``linspace`` and
    ``trailing`` it is then not always the next timestep of the schedule); below 0 it is
    ``abar_0`` or 1 (``set_alpha_to_one``). ``eta = 0`` is deterministic. With ``eta > 0``
    ``z`` is ``normal(generator, x.shape)`` per step (:mod:`.noise`, the sampler's seeded source),
    so samples differ from torch-seeded diffusers runs of the same seed.
    """

    name = "ddim"
    init_noise_sigma = 1.0

    def __init__(self, config: SchedulerConfig, num_inference_steps: int, *, eta: float = 0.0):
        if not eta >= 0.0:
            raise ConfigError(f"eta {eta!r} must be >= 0")
        self.config, self.eta = config, float(eta)
        self.spacing = config.timestep_spacing or DEFAULT_SPACING[self.name]
        self.num_inference_steps = num_inference_steps
        self.alphas_cumprod = alphas_cumprod(config)
        steps = _spaced_timesteps(config, self.spacing, num_inference_steps, integer=True).astype(np.int64)
        if steps.max() >= config.num_train_timesteps:
            T = config.num_train_timesteps
            most = next(n for n in range(num_inference_steps - 1, 0, -1)
                        if _spaced_timesteps(config, self.spacing, n, integer=True).max() < T)
            raise ConfigError(f"{num_inference_steps} '{self.spacing}' steps with steps_offset "
                              f"{config.steps_offset} reach timestep {steps.max()}, past the last "
                              f"training timestep {T - 1}; the largest number of steps below "
                              f"{num_inference_steps} that fits is {most}")
        self._steps = steps
        self.timesteps = steps.astype(np.float32)
        self._final_abar = np.float32(1.0) if config.set_alpha_to_one else self.alphas_cumprod[0]

    def _abar(self, t: int) -> np.float32:
        return self.alphas_cumprod[t] if t >= 0 else self._final_abar

    def scale_model_input(self, x: np.ndarray, i: int) -> np.ndarray:
        """DDIM feeds the latent unscaled."""
        _check_index(i, self.num_inference_steps)
        return x

    def step(self, model_output: np.ndarray, i: int, x: np.ndarray,
             generator: NoiseSource | None = None) -> np.ndarray:
        """The latent at the previous timestep. ``generator`` (a :mod:`.noise` source) is used only
        when ``eta > 0`` (a fresh unseeded one when it is None)."""
        t = int(self._steps[_check_index(i, self.num_inference_steps)])
        abar_t = self._abar(t)
        abar_prev = self._abar(t - self.config.num_train_timesteps // self.num_inference_steps)
        x0, eps = _x0_and_eps(self.config.prediction_type, model_output, x, abar_t)
        if self.config.clip_sample:
            x0 = np.clip(x0, np.float32(-1), np.float32(1))
        variance = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
        sigma = np.float32(self.eta) * np.sqrt(variance)
        x_prev = np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev - sigma * sigma) * eps
        if self.eta > 0:
            x_prev = x_prev + sigma * normal(generator if generator is not None else noise_source(None), x.shape)
        return x_prev.astype(x.dtype)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray:
        """Forward diffusion to integer timestep(s) ``t`` (scalar or one per sample):
        ``sqrt(abar_t) * x0 + sqrt(1 - abar_t) * noise``."""
        t = np.asarray(t)
        T = self.config.num_train_timesteps
        if np.any(t != np.round(t)) or np.any(t < 0) or np.any(t >= T):
            raise ConfigError(f"timestep {t.tolist()!r} must be an integer in [0, {T})")
        abar = _per_sample(self.alphas_cumprod[t.astype(np.int64)], x0.ndim)
        return (np.sqrt(abar) * _f32(x0) + np.sqrt(1 - abar) * _f32(noise)).astype(x0.dtype)

    def add_noise_at(self, x0: np.ndarray, noise: np.ndarray, i: int) -> np.ndarray:
        return self.add_noise(x0, noise, self.timesteps[_check_index(i, self.num_inference_steps)])


class EulerScheduler:
    """Euler's method on the probability-flow ODE in sigma space (Karras et al. 2022, Alg. 2
    without churn), as diffusers' ``EulerDiscreteScheduler``:

        sigma(t) = sqrt((1 - abar_t) / abar_t), interpolated linearly at fractional t
        d = (x - x0) / sigma_i;   x_next = x + (sigma_{i+1} - sigma_i) * d,   sigma_n = 0

    The latent lives at scale ``sqrt(sigma^2 + 1)``: the loop starts from
    ``noise * init_noise_sigma`` and the UNet sees ``x / sqrt(sigma_i^2 + 1)``
    (``scale_model_input``). ``init_noise_sigma`` is ``sigma_0`` for ``linspace`` and
    ``trailing`` and ``sqrt(sigma_0^2 + 1)`` for ``leading``, as in diffusers.
    """

    name = "euler"

    def __init__(self, config: SchedulerConfig, num_inference_steps: int, *, eta: float = 0.0):
        if eta != 0.0:
            raise ConfigError(f"eta {eta!r} is a DDIM option; the Euler sampler is deterministic (eta 0)")
        self.config = config
        self.spacing = config.timestep_spacing or DEFAULT_SPACING[self.name]
        self.num_inference_steps = num_inference_steps
        abar = alphas_cumprod(config)
        self.train_sigmas = np.sqrt((1 - abar) / abar)  # float32 [T]
        self.timesteps = _spaced_timesteps(config, self.spacing, num_inference_steps,
                                           integer=False).astype(np.float32)
        self.sigmas = np.append(self._sigma_at(self.timesteps), np.float32(0.0))
        top = self.sigmas.max()
        self.init_noise_sigma = float(top if self.spacing != "leading" else np.sqrt(top * top + 1))

    def _sigma_at(self, t) -> np.ndarray:
        """float32 sigma at training timestep(s) ``t``, linear between integers, clamped."""
        grid = np.arange(self.config.num_train_timesteps)
        return np.interp(t, grid, self.train_sigmas).astype(np.float32)

    def scale_model_input(self, x: np.ndarray, i: int) -> np.ndarray:
        """``x / sqrt(sigma_i^2 + 1)``: the UNet's input at unit variance scale."""
        sigma = self.sigmas[_check_index(i, self.num_inference_steps)]
        return (_f32(x) / np.sqrt(sigma * sigma + 1)).astype(x.dtype)

    def step(self, model_output: np.ndarray, i: int, x: np.ndarray,
             generator: NoiseSource | None = None) -> np.ndarray:
        """The latent at ``sigma_{i+1}``. ``generator`` is unused (the step is deterministic)."""
        i = _check_index(i, self.num_inference_steps)
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        dtype, x, out = x.dtype, _f32(x), _f32(model_output)
        kind = self.config.prediction_type
        if kind == "epsilon":
            x0 = x - sigma * out
        elif kind == "v_prediction":  # v is predicted for the scaled input x / sqrt(sigma^2 + 1)
            x0 = out * (-sigma / np.sqrt(sigma * sigma + 1)) + x / (sigma * sigma + 1)
        else:
            x0 = out
        derivative = (x - x0) / sigma
        return (x + derivative * (sigma_next - sigma)).astype(dtype)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray:
        """Forward diffusion to timestep(s) ``t`` (scalar or one per sample; fractional
        allowed, e.g. a value of ``timesteps``): ``x0 + sigma(t) * noise``."""
        sigma = _per_sample(self._sigma_at(np.asarray(t, dtype=np.float64)), x0.ndim)
        return (_f32(x0) + _f32(noise) * sigma).astype(x0.dtype)

    def add_noise_at(self, x0: np.ndarray, noise: np.ndarray, i: int) -> np.ndarray:
        return self.add_noise(x0, noise, self.timesteps[_check_index(i, self.num_inference_steps)])


class EulerAncestralScheduler(EulerScheduler):
    """Euler ancestral, as diffusers' ``EulerAncestralDiscreteScheduler``: each step goes to
    ``sigma_down`` with Euler's update and adds fresh noise of ``sigma_up``, where

        sigma_up = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2),  sigma_down = sqrt(sigma_next^2 - sigma_up^2)

    The noise is ``noise`` if given (parity tests pass diffusers' draw), else
    ``normal(generator, x.shape)`` — the sampler's own seeded source (:mod:`.noise`).
    """

    name = "euler-a"

    def step(self, model_output: np.ndarray, i: int, x: np.ndarray,
             generator: NoiseSource | None = None, noise: np.ndarray | None = None) -> np.ndarray:
        i = _check_index(i, self.num_inference_steps)
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        dtype, x, out = x.dtype, _f32(x), _f32(model_output)
        if self.config.prediction_type == "epsilon":
            x0 = x - sigma * out
        elif self.config.prediction_type == "v_prediction":
            x0 = out * (-sigma / (sigma * sigma + 1) ** np.float32(0.5)) + x / (sigma * sigma + 1)
        else:
            raise ConfigError("euler-a does not implement prediction_type 'sample' (diffusers does not either)")
        sigma_up = (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** np.float32(0.5)
        sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** np.float32(0.5)
        x_prev = x + (x - x0) / sigma * (sigma_down - sigma)
        if noise is None:
            noise = normal(generator if generator is not None else noise_source(None), x.shape)
        return (x_prev + _f32(noise) * sigma_up).astype(dtype)


class DPMSolverPP2MScheduler:
    """DPM-Solver++ (Lu et al. 2022), multistep, second order with the midpoint rule, as diffusers'
    ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)`` with its defaults
    (``lower_order_final``, ``final_sigmas_type="zero"``). In log-SNR ``lambda = log(alpha / sigma)``
    with ``h = lambda_next - lambda`` and ``D0 = x0_i``, ``D1 = (x0_i - x0_{i-1}) / r``,
    ``r = (lambda - lambda_prev) / h``::

        x_next = (sigma_next / sigma) x - alpha_next (e^-h - 1) (D0 + D1 / 2)

    The first step and the last (which goes to sigma 0) are first order (``D1 = 0``). ``karras``:
    sigmas spaced as Karras et al. 2022 (rho 7) between the schedule's extremes, the timesteps fed
    to the UNet the rounded inverse of each sigma. The solver keeps the previous ``x0``: one
    instance per sampling run, steps in order.
    """

    init_noise_sigma = 1.0

    def __init__(self, config: SchedulerConfig, num_inference_steps: int, *, eta: float = 0.0,
                 karras: bool = False):
        if eta != 0.0:
            raise ConfigError(f"eta {eta!r} is a DDIM option; DPM-Solver++ 2M is deterministic (eta 0)")
        T = config.num_train_timesteps
        if not isinstance(num_inference_steps, (int, np.integer)) or isinstance(num_inference_steps, bool) \
                or not 1 <= num_inference_steps <= T:
            raise ConfigError(f"num_inference_steps {num_inference_steps!r} must be an integer in [1, {T}]")
        self.config, self.karras = config, karras
        self.name = "dpmpp-2m-karras" if karras else "dpmpp-2m"
        self.spacing = config.timestep_spacing or DEFAULT_SPACING[self.name]
        n = self.num_inference_steps = int(num_inference_steps)
        abar = alphas_cumprod(config)
        train_sigmas = np.sqrt((1 - abar) / abar)  # float32 [T]
        if self.spacing == "linspace":
            steps = np.linspace(0, T - 1, n + 1).round()[::-1][:-1].astype(np.int64)
        elif self.spacing == "leading":
            steps = (np.arange(0, n + 1) * (T // (n + 1))).round()[::-1][:-1].astype(np.int64) + config.steps_offset
        else:
            steps = np.arange(T, 0, -T / n).round().astype(np.int64) - 1
        if karras:
            log_sigmas = np.log(train_sigmas)
            sigma_min, sigma_max = float(train_sigmas[0]), float(train_sigmas[-1])
            ramp = np.linspace(0, 1, n)
            sigmas = (sigma_max ** (1 / 7.0) + ramp * (sigma_min ** (1 / 7.0) - sigma_max ** (1 / 7.0))) ** 7.0
            steps = self._sigma_to_t(sigmas, log_sigmas)
            if config.beta_schedule != "squaredcos_cap_v2":
                steps = steps.round()
            steps = steps.astype(np.int64)
        else:
            sigmas = np.interp(steps, np.arange(T), train_sigmas)
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self._steps = steps
        self.timesteps = steps.astype(np.float32)
        self._x0_prev: np.ndarray | None = None
        self._last = -1

    @staticmethod
    def _sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
        """Fractional training timestep of each sigma: linear in log-sigma between neighbours."""
        log_sigma = np.log(np.maximum(sigma, 1e-10))
        dists = log_sigma - log_sigmas[:, np.newaxis]
        low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
        return ((1 - w) * low + w * (low + 1)).reshape(sigma.shape)

    @staticmethod
    def _alpha_sigma(sigma: np.float32) -> tuple[np.float32, np.float32]:
        alpha = np.float32(1) / (sigma * sigma + np.float32(1)) ** np.float32(0.5)
        return alpha, sigma * alpha

    def _lambda(self, alpha, sigma):
        with np.errstate(divide="ignore"):
            return np.log(alpha) - np.log(sigma)

    def scale_model_input(self, x: np.ndarray, i: int) -> np.ndarray:
        """DPM-Solver feeds the latent unscaled."""
        _check_index(i, self.num_inference_steps)
        return x

    def step(self, model_output: np.ndarray, i: int, x: np.ndarray,
             generator: NoiseSource | None = None) -> np.ndarray:
        i = _check_index(i, self.num_inference_steps)
        if i != self._last + 1 and self._x0_prev is not None:
            raise ConfigError(f"DPM-Solver++ steps run in order: step {i} after step {self._last}")
        dtype, x, out = x.dtype, _f32(x), _f32(model_output)
        alpha_s, sigma_s = self._alpha_sigma(self.sigmas[i])
        kind = self.config.prediction_type
        x0 = (x - sigma_s * out) / alpha_s if kind == "epsilon" else \
            alpha_s * x - sigma_s * out if kind == "v_prediction" else out
        if self.config.clip_sample:
            x0 = np.clip(x0, np.float32(-1), np.float32(1))
        alpha_t, sigma_t = self._alpha_sigma(self.sigmas[i + 1])
        h = self._lambda(alpha_t, sigma_t) - self._lambda(alpha_s, sigma_s)
        with np.errstate(divide="ignore", invalid="ignore"):
            first = self._x0_prev is None or i == self.num_inference_steps - 1
            if first:
                x_next = (sigma_t / sigma_s) * x - (alpha_t * (np.exp(-h) - np.float32(1))) * x0
            else:
                alpha_p, sigma_p = self._alpha_sigma(self.sigmas[i - 1])
                r0 = (self._lambda(alpha_s, sigma_s) - self._lambda(alpha_p, sigma_p)) / h
                d0, d1 = x0, (np.float32(1) / r0) * (x0 - self._x0_prev)
                x_next = ((sigma_t / sigma_s) * x - (alpha_t * (np.exp(-h) - np.float32(1))) * d0
                          - np.float32(0.5) * (alpha_t * (np.exp(-h) - np.float32(1))) * d1)
        self._x0_prev, self._last = x0, i
        return x_next.astype(dtype)

    def add_noise_at(self, x0: np.ndarray, noise: np.ndarray, i: int) -> np.ndarray:
        """``alpha_i x0 + sigma_i noise`` at step ``i``'s sigma (diffusers' ``add_noise`` from the begin index)."""
        alpha, sigma = self._alpha_sigma(self.sigmas[_check_index(i, self.num_inference_steps)])
        return (alpha * _f32(x0) + sigma * _f32(noise)).astype(x0.dtype)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray:
        hits = np.nonzero(self.timesteps == np.float32(t))[0]
        if not len(hits):
            raise ConfigError(f"timestep {t!r} is not one of this schedule's {self.timesteps.tolist()}")
        return self.add_noise_at(x0, noise, int(hits[1] if len(hits) > 1 else hits[0]))


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _x0_and_eps(kind: str, model_output: np.ndarray, x: np.ndarray, abar_t: np.float32):
    """Predicted clean latent and noise from the model output, in float32.

    ``epsilon``: ``x0 = (x - sqrt(1-abar) eps) / sqrt(abar)``. ``v_prediction`` (Salimans &
    Ho 2022, Sec. 4): ``x0 = sqrt(abar) x - sqrt(1-abar) v``, ``eps = sqrt(abar) v +
    sqrt(1-abar) x``. ``sample``: ``x0`` is the output.
    """
    x, out = _f32(x), _f32(model_output)
    a, b = np.sqrt(abar_t), np.sqrt(1 - abar_t)
    if kind == "epsilon":
        return (x - b * out) / a, out
    if kind == "v_prediction":
        return a * x - b * out, a * out + b * x
    return out, (x - a * out) / b


SCHEDULER_CLASSES = {"ddim": DDIMScheduler, "euler": EulerScheduler, "euler-a": EulerAncestralScheduler,
                     "dpmpp-2m": DPMSolverPP2MScheduler,
                     "dpmpp-2m-karras": lambda c, n, eta=0.0: DPMSolverPP2MScheduler(c, n, eta=eta, karras=True)}


def check_strength(strength) -> float:
    """``strength`` as a float in (0, 1], or a ConfigError naming it."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ConfigError(f"strength {strength!r} must be a number in (0, 1] (1: start from pure noise)")
    return float(strength)


def start_latents(scheduler: Scheduler, noise: np.ndarray, init: np.ndarray | None = None,
                  strength: float = 1.0) -> tuple[np.ndarray, int]:
    """The first latent and the index of the first step, for sampling from noise or from an image.

    ``strength`` 1 starts from pure noise (``noise * init_noise_sigma``, every step runs; ``init``
    is not used). Below 1 it is img2img as diffusers' pipelines define it: the last
    ``int(n * strength)`` of the ``n`` steps run, from ``init`` (clean latents, the shape of
    ``noise``) noised to the first of them by ``add_noise``; the pixels a low strength leaves
    are the init's. At least one step must run.
    """
    strength = check_strength(strength)
    n = len(scheduler.timesteps)
    if strength == 1.0:
        return noise * np.float32(scheduler.init_noise_sigma), 0
    run = min(int(n * strength), n)
    if run < 1:
        raise ConfigError(f"strength {strength} with {n} steps runs no denoising step (int({n} x {strength}) = 0)",
                          hint="raise the strength or the number of steps")
    if init is None:
        raise ConfigError(f"strength {strength} needs an image to start from (strength 1 starts from noise)")
    if tuple(init.shape) != tuple(noise.shape):
        raise ConfigError(f"the image to start from encodes to {tuple(init.shape)}, the sampler's latents are "
                          f"{tuple(noise.shape)}", hint="give the condition image at the output size")
    start = n - run
    return scheduler.add_noise_at(init.astype(noise.dtype), noise, start), start


def make_scheduler(name: str, config: SchedulerConfig, num_inference_steps: int, *,
                   eta: float = 0.0) -> Scheduler:
    """Build the ``name`` sampler (one of :data:`SCHEDULERS`) for ``num_inference_steps``
    steps. ``eta`` is DDIM's noise weight (0: deterministic)."""
    _one_of("scheduler", name, SCHEDULERS)
    return SCHEDULER_CLASSES[name](config, num_inference_steps, eta=eta)
