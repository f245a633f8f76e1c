"""The sampling noise, defined once: what a seed means, in every language that runs a package.

A seed is an integer in ``[0, 2**32 - 1]`` (:func:`taskfold.config.check_seed`). One generate
call makes one source, :func:`noise_source`, and draws from it in this order: the initial
noise ``[B, C, h, w]`` first, then one draw of the latent's shape per ancestral step (Euler
ancestral; DDIM with ``eta > 0``). Each draw is :func:`normal`.

The source is NumPy's legacy ``RandomState`` — frozen by NumPy's policy, so a seed gives the
same numbers with every NumPy version — and small enough to re-implement exactly elsewhere
(the JavaScript runtime does):

* **MT19937** (Matsumoto & Nishimura 1998) seeded with ``init_genrand(seed)``;
* a **double** in [0, 1) from two 32-bit outputs ``a``, ``b``:
  ``((a >> 5) * 67108864 + (b >> 6)) / 9007199254740992`` (``genrand_res53``);
* a **standard normal** by the polar Box–Muller method in float64: draw ``x1 = 2 u1 - 1``,
  ``x2 = 2 u2 - 1`` until ``0 < r2 = x1² + x2² < 1``; ``f = sqrt(-2 log(r2) / r2)``; return
  ``f x2`` and keep ``f x1`` for the next draw (the spare survives between :func:`normal` calls
  on the same source);
* an array is filled in C order with float64 normals, then each is rounded to float32.

``tests/runtime/data/noise_fixture.json`` (written by ``tests/runtime/test_noise.py``) holds
the first outputs of each stage for a few seeds, for other implementations to compare with.
"""

from __future__ import annotations

import numpy as np

from taskfold.config import check_seed

NoiseSource = np.random.RandomState


def noise_source(seed: int | None) -> NoiseSource:
    """The seeded source of one generate call (``None``: seeded from the OS, for a caller that gave no source)."""
    return np.random.RandomState() if seed is None else np.random.RandomState(check_seed(seed, "seed"))


def normal(source: NoiseSource, shape) -> np.ndarray:
    """The next standard-normal draws of ``source`` as a float32 array of ``shape`` (see the module docstring)."""
    return source.standard_normal(tuple(shape)).astype(np.float32)
