"""The sampling noise (``taskfold.runtime.noise``): NumPy's legacy MT19937 stream, one source per generate call.

``data/noise_fixture.json`` holds the first outputs of every stage of the definition (MT19937
words, 53-bit doubles, polar Box–Muller normals, float32 arrays) for a few seeds, written from
NumPy by :func:`fixture`; the JavaScript runtime's tests compare their implementation with it.
Regenerate it with ``python -m tests.runtime.test_noise``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taskfold.errors import ConfigError
from taskfold.runtime.noise import noise_source, normal
from taskfold.runtime.sampler import Model, sample
from taskfold.runtime.schedulers import SchedulerConfig, make_scheduler
from taskfold.tasks import BUILTIN_TASKS

FIXTURE = Path(__file__).parent / "data" / "noise_fixture.json"
SEEDS = (0, 1, 2, 3, 2**32 - 1)
#: an array drawn in C order, its spare normal carried into the next draw of the same source
SHAPES = ((1, 4, 2, 3), (5,))


def fixture() -> dict:
    """Every stage of the definition for :data:`SEEDS`, from NumPy (JSON floats round-trip float64 exactly)."""
    seeds = []
    for seed in SEEDS:
        bits = np.random.MT19937()
        bits._legacy_seeding(seed)  # init_genrand(seed), as RandomState(seed)
        rs = np.random.RandomState(seed)
        state = rs.get_state()[1]
        doubles = np.random.RandomState(seed).random_sample(4)
        gauss = np.random.RandomState(seed).standard_normal(8)
        source = noise_source(seed)
        seeds.append({
            "seed": seed,
            "state_first": [int(v) for v in state[:4]], "state_last": int(state[-1]),
            "uint32": [int(v) for v in bits.random_raw(8)],
            "double": [float(v) for v in doubles],
            "gauss_float64": [float(v) for v in gauss],
            "arrays": [{"shape": list(s), "float32": [float(v) for v in normal(source, s).ravel()]} for s in SHAPES],
        })
    return {"definition": "taskfold.runtime.noise: numpy.random.RandomState(seed).standard_normal(shape) "
                          "cast to float32; draws in this order from one source per generate call",
            "numpy": np.__version__, "seeds": seeds}


def test_the_fixture_file_is_what_numpy_gives_now():
    want = fixture()
    got = json.loads(FIXTURE.read_text())
    assert got["seeds"] == want["seeds"]  # the legacy stream is frozen: any NumPy version writes the same


def test_noise_is_the_legacy_randomstate_stream_cast_to_float32():
    for seed in SEEDS:
        source = noise_source(seed)
        a, b = normal(source, (2, 4, 3, 3)), normal(source, (7,))
        twin = np.random.RandomState(seed)
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, twin.standard_normal((2, 4, 3, 3)).astype(np.float32))
        np.testing.assert_array_equal(b, twin.standard_normal(7).astype(np.float32))
    # the odd-sized first draw leaves a spare normal that the next draw starts with
    source, twin = noise_source(4), np.random.RandomState(4)
    first = twin.standard_normal(4)
    np.testing.assert_array_equal(normal(source, (3,)), first[:3].astype(np.float32))
    assert normal(source, (1,))[0] == np.float32(first[3])


def test_the_polar_method_written_out_gives_the_same_numbers():
    """The definition in the module docstring, step by step from MT19937 words: what another language writes."""
    bits = np.random.MT19937()
    bits._legacy_seeding(3)
    words = iter(int(w) for w in bits.random_raw(400))

    def double():
        a, b = next(words) >> 5, next(words) >> 6
        return (a * 67108864.0 + b) / 9007199254740992.0

    out = []
    while len(out) < 20:
        while True:
            x1, x2 = 2.0 * double() - 1.0, 2.0 * double() - 1.0
            r2 = x1 * x1 + x2 * x2
            if 0.0 < r2 < 1.0:
                break
        f = float(np.sqrt(-2.0 * np.log(r2) / r2))
        out += [f * x2, f * x1]
    np.testing.assert_array_equal(np.array(out, np.float64), np.random.RandomState(3).standard_normal(20))


@pytest.mark.parametrize("seed", [-1, 2**32, 2**40, 1.0, True, "3"])
def test_seeds_outside_32_bits_are_refused(seed):
    with pytest.raises(ConfigError, match=r"seed .* is not an integer in \[0, 4294967295\]"):
        noise_source(seed)


def _fake_model(calls):
    def unet(x, t, h):  # the sample's noisy channels, scaled: a deterministic stand-in for the UNet
        calls.append(x.copy())
        return x[:, :3] * np.float32(0.1)
    return Model(unet, lambda p: np.zeros((len(p), 4, 8), np.float32), lambda im: im, lambda z: z)


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a"])
def test_one_source_per_call_initial_noise_then_every_ancestral_step(scheduler):
    """The sampler's first draw is the initial noise; euler-a's steps draw from the same source after it,
    so the same seed gives the same images (also with the ancestral sampler)."""
    spec = BUILTIN_TASKS["sr"]  # guidance none: one UNet call per step
    cond = np.zeros((1, 3, 4, 4), np.float32)
    kw = dict(scheduler_config={}, latent_shape=(3, 4, 4), condition=cond, steps=3, scheduler=scheduler,
              strength=1.0)
    calls = []
    got = sample(_fake_model(calls), spec, [""], seed=7, **kw)
    source = noise_source(7)
    sched = make_scheduler(scheduler, SchedulerConfig(), 3)
    x = normal(source, (1, 3, 4, 4)) * np.float32(sched.init_noise_sigma)
    for i in range(3):
        xin = sched.scale_model_input(x, i)
        np.testing.assert_array_equal(calls[i][:, :3], xin)
        x = sched.step(xin * np.float32(0.1), i, x, generator=source)
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(got, sample(_fake_model([]), spec, [""], seed=7, **kw))
    assert float(np.abs(got - sample(_fake_model([]), spec, [""], seed=8, **kw)).max()) > 1e-3


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps(fixture(), indent=1) + "\n")
    print(f"wrote {FIXTURE}")
