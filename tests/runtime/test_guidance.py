"""Classifier-free guidance combinators: formulas, batch order, and their identities."""

from __future__ import annotations

import numpy as np
import pytest

from taskfold.errors import ConfigError
from taskfold.runtime.guidance import (
    FULL,
    GUIDANCE_KINDS,
    IMAGE_ONLY,
    UNCOND,
    Conditioning,
    combine,
    dual_cfg,
    guidance_batches,
    none,
    text_cfg,
)


def eps(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 4, 8, 8), dtype=np.float32)


def test_text_cfg_by_value():
    out = text_cfg(np.array([0.0, 1.0, -2.0], np.float32), np.array([1.0, 3.0, -2.0], np.float32), 7.5)
    np.testing.assert_array_equal(out, [7.5, 16.0, -2.0])
    assert out.dtype == np.float32
    u, c = eps(0), eps(1)
    np.testing.assert_allclose(text_cfg(u, c, 1.0), c, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(text_cfg(u, c, 0.0), u)


def test_dual_cfg_by_value():
    """e_u + s_I (e_img - e_u) + s_T (e_full - e_img) = 1 + 1.5 * 2 + 7.5 * 4 = 34."""
    out = dual_cfg(np.float32([1.0]), np.float32([3.0]), np.float32([7.0]), text_scale=7.5, image_scale=1.5)
    np.testing.assert_array_equal(out, [34.0])


def test_dual_cfg_matches_the_instructpix2pix_pipeline_arrangement():
    """diffusers' StableDiffusionInstructPix2PixPipeline writes Eq. 3 as
    uncond + guidance_scale * (text - image) + image_guidance_scale * (image - uncond)."""
    u, img, full = eps(0), eps(1), eps(2)
    pipeline = u + 7.5 * (full - img) + 1.5 * (img - u)
    np.testing.assert_allclose(dual_cfg(u, img, full, text_scale=7.5, image_scale=1.5), pipeline,
                               rtol=0, atol=1e-5)


def test_dual_cfg_identities():
    u, img, full = eps(0), eps(1), eps(2)
    np.testing.assert_allclose(dual_cfg(u, img, full, 1.0, 1.0), full, rtol=0, atol=1e-6)
    # equal scales: the image-only term cancels and it is text guidance on (uncond, full)
    np.testing.assert_allclose(dual_cfg(u, img, full, 4.0, 4.0), text_cfg(u, full, 4.0), rtol=0, atol=1e-5)
    # no image guidance: text guidance between image-only and full, plus the unconditional anchor
    np.testing.assert_allclose(dual_cfg(u, img, full, 3.0, 0.0), u + 3.0 * (full - img), rtol=0, atol=1e-6)


def test_guidance_batches_count_and_order():
    assert GUIDANCE_KINDS == ("none", "text", "image_text")
    assert guidance_batches("none") == (FULL,)
    assert guidance_batches("text") == (IMAGE_ONLY, FULL)
    assert guidance_batches("image_text") == (UNCOND, IMAGE_ONLY, FULL)
    assert [len(guidance_batches(k)) for k in GUIDANCE_KINDS] == [1, 2, 3]
    assert UNCOND == Conditioning(text=False, image=False) and FULL == Conditioning(text=True, image=True)


def test_effective_kind_drops_guidance_only_where_the_scales_cancel_it():
    from taskfold.runtime.guidance import effective_kind

    assert effective_kind("text", 1.0, None) == "none" and effective_kind("text", 1.5, None) == "text"
    assert effective_kind("text", 0.0, None) == "text"  # scale 0 is the unconditional prediction, not skipped
    assert effective_kind("image_text", 1.0, 1.0) == "none"
    assert effective_kind("image_text", 1.0, 1.2) == "image_text" and effective_kind("image_text", 2, 1) == "image_text"
    assert effective_kind("none", 7.5, 1.5) == "none"
    with pytest.raises(ConfigError, match="guidance 'cfg' is not supported"):
        effective_kind("cfg", 1.0, 1.0)


@pytest.mark.parametrize("kind", GUIDANCE_KINDS)
def test_combine_takes_a_list_or_a_stacked_batch(kind):
    outputs = [eps(i) for i in range(len(guidance_batches(kind)))]
    looped = combine(kind, outputs, text_scale=5.0, image_scale=2.0)
    batched = combine(kind, np.concatenate(outputs, axis=0), text_scale=5.0, image_scale=2.0)
    np.testing.assert_array_equal(looped, batched)
    expected = {"none": lambda: none(outputs[0]),
                "text": lambda: text_cfg(outputs[0], outputs[1], 5.0),
                "image_text": lambda: dual_cfg(*outputs, text_scale=5.0, image_scale=2.0)}[kind]()
    np.testing.assert_array_equal(looped, expected)
    assert looped.shape == outputs[0].shape and looped.dtype == np.float32


def test_errors_name_the_bad_value():
    with pytest.raises(ConfigError, match="'pix2pix'.*none, text, image_text"):
        guidance_batches("pix2pix")
    with pytest.raises(ConfigError, match="needs 3 UNet outputs, got 2"):
        combine("image_text", [eps(0), eps(1)])
    with pytest.raises(ConfigError, match="batch 4 is not a multiple of 3"):
        combine("image_text", np.zeros((4, 4, 8, 8), np.float32))
