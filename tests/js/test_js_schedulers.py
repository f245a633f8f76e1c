"""The JS schedulers follow ``runtime/schedulers.py`` step for step: timesteps, the UNet's scaled input and the
latent after every step, for every scheduler under each noise schedule, prediction type and spacing the
Python module implements (given the same model outputs and the same seeded ancestral noise)."""

from __future__ import annotations

import itertools
import json

import numpy as np

from taskfold.runtime.noise import noise_source
from taskfold.runtime.schedulers import SCHEDULERS, SchedulerConfig, make_scheduler, start_latents

from .conftest import run_node

CONFIGS = {
    "sd15": {},
    "ddpm-linear-clip": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "clip_sample": True},
    "cosine-v": {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"},
    "trailing": {"timestep_spacing": "trailing", "set_alpha_to_one": True},
    "leading-sample": {"timestep_spacing": "leading", "prediction_type": "sample", "steps_offset": 0},
    "linspace": {"timestep_spacing": "linspace", "num_train_timesteps": 500},
}


def _cases():
    rng = np.random.default_rng(0)
    out = []
    for (name, cfg), sched, (steps, strength) in itertools.product(CONFIGS.items(), SCHEDULERS,
                                                                   [(7, 1.0), (10, 0.55), (1, 1.0)]):
        if sched == "euler-a" and cfg.get("prediction_type") == "sample":
            continue  # not implemented (nor in diffusers)
        x = rng.standard_normal(24).astype(np.float32)
        outs = (rng.standard_normal((steps, 24)) * 0.8).astype(np.float32)
        init = rng.uniform(-1, 1, 24).astype(np.float32) if strength < 1 else None
        out.append({"id": f"{name}/{sched}/{steps}x{strength}", "scheduler": sched, "config": cfg, "steps": steps,
                     "seed": len(out), "x": x.tolist(), "outputs": outs.tolist(), "strength": strength,
                     "init": None if init is None else init.tolist()})
    return out


def _python(c):
    s = make_scheduler(c["scheduler"], SchedulerConfig.from_diffusers_config(c["config"]), c["steps"])
    source = noise_source(c["seed"])
    init = None if c["init"] is None else np.array(c["init"], np.float32)
    x, start = start_latents(s, np.array(c["x"], np.float32), init, c["strength"])
    latents, inputs = [x], []
    for i in range(start, len(s.timesteps)):
        inputs.append(s.scale_model_input(x, i))
        x = s.step(np.array(c["outputs"][i - start], np.float32), i, x, generator=source)
        latents.append(x)
    return s, start, latents, inputs


def test_js_schedulers_match_step_for_step(node, tmp_path):
    cases = _cases()
    (tmp_path / "in.json").write_text(json.dumps({"cases": cases}))
    done = run_node(["tools/scheduler_steps.mjs", str(tmp_path / "in.json"), str(tmp_path / "out.json")])
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads((tmp_path / "out.json").read_text())
    worst, exact = 0.0, 0
    for c in cases:
        g = got[c["id"]]
        assert "error" not in g, (c["id"], g)
        s, start, latents, inputs = _python(c)
        np.testing.assert_array_equal(np.array(g["timesteps"], np.float32), s.timesteps, err_msg=c["id"])
        assert g["start"] == start and np.float32(g["init_noise_sigma"]) == np.float32(s.init_noise_sigma), c["id"]
        for a, b in zip(g["inputs"] + g["latents"], inputs + latents):
            a, b = np.array(a, np.float32), np.asarray(b, np.float32)
            err = float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max())))
            worst, exact = max(worst, err), exact + int(err == 0)
    print(f"{len(cases)} scheduler runs: worst relative difference {worst:.1e}; {exact} of "
          f"{sum(len(got[c['id']]['latents']) + len(got[c['id']]['inputs']) for c in cases)} arrays bit-identical")
    assert worst < 1e-5  # float32 arithmetic in Python's order: at most a few ulps from exp/log/pow
