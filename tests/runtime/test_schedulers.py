"""The numpy schedulers against diffusers' ``DDIMScheduler`` and ``EulerDiscreteScheduler``.

Tolerance: latents agree within ``ATOL = 1e-5`` max abs error at every step. Both sides
are float32 and evaluate the same formulas in the same order, from bit-identical tables
(checked exactly below), so most steps agree to the bit. What remains is torch's float32
``sqrt`` on CPU, which is not correctly rounded with its AVX-512 kernels (one ulp off for
about 18% of the ``abar`` table, unlike numpy's), and float32 rounding (ulp 3.8e-6) of
Euler's first latents, whose magnitude reaches ~50 (``sigma_max * |noise|``). Measured
worst case over the grid: 3.8e-6.

The fake UNet is ``eps = x_in + sin(t / 100)``: it calls its input the noise, as a real
model nearly does at high noise, so latents keep SD-like magnitudes (DDIM: < 4; Euler:
from ~50 down to ~2). ``0.1 * x_in + sin(t / 100)`` instead makes DDIM's ``x0`` estimate
``(x - sqrt(1 - abar) eps) / sqrt(abar)`` grow the latents to ~30, where those one-ulp
coefficient differences compound to ~2.5e-5 after 50 steps -- the spread diffusers itself
shows between CPUs with and without AVX-512, not a scheduler error.
"""

from __future__ import annotations

import math
import re

import diffusers
import numpy as np
import pytest
import torch

from taskfold.errors import ConfigError
from taskfold.runtime.noise import noise_source, normal
from taskfold.runtime.schedulers import (
    DEFAULT_SPACING,
    DDIMScheduler,
    EulerScheduler,
    SchedulerConfig,
    alphas_cumprod,
    betas,
    make_scheduler,
    start_latents,
)

ATOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
SPACINGS = ("leading", "linspace", "trailing")
SHAPE = (2, 4, 8, 8)

# scheduler_config.json of runwayml/stable-diffusion-v1-5 (a PNDM config; no timestep_spacing).
SD15_SCHEDULER_JSON = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    "clip_sample": False,
}


def fake_unet(x_in: np.ndarray, t: float) -> np.ndarray:
    """Deterministic stand-in for a UNet, shared bit for bit by both loops."""
    return (x_in + np.float32(math.sin(t / 100))).astype(np.float32)


def reference(name: str, cfg: SchedulerConfig, spacing: str | None = None):
    """The diffusers scheduler for ``cfg`` (``spacing`` overrides its timestep_spacing)."""
    kwargs = dict(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                  beta_end=cfg.beta_end, beta_schedule=cfg.beta_schedule,
                  prediction_type=cfg.prediction_type, steps_offset=cfg.steps_offset,
                  timestep_spacing=spacing or cfg.timestep_spacing or DEFAULT_SPACING[name])
    if name == "ddim":
        return diffusers.DDIMScheduler(**kwargs, clip_sample=cfg.clip_sample,
                                       set_alpha_to_one=cfg.set_alpha_to_one)
    return diffusers.EulerDiscreteScheduler(**kwargs, interpolation_type="linear")


def noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE, dtype=np.float32)


def run_ours(sched, x_T: np.ndarray, generator=None) -> list[np.ndarray]:
    x = x_T * sched.init_noise_sigma
    latents = [x]
    for i, t in enumerate(sched.timesteps):
        x = sched.step(fake_unet(sched.scale_model_input(x, i), float(t)), i, x, generator=generator)
        latents.append(x)
    return latents


def run_diffusers(ref, steps: int, x_T: np.ndarray, eta: float = 0.0, variance_noise=None):
    ref.set_timesteps(steps)
    x = torch.from_numpy(x_T) * ref.init_noise_sigma
    latents = [x.numpy()]
    for t in ref.timesteps:
        eps = torch.from_numpy(fake_unet(ref.scale_model_input(x, t).numpy(), float(t)))
        kwargs = {}
        if eta > 0:
            kwargs = dict(eta=eta, variance_noise=torch.from_numpy(variance_noise()))
        x = ref.step(eps, t, x, **kwargs).prev_sample
        latents.append(x.numpy())
    return latents


def max_errors(ours: list[np.ndarray], theirs: list[np.ndarray]) -> np.ndarray:
    assert len(ours) == len(theirs)
    return np.array([np.abs(a - b).max() for a, b in zip(ours, theirs)])


# --- tables and timesteps ---------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_tables_are_bit_identical_to_diffusers(schedule):
    cfg = SchedulerConfig(beta_start=0.0001, beta_end=0.02, beta_schedule=schedule)
    ref = reference("ddim", cfg, "leading")
    np.testing.assert_array_equal(betas(cfg), ref.betas.numpy())
    np.testing.assert_array_equal(alphas_cumprod(cfg), ref.alphas_cumprod.numpy())
    assert alphas_cumprod(cfg).dtype == np.float32


@pytest.mark.parametrize("name", ["ddim", "euler"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_timesteps_match_diffusers_for_every_step_count(name, spacing):
    """Every n in 1..1000: timesteps exactly, Euler's sigmas to 2 float32 ulps. Where
    diffusers' float ``arange`` gives ``trailing`` an (n+1)-th timestep -1, ours stops at n
    and agrees on those n."""
    cfg = SchedulerConfig(timestep_spacing=spacing)
    ref = reference(name, cfg)
    extra = []
    for n in range(1, 1001):
        if name == "ddim" and spacing == "leading" and n == 1000:
            continue  # reaches timestep 1000: diffusers indexes past its table, ours raises
        ours = make_scheduler(name, cfg, n)
        ref.set_timesteps(n)
        theirs = ref.timesteps.numpy().astype(np.float32)
        assert ours.timesteps.dtype == np.float32 and len(ours.timesteps) == n
        if len(theirs) == n + 1:
            assert spacing == "trailing" and theirs[-1] == -1
            extra.append(n)
        np.testing.assert_array_equal(ours.timesteps, theirs[:n], err_msg=f"n={n}")
        if name == "euler" and len(theirs) == n:  # a few ulps: torch's sqrt is not numpy's
            np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=3e-7, atol=0, err_msg=f"n={n}")
            assert ours.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=3e-7)
    assert (len(extra) > 0) == (spacing == "trailing")


def test_sd15_leading_timesteps_by_value():
    ddim = make_scheduler("ddim", SchedulerConfig(), 20)
    np.testing.assert_array_equal(ddim.timesteps, np.arange(951, 0, -50, dtype=np.float32))
    assert make_scheduler("ddim", SchedulerConfig(), 1).timesteps.tolist() == [1.0]
    euler = make_scheduler("euler", SchedulerConfig(timestep_spacing="linspace"), 3)
    assert euler.timesteps.tolist() == [999.0, 499.5, 0.0]
    assert euler.sigmas[-1] == 0.0 and euler.init_noise_sigma == pytest.approx(14.6146, abs=1e-4)


# --- sampling loops ----------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 20, 50])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_sampling_loop_matches_diffusers_at_every_step(name, prediction_type, spacing, steps):
    cfg = SchedulerConfig(prediction_type=prediction_type, timestep_spacing=spacing)
    ours = make_scheduler(name, cfg, steps)
    errors = max_errors(run_ours(ours, noise()), run_diffusers(reference(name, cfg), steps, noise()))
    assert errors.max() <= ATOL, f"worst step {errors.argmax()}: {errors.max():.2e}"


@pytest.mark.parametrize("name", ["ddim", "euler"])
@pytest.mark.parametrize("cfg", [
    SchedulerConfig(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", steps_offset=0),
    SchedulerConfig(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="trailing"),
    SchedulerConfig(prediction_type="sample", clip_sample=True, timestep_spacing="linspace"),
    SchedulerConfig(set_alpha_to_one=True, steps_offset=0),
], ids=["linear", "cosine-v", "sample-clipped", "alpha-to-one"])
def test_other_schedules_and_options_match_diffusers(name, cfg):
    """ATOL, or 4 float32 ulps of the latent where that is coarser: with the linear schedule
    Euler starts at sigma_max ~ 157, latents ~ 500, where one ulp is already 3e-5."""
    ours = run_ours(make_scheduler(name, cfg, 25), noise(1))
    theirs = run_diffusers(reference(name, cfg), 25, noise(1))
    errors = max_errors(ours, theirs)
    tolerances = np.array([max(ATOL, 4 * np.spacing(np.abs(x).max())) for x in theirs])
    worst = np.argmax(errors / tolerances)
    assert errors[worst] <= tolerances[worst], f"step {worst}: {errors[worst]:.2e} > {tolerances[worst]:.2e}"


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_eta_matches_diffusers_given_the_same_noise(eta):
    """Our noise comes from the runtime's noise source; diffusers gets the same draws as variance_noise."""
    cfg = SchedulerConfig()
    twin = noise_source(7)
    ours = run_ours(make_scheduler("ddim", cfg, 20, eta=eta), noise(), generator=noise_source(7))
    theirs = run_diffusers(reference("ddim", cfg), 20, noise(), eta=eta,
                           variance_noise=lambda: normal(twin, SHAPE))
    assert max_errors(ours, theirs).max() <= ATOL
    deterministic = run_ours(make_scheduler("ddim", cfg, 20), noise())
    assert np.abs(ours[-1] - deterministic[-1]).max() > 0.1  # the noise was really added


@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_add_noise_matches_diffusers(name):
    cfg = SchedulerConfig()
    ours, ref = make_scheduler(name, cfg, 30), reference(name, cfg)
    ref.set_timesteps(30)
    x0, eps = noise(2), noise(3)
    for k in (0, 7, 29):
        t = ours.timesteps[[k, 29 - k]]  # one timestep per sample
        theirs = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(eps), ref.timesteps[[k, 29 - k]])
        np.testing.assert_allclose(ours.add_noise(x0, eps, t), theirs.numpy(), rtol=0, atol=1e-6)


def test_euler_add_noise_interpolates_sigma_between_integer_timesteps():
    euler = make_scheduler("euler", SchedulerConfig(), 10)
    x0, eps = np.zeros((1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1), np.float32)
    s10, s11, s105 = (euler.add_noise(x0, eps, t).item() for t in (10, 11, 10.5))
    assert s10 == pytest.approx(euler.train_sigmas[10]) and s11 == pytest.approx(euler.train_sigmas[11])
    assert s105 == pytest.approx((s10 + s11) / 2, rel=1e-6)


def test_steps_keep_float16_and_scale_model_input_by_sigma():
    euler = make_scheduler("euler", SchedulerConfig(), 10)
    x = noise().astype(np.float16)
    assert euler.step(x, 0, x).dtype == np.float16
    scaled = euler.scale_model_input(np.ones(1, np.float32), 0)
    assert scaled.item() == pytest.approx(1 / math.sqrt(float(euler.sigmas[0]) ** 2 + 1), rel=1e-6)
    ddim = make_scheduler("ddim", SchedulerConfig(), 10)
    assert ddim.step(x, 0, x).dtype == np.float16 and ddim.scale_model_input(x, 3) is x


# --- config ------------------------------------------------------------------------------------


def test_sd15_config_and_spacing_defaults_match_diffusers_from_config():
    """No timestep_spacing key: DDIM uses 'leading', Euler 'linspace', as diffusers' from_config."""
    cfg = SchedulerConfig.from_diffusers_config(SD15_SCHEDULER_JSON)
    assert cfg == SchedulerConfig()
    for name, cls in (("ddim", diffusers.DDIMScheduler), ("euler", diffusers.EulerDiscreteScheduler)):
        ref = cls.from_config(SD15_SCHEDULER_JSON)
        ref.set_timesteps(30)
        ours = make_scheduler(name, cfg, 30)
        assert ours.spacing == ref.config.timestep_spacing
        np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy().astype(np.float32))


def test_from_diffusers_config_reads_values_and_ignores_unknown_keys():
    cfg = SchedulerConfig.from_diffusers_config({
        "_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 500, "beta_start": 0.0001,
        "beta_end": 0.02, "beta_schedule": "linear", "prediction_type": "v_prediction",
        "timestep_spacing": "trailing", "steps_offset": 0, "interpolation_type": "linear",
        "use_karras_sigmas": False, "sigma_min": None, "some_future_key": 3})
    assert cfg == SchedulerConfig(num_train_timesteps=500, beta_start=0.0001, beta_end=0.02,
                                  beta_schedule="linear", prediction_type="v_prediction",
                                  timestep_spacing="trailing", steps_offset=0)
    assert SchedulerConfig.from_diffusers_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize("patch, words", [
    ({"beta_schedule": "sigmoid"}, ["'sigmoid'", "linear, scaled_linear, squaredcos_cap_v2"]),
    ({"prediction_type": "flow"}, ["'flow'", "epsilon, v_prediction, sample"]),
    ({"timestep_spacing": "karras"}, ["'karras'", "leading, linspace, trailing"]),
    ({"rescale_betas_zero_snr": True}, ["rescale_betas_zero_snr", "False"]),
    ({"use_karras_sigmas": True}, ["use_karras_sigmas"]),
    ({"trained_betas": [0.1, 0.2]}, ["trained_betas"]),
    ({"clip_sample": True, "clip_sample_range": 2.0}, ["clip_sample_range", "2.0"]),
    ({"num_train_timesteps": "1000"}, ["num_train_timesteps", "int"]),
    ({"beta_start": 0.5, "beta_end": 0.1}, ["beta_start 0.5", "beta_end 0.1"]),
])
def test_from_diffusers_config_rejects_unsupported_values(patch, words):
    with pytest.raises(ConfigError) as info:
        SchedulerConfig.from_diffusers_config({**SD15_SCHEDULER_JSON, **patch})
    assert all(w in str(info.value) for w in words), str(info.value)


def test_make_scheduler_errors_name_the_bad_value():
    with pytest.raises(ConfigError, match="'dpm'.*ddim, euler"):
        make_scheduler("dpm", SchedulerConfig(), 20)
    for steps in (0, 1001, 2.5):
        with pytest.raises(ConfigError, match=r"num_inference_steps .* \[1, 1000\]"):
            make_scheduler("ddim", SchedulerConfig(), steps)
    with pytest.raises(ConfigError, match="reach timestep 1000"):
        make_scheduler("ddim", SchedulerConfig(), 1000)
    leading = SchedulerConfig(timestep_spacing="leading")  # diffusers clamps sigma(1000) to sigma(999)
    assert make_scheduler("euler", leading, 1000).timesteps[0] == 1000.0
    with pytest.raises(ConfigError, match="eta 0.3"):
        make_scheduler("euler", SchedulerConfig(), 20, eta=0.3)
    with pytest.raises(ConfigError, match="timestep"):
        make_scheduler("ddim", SchedulerConfig(), 20).add_noise(noise(), noise(), 12.5)
    with pytest.raises(IndexError, match="step index 20"):
        make_scheduler("ddim", SchedulerConfig(), 20).step(noise(), 20, noise())
    assert isinstance(make_scheduler("ddim", SchedulerConfig(), 5), DDIMScheduler)
    assert isinstance(make_scheduler("euler", SchedulerConfig(), 5), EulerScheduler)


# --- img2img (strength) ----------------------------------------------------------------------


@pytest.mark.parametrize("strength", [0.3, 0.55, 0.999])
@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_img2img_start_and_loop_match_diffusers_img2img(name, strength):
    """diffusers' img2img: ``StableDiffusionImg2ImgPipeline.get_timesteps`` picks the steps that
    run, ``prepare_latents`` noises the image to the first of them with ``add_noise``, then the
    usual loop. The pipeline method runs here on a stand-in object holding the scheduler."""
    from types import SimpleNamespace

    from diffusers import StableDiffusionImg2ImgPipeline

    cfg, steps = SchedulerConfig(), 20
    ours, ref = make_scheduler(name, cfg, steps), reference(name, cfg)
    ref.set_timesteps(steps)
    timesteps, run = StableDiffusionImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=ref), steps, strength,
                                                                  "cpu")
    init, eps = noise(4), noise(5)
    x, start = start_latents(ours, eps, init, strength)
    assert start == steps - run and run == int(steps * strength)
    np.testing.assert_array_equal(ours.timesteps[start:], timesteps.numpy().astype(np.float32))
    x_ref = ref.add_noise(torch.from_numpy(init), torch.from_numpy(eps), timesteps[:1])
    np.testing.assert_allclose(x, x_ref.numpy(), rtol=0, atol=1e-6)
    for i in range(start, steps):
        x = ours.step(fake_unet(ours.scale_model_input(x, i), float(ours.timesteps[i])), i, x)
    xr = x_ref
    for t in timesteps:
        out = torch.from_numpy(fake_unet(ref.scale_model_input(xr, t).numpy(), float(t)))
        xr = ref.step(out, t, xr).prev_sample
    assert np.abs(x - xr.numpy()).max() <= ATOL
    assert np.abs(x - run_ours(ours, eps)[-1]).max() > 0.1  # the image, not the noise alone, set the start


def test_strength_one_is_pure_noise_and_low_strength_keeps_the_image():
    sched = make_scheduler("ddim", SchedulerConfig(), 20)
    init, eps = noise(4), noise(5)
    x, start = start_latents(sched, eps, init, 1.0)
    assert start == 0 and np.array_equal(x, eps * np.float32(sched.init_noise_sigma))
    x, start = start_latents(sched, eps, init, 0.05)  # one step, from timestep 1 (abar ~ 0.998)
    assert start == 19 and sched.timesteps[19] == 1
    assert np.abs(x - init).max() < 0.25 and np.abs(x - init).max() > 0


@pytest.mark.parametrize("strength, words", [
    (0.0, "must be a number in (0, 1]"), (1.5, "must be a number in (0, 1]"), (True, "must be a number"),
    ("0.5", "must be a number"), (0.04, "runs no denoising step"),
])
def test_bad_strength_is_refused_by_name(strength, words):
    sched = make_scheduler("ddim", SchedulerConfig(), 20)
    with pytest.raises(ConfigError, match=re.escape(words)) as e:
        start_latents(sched, noise(5), noise(4), strength)
    assert repr(strength) in str(e.value) or str(strength) in str(e.value)


def test_img2img_needs_an_image_of_the_latent_shape():
    sched = make_scheduler("ddim", SchedulerConfig(), 20)
    with pytest.raises(ConfigError, match="needs an image to start from"):
        start_latents(sched, noise(5), None, 0.5)
    with pytest.raises(ConfigError, match=re.escape("encodes to (2, 4, 4, 4)")):
        start_latents(sched, noise(5), noise(4)[:, :, :4, :4], 0.5)


# --- DPM-Solver++ 2M (Karras) and Euler ancestral ------------------------------------------------


def reference_more(name: str, cfg: SchedulerConfig, spacing: str):
    kwargs = dict(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                  beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type,
                  steps_offset=cfg.steps_offset, timestep_spacing=spacing)
    if name == "euler-a":
        return diffusers.EulerAncestralDiscreteScheduler(**kwargs)
    return diffusers.DPMSolverMultistepScheduler(**kwargs, algorithm_type="dpmsolver++", solver_order=2,
                                                 use_karras_sigmas=name == "dpmpp-2m-karras")


def _torch_noise(seed):
    """The draws diffusers' ancestral step takes from a CPU generator (``randn_tensor``), as numpy."""
    g = torch.Generator().manual_seed(seed)
    return lambda: torch.randn(SHAPE, generator=g, dtype=torch.float32).numpy()


def run_more(name, sched, x_T, draw=None):
    x = x_T * np.float32(sched.init_noise_sigma)
    out = [x]
    for i, t in enumerate(sched.timesteps):
        eps = fake_unet(sched.scale_model_input(x, i), float(t))
        x = sched.step(eps, i, x, noise=draw()) if name == "euler-a" else sched.step(eps, i, x)
        out.append(x)
    return out


def run_diffusers_more(name, ref, steps, x_T, seed=0):
    ref.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(x_T) * ref.init_noise_sigma
    out = [x.numpy()]
    for t in ref.timesteps:
        eps = torch.from_numpy(fake_unet(ref.scale_model_input(x, t).numpy(), float(t)))
        x = ref.step(eps, t, x, generator=g).prev_sample if name == "euler-a" else ref.step(eps, t, x).prev_sample
        out.append(x.numpy())
    return out


@pytest.mark.parametrize("steps", [1, 2, 8, 20, 30])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", ["euler-a", "dpmpp-2m", "dpmpp-2m-karras"])
def test_new_samplers_match_diffusers_at_every_step(name, prediction_type, spacing, steps):
    cfg = SchedulerConfig(prediction_type=prediction_type, timestep_spacing=spacing)
    ours = make_scheduler(name, cfg, steps)
    ref = reference_more(name, cfg, spacing)
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy().astype(np.float32))
    np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=2e-7, atol=0)
    theirs = run_diffusers_more(name, ref, steps, noise())
    errors = max_errors(run_more(name, ours, noise(), _torch_noise(0)), theirs)
    tolerances = np.array([max(ATOL, 4 * np.spacing(np.abs(x).max())) for x in theirs])
    worst = np.argmax(errors / tolerances)
    assert errors[worst] <= tolerances[worst], f"step {worst}: {errors[worst]:.2e} > {tolerances[worst]:.2e}"


def test_euler_ancestral_adds_noise_and_dpm_runs_its_steps_in_order():
    cfg = SchedulerConfig()
    ea = make_scheduler("euler-a", cfg, 10)
    a = run_more("euler-a", ea, noise(), _torch_noise(0))[-1]
    b = run_more("euler-a", make_scheduler("euler-a", cfg, 10), noise(), _torch_noise(1))[-1]
    assert np.abs(a - b).max() > 0.1  # fresh noise every step
    seeded = [make_scheduler("euler-a", cfg, 10).step(noise(), 0, noise(), generator=noise_source(3))
              for _ in range(2)]
    np.testing.assert_array_equal(*seeded)  # the sampler's own numpy stream is seeded
    dpm = make_scheduler("dpmpp-2m", cfg, 10)
    dpm.step(noise(), 0, noise())
    with pytest.raises(ConfigError, match="steps run in order: step 5 after step 0"):
        dpm.step(noise(), 5, noise())


@pytest.mark.parametrize("strength", [0.3, 0.75])
@pytest.mark.parametrize("name", ["dpmpp-2m", "dpmpp-2m-karras", "euler-a"])
def test_new_samplers_img2img_start_matches_diffusers(name, strength):
    from types import SimpleNamespace

    from diffusers import StableDiffusionImg2ImgPipeline

    cfg, steps = SchedulerConfig(), 20
    ours, ref = make_scheduler(name, cfg, steps), reference_more(name, cfg, DEFAULT_SPACING[name])
    ref.set_timesteps(steps)
    timesteps, run = StableDiffusionImg2ImgPipeline.get_timesteps(SimpleNamespace(scheduler=ref), steps, strength,
                                                                  "cpu")
    init, eps = noise(4), noise(5)
    x, start = start_latents(ours, eps, init, strength)
    assert start == steps - run
    np.testing.assert_array_equal(ours.timesteps[start:], timesteps.numpy().astype(np.float32))
    x_ref = ref.add_noise(torch.from_numpy(init), torch.from_numpy(eps), timesteps[:1])
    np.testing.assert_allclose(x, x_ref.numpy(), rtol=0, atol=2e-6)
