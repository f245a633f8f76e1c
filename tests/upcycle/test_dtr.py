"""Invariant 7 (training side) and the DTR acceptance items of the upcycle issue."""

import numpy as np
import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from taskfold.upcycle import UpcycleConfig, upcycle
from taskfold.upcycle.dtr import dtr_mask_table, dtr_starts, timestep_index
from tests._helpers import unet_inputs


def reference_mask(T, C, alpha, beta):
    """Pseudo Code 1 of the DTR paper, written out with loops."""
    mask = np.zeros((T, C))
    num_activ = int(beta * C)
    num_deact = C - num_activ
    x = np.linspace(0, 1, T) ** alpha
    offset = (num_deact * x).round()
    for t in range(T):
        start = int(offset[t])
        mask[t, start:start + num_activ] = 1
    return mask


@pytest.mark.parametrize("channels", [320, 640, 1280])
@pytest.mark.parametrize("alpha,beta", [(4.0, 0.8), (1.0, 0.6), (0.5, 0.9)])
def test_mask_table_equals_reference(channels, alpha, beta):
    table = dtr_mask_table(channels, 1000, alpha, beta)
    assert table.shape == (1000, channels)
    assert np.array_equal(table, reference_mask(1000, channels, alpha, beta))
    k = int(channels * beta)
    starts = dtr_starts(channels, 1000, alpha, beta)
    assert (table.sum(1) == k).all()  # one window of K ones per row
    first = table.argmax(1)
    assert np.array_equal(first, starts)  # contiguous: ones exactly at [start, start + K)
    assert starts[0] == 0 and starts[-1] == channels - k
    assert (np.diff(starts) >= 0).all()


def test_float_timestep_rule():
    t = torch.tensor([10.5, 10.49, 10.0, -3.0, 1200.0, 998.6])
    assert timestep_index(t).tolist() == [11, 10, 10, 0, 999, 999]
    assert timestep_index(torch.tensor([7, 0, 999])).tolist() == [7, 0, 999]
    assert timestep_index(torch.tensor([1500])).tolist() == [999]


def test_beta_one_is_the_base_model_exactly(tiny_base):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(dtr=True, dtr_beta=1.0), info)
    x, text, _ = unet_inputs(base)
    with torch.no_grad():
        plain = upcycle(base, UpcycleConfig(dtr=False), info)
        for t in (0, 500, 999):
            assert torch.equal(mtu(x, t, text, "t2i"), plain(x, t, text, "t2i"))


def _hooked_base_output(base, x, t, text, mask_t, alpha=4.0, beta=0.8):
    """The base UNet with reference masks multiplied after each block's entry norm by hooks."""
    hooks = []
    for m in base.modules():
        norm = m.norm1 if isinstance(m, ResnetBlock2D) else m.norm if isinstance(m, Transformer2DModel) else None
        if norm is None:
            continue
        table = torch.from_numpy(reference_mask(1000, norm.num_channels, alpha, beta)).float()
        row = table[mask_t][None, :, None, None]
        hooks.append(norm.register_forward_hook(lambda mod, inp, out, row=row: out * row))
    try:
        with torch.no_grad():
            return base(x, t, text).sample
    finally:
        for h in hooks:
            h.remove()


def test_masked_model_equals_base_with_reference_masks(tiny_base):
    """Outputs change with the timestep only through the mask (and the time embedding)."""
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(dtr=True), info)
    x, text, _ = unet_inputs(base)
    with torch.no_grad():
        for t in (0, 300, 700, 999):
            out = mtu(x, t, text, "t2i")
            ref = _hooked_base_output(base, x, t, text, t)
            assert (out - ref).abs().max().item() < 1e-5
        # decouple: embedding of t=700, mask of t=50 == base with mask row 50 at t=700
        out = mtu(x, 700, text, "t2i", mask_timestep=50)
        ref = _hooked_base_output(base, x, 700, text, 50)
        assert (out - ref).abs().max().item() < 1e-5
        # and the mask does change the output
        assert (mtu(x, 700, text, "t2i") - out).abs().max().item() > 1e-4


def test_float_timestep_selects_rounded_row(tiny_base):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(dtr=True), info)
    x, text, _ = unet_inputs(base)
    with torch.no_grad():
        out = mtu(x, torch.tensor(880.5), text, "t2i")
        ref = _hooked_base_output(base, x, torch.tensor(880.5), text, 881)
        assert (out - ref).abs().max().item() < 1e-5


def test_blocks_of_equal_width_share_one_table(tiny_base):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(dtr=True), info)
    norms = [m.norm1 for m in base.modules() if isinstance(m, ResnetBlock2D)] + \
        [m.norm for m in base.modules() if isinstance(m, Transformer2DModel)]
    widths = sorted({n.num_channels for n in norms})
    assert len(norms) > len(widths)  # several blocks per width (up-path resnets see skip concats: 48, 64)
    assert mtu.dtr.widths == tuple(widths) == (16, 32, 48, 64)
    assert sorted(n for n, _ in mtu.dtr.named_buffers()) == [f"starts_{w}" for w in widths]
    # masks are derived, not saved
    assert not any(k.startswith("dtr.") for k in mtu.state_dict())
