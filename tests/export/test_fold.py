"""Invariant 4: the folded UNet equals the MTU model for every task; FFN shapes are the base's."""

import pytest
import torch
from diffusers import UNet2DConditionModel

from taskfold.errors import ConfigError
from taskfold.export.fold import fold
from taskfold.upcycle import UpcycleConfig, upcycle
from tests._helpers import trained_like, unet_inputs

TASKS = ("t2i", "edit", "sr", "inpaint", "inpaint-mask")


@pytest.mark.parametrize("experts,top_k,width,norm_mode", [
    (1, None, None, "task"), (2, None, None, "task"), (4, None, None, "task"),
    (4, None, None, "task_expert"), (8, 4, 16, "task"), (8, 4, 16, "task_expert")])
def test_folded_unet_equals_mtu_for_every_task(tiny_base, experts, top_k, width, norm_mode):
    base, info = tiny_base
    cfg = UpcycleConfig(tasks=TASKS, num_experts=experts, top_k=top_k, expert_width=width, norm_mode=norm_mode,
                        blocks=("down_blocks.*",) if width else ("*",))
    mtu = trained_like(upcycle(base, cfg, info)).eval()
    base_ffn = {n: p.shape for n, p in base.named_parameters() if ".ff." in n or ".norm3." in n}
    for task in TASKS:
        folded = fold(mtu, task)
        assert type(folded) is UNet2DConditionModel
        shapes = {n: p.shape for n, p in folded.named_parameters() if ".ff." in n or ".norm3." in n}
        assert shapes == base_ffn  # folded FFN shape == original FFN shape
        x, text, _ = unet_inputs(base, channels=mtu.task_in_channels(task), seed=3)
        for t in (0, 250, 999):
            with torch.no_grad():
                a = mtu(x, t, text, task)
                b = folded(x, t, text).sample
            assert (a - b).abs().max().item() < 1e-5 * max(1.0, a.abs().max().item()), (task, t)


def test_fold_is_pure_and_saves_as_a_diffusers_folder(tiny_base, tmp_path):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(), info)).eval()
    before = {k: v.clone() for k, v in mtu.state_dict().items()}
    folded = fold(mtu, "edit")
    assert all(torch.equal(before[k], v) for k, v in mtu.state_dict().items())
    folded.save_pretrained(tmp_path / "edit")
    again = UNet2DConditionModel.from_pretrained(tmp_path / "edit")
    assert again.config.in_channels == 8
    x, text, _ = unet_inputs(base, channels=8)
    with torch.no_grad():
        assert torch.equal(again(x, 5, text).sample, folded(x, 5, text).sample)


def test_untrained_t2i_fold_is_the_base(tiny_base):
    base, info = tiny_base
    folded = fold(upcycle(base, UpcycleConfig(), info), "t2i")
    x, text, _ = unet_inputs(base)
    with torch.no_grad():
        assert (folded(x, 400, text).sample - base(x, 400, text).sample).abs().max().item() < 1e-5


def test_fold_refuses_non_tiling_routing(tiny_base):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(num_experts=8, expert_width=16, blocks=("down_blocks.*",)), info)
    with pytest.raises(ConfigError, match="folded FFN would be 128 wide, the base FFN is 64"):
        fold(mtu, "t2i")


def test_dtr_fold_equals_mtu_across_timesteps_and_round_trips(tiny_base, tmp_path):
    from taskfold.export.fold import DTRFoldedUNet, load_folded
    from taskfold.upcycle.dtr import dtr_mask_table

    base, info = tiny_base
    cfg = UpcycleConfig(tasks=("t2i", "edit"), num_experts=4, norm_mode="task_expert", dtr=True, dtr_beta=0.6)
    mtu = trained_like(upcycle(base, cfg, info)).eval()
    for task in ("t2i", "edit"):
        folded = fold(mtu, task)
        assert isinstance(folded, DTRFoldedUNet) and type(folded.unet) is UNet2DConditionModel
        for w in folded.dtr.widths:  # exported start tables == training masks at every integer t
            starts = getattr(folded.dtr, f"starts_{w}")
            iota = torch.arange(w)[None]
            k = int(w * 0.6)
            table = ((iota >= starts[:, None]) & (iota < starts[:, None] + k)).float().numpy()
            assert (table == dtr_mask_table(w, 1000, 4.0, 0.6)).all()
        x, text, _ = unet_inputs(base, channels=mtu.task_in_channels(task), seed=4)
        for t in (0, 1, 137, 500.4, 731, 998.5, 999):
            with torch.no_grad():
                a = mtu(x, torch.tensor([t, t]), text, task)
                b = folded(x, torch.tensor([t, t]), text).sample
            assert (a - b).abs().max().item() < 1e-5 * max(1.0, a.abs().max().item()), (task, t)
    folded.save_pretrained(tmp_path / "edit")
    stock = UNet2DConditionModel.from_pretrained(tmp_path / "edit")  # stock loader accepts the folder
    again = load_folded(tmp_path / "edit")
    assert isinstance(again, DTRFoldedUNet) and stock.config.in_channels == 8
    with torch.no_grad():
        assert torch.equal(again(x, 600, text).sample, folded(x, 600, text).sample)
        assert not torch.equal(stock(x, 600, text).sample, folded(x, 600, text).sample)
