"""PSNR and SSIM against closed forms and a by-hand evaluation of the SSIM formula."""

import math

import numpy as np
import pytest

from taskfold.errors import DataError
from taskfold.train.metrics import gaussian_window, psnr, ssim, ssim_map

from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # the dev extra installs it


def random_image(seed, shape=(24, 20, 3)):
    return np.random.default_rng(seed).uniform(0, 1, shape)


def test_psnr_closed_forms():
    a = random_image(0) * 0.8
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)  # 10 log10(1 / 0.1^2)
    assert psnr(a, a - 0.01) == pytest.approx(40.0, abs=1e-9)
    u = np.full((8, 8, 3), 100, dtype=np.uint8)
    assert psnr(u, u + 5) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)  # 34.15 dB, range 255 from uint8
    # half the pixels off by 0.2: MSE 0.02
    b = a.copy()
    b[::2] += 0.2
    assert psnr(a, b) == pytest.approx(10 * math.log10(1 / 0.02), abs=1e-9)
    assert psnr(a * 2, b * 2, data_range=2.0) == pytest.approx(psnr(a, b), abs=1e-9)


def test_ssim_identical_is_one():
    a = random_image(1)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a[:, :, 0], a[:, :, 0]) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_flat_images_is_the_luminance_term():
    """Flat images have zero variance, so SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)."""
    c1 = (0.01 * 1.0) ** 2
    for m1, m2 in ((0.5, 0.25), (0.1, 0.9), (0.3, 0.3)):
        expected = (2 * m1 * m2 + c1) / (m1 ** 2 + m2 ** 2 + c1)
        got = ssim(np.full((16, 16, 3), m1), np.full((16, 16, 3), m2))
        assert got == pytest.approx(expected, abs=1e-12)
    # by hand: (2 x 0.5 x 0.25 + 0.0001) / (0.25 + 0.0625 + 0.0001) = 0.2501 / 0.3126
    assert ssim(np.full((16, 16), 0.5), np.full((16, 16), 0.25)) == pytest.approx(0.800064, abs=1e-6)


def test_ssim_map_matches_the_formula_at_one_window():
    """Evaluate Wang et al. (2004) eq. 13 with weighted statistics (eqs. 14-16) by hand at one position."""
    a, b = random_image(2, (16, 16)), random_image(3, (16, 16))
    w = np.outer(gaussian_window(1.5, 5), gaussian_window(1.5, 5))
    assert w.sum() == pytest.approx(1.0)
    top, left = 3, 2  # the window whose top-left pixel is (3, 2): map entry [3, 2]
    x, y = a[top:top + 11, left:left + 11], b[top:top + 11, left:left + 11]
    mx, my = (w * x).sum(), (w * y).sum()
    sx2, sy2 = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    sxy = (w * (x - mx) * (y - my)).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sx2 + sy2 + c2))
    got = ssim_map(a, b)
    assert got.shape == (1, 6, 6)
    assert got[0, top, left] == pytest.approx(expected, abs=1e-12)


def test_ssim_properties():
    a = random_image(4)
    noisy = np.clip(a + np.random.default_rng(5).normal(0, 0.05, a.shape), 0, 1)
    noisier = np.clip(a + np.random.default_rng(5).normal(0, 0.2, a.shape), 0, 1)
    assert 1.0 > ssim(a, noisy) > ssim(a, noisier) > 0.0
    assert ssim(a, noisy) == pytest.approx(ssim(noisy, a), abs=1e-12)
    assert ssim(a, 1 - a) < 0  # inverted structure
    # channel-averaged: the mean of the per-channel values
    per_channel = [ssim(a[:, :, c], noisy[:, :, c]) for c in range(3)]
    assert ssim(a, noisy) == pytest.approx(np.mean(per_channel), abs=1e-12)
    assert ssim(a.transpose(2, 0, 1), noisy.transpose(2, 0, 1), channel_axis=0) == pytest.approx(ssim(a, noisy))
    u8 = (a * 255).round().astype(np.uint8)
    assert ssim(u8, u8) == pytest.approx(1.0)


def test_ssim_matches_scikit_image():
    a = random_image(6, (32, 32, 3))
    b = np.clip(a + np.random.default_rng(7).normal(0, 0.1, a.shape), 0, 1)
    # Wang et al.'s settings in scikit-image; it averages its map with the window's half
    # width cropped from each border, which is our valid region (checked equal with 0.26.0).
    mean, full = structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False, full=True)
    np.testing.assert_allclose(full[5:-5, 5:-5].transpose(2, 0, 1), ssim_map(a, b), atol=1e-9)
    assert ssim(a, b) == pytest.approx(mean, abs=1e-9)
    gray = structural_similarity(a[:, :, 0], b[:, :, 0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    assert ssim(a[:, :, 0], b[:, :, 0]) == pytest.approx(gray, abs=1e-9)


def test_psnr_matches_scikit_image():
    rng = np.random.default_rng(8)
    a = rng.uniform(0, 1, (32, 32, 3))
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    assert psnr(a, b, data_range=1.0) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)
    u, v = (np.rint(x * 255).astype(np.uint8) for x in (a, b))
    assert psnr(u, v) == pytest.approx(peak_signal_noise_ratio(u, v), abs=1e-9)  # range 255 from uint8


def test_bad_inputs():
    a = random_image(8)
    with pytest.raises(DataError, match=r"images to compare differ in shape: \(24, 20, 3\) vs \(20, 24, 3\)"):
        psnr(a, a.transpose(1, 0, 2))
    with pytest.raises(DataError, match="image of 8x8 pixels is smaller than the 11x11 SSIM window"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(DataError, match="cannot tell the value range of images of dtype int64 and int64"):
        psnr(np.zeros((4, 4), dtype=np.int64), np.ones((4, 4), dtype=np.int64))
    assert psnr(np.zeros((4, 4), dtype=np.int64), np.ones((4, 4), dtype=np.int64), data_range=255) == \
        pytest.approx(20 * math.log10(255))
