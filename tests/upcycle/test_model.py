"""Invariants 2 (identity at init), 3 (widened conv_in) and 6 (frozen backbone)."""

import pytest
import torch

from taskfold.upcycle import UpcycleConfig, load_base, set_trainable, upcycle
from taskfold.upcycle.model import component_of, transformer_blocks

from tests._helpers import unet_inputs

TOL = 1e-5  # float32: the upcycled FFN sums the same products in another order


def _max_err(base, mtu, task="t2i", timesteps=(0, 417, 999), seed=0):
    x, text, added = unet_inputs(base, seed=seed)
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for t in timesteps:
            ref = base(x, t, text, added_cond_kwargs=added).sample
            out = mtu(x, t, text, task, added_cond_kwargs=added)
            worst = max(worst, (out - ref).abs().max().item())
            scale = max(scale, ref.abs().max().item())
    return worst, scale


@pytest.mark.parametrize("norm_mode", ["task", "task_expert"])
@pytest.mark.parametrize("experts", [1, 2, 4])
def test_identity_at_init_tiny(tiny_base, experts, norm_mode):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(num_experts=experts, norm_mode=norm_mode), info)
    err, scale = _max_err(base, mtu)
    assert scale > 0.1
    assert err < TOL * max(1.0, scale), (err, scale)
    for task in mtu.task_names:  # router uniform for every task and layer
        assert torch.allclose(mtu.router_weights(task), torch.full((4, experts), 1.0 / experts))


def test_identity_with_overlapping_experts(tiny_base):
    """8 experts of width H/4: every shard twice, W2 scaled by H/m = 4, still the base."""
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(num_experts=8, expert_width=16, blocks=("down_blocks.*",)), info)
    err, scale = _max_err(base, mtu)
    assert err < TOL * max(1.0, scale)


@pytest.mark.parametrize("preset", ["sd21-narrow", "sdxl-narrow", "sd15-narrow"])
def test_identity_at_init_narrow_sd_configs(preset):
    base, info = load_base(f"preset:{preset}", seed=1)
    mtu = upcycle(base, UpcycleConfig(num_experts=4), info)
    n_blocks = len(transformer_blocks(base))
    assert len(mtu.mtu_layers()) == n_blocks
    err, scale = _max_err(base, mtu, timesteps=(10, 700))
    assert err < TOL * max(1.0, scale), (preset, err, scale)


def test_sdxl_narrow_keeps_structure():
    base, _ = load_base("preset:sdxl-narrow")
    # transformer depth (1, 2, 3) on the down path: 0 + 2*2 + 3*2 blocks, plus mid and up
    assert base.config.transformer_layers_per_block == [1, 2, 3]
    assert base.config.addition_embed_type == "text_time"
    assert len(transformer_blocks(base)) == 2 * 2 + 2 * 3 + 3 + 3 * 3 + 3 * 2


def test_image_tasks_start_as_base_on_noisy_channels(tiny_mtu, tiny_base):
    """New conv_in channels are zero: the condition image does not matter at init."""
    base, _ = tiny_base
    x, text, _ = unet_inputs(base)
    cond = torch.randn_like(x)
    with torch.no_grad():
        ref = base(x, 300, text).sample
        for task in ("edit", "sr", "inpaint"):
            out = tiny_mtu(torch.cat([x, cond], 1), 300, text, task)
            assert (out - ref).abs().max().item() < TOL * max(1.0, ref.abs().max().item())
        mask = torch.rand(2, 1, 16, 16)
        out = tiny_mtu(torch.cat([x, mask, cond], 1), 300, text, "inpaint-mask")
        assert (out - ref).abs().max().item() < TOL * max(1.0, ref.abs().max().item())


def test_widened_conv_in(tiny_mtu, tiny_base):
    base, _ = tiny_base
    old = base.conv_in
    convs = tiny_mtu.unet.conv_in.convs
    expected_in = {"t2i": 4, "edit": 8, "sr": 8, "inpaint": 8, "inpaint-mask": 9}
    for name, conv in zip(tiny_mtu.task_names, convs):
        assert conv.in_channels == expected_in[name]
        assert torch.equal(conv.weight[:, :4], old.weight)  # old weights kept
        assert torch.count_nonzero(conv.weight[:, 4:]) == 0  # new channels zero
        assert torch.equal(conv.bias, old.bias)  # bias copied


def test_mixed_task_batch_matches_per_task_calls(tiny_base):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(tasks=("edit", "sr", "inpaint")), info)
    with torch.no_grad():  # make tasks differ: random routers and norms
        for _, layer in mtu.mtu_layers():
            layer.router.net[2].weight.normal_()
            layer.task_norm_weight.add_(torch.randn_like(layer.task_norm_weight) * 0.1)
    x, text, _ = unet_inputs(base, batch=3, channels=8)
    ids = torch.tensor([2, 0, 1])
    with torch.no_grad():
        mixed = mtu(x, 250, text, ids)
        for i, t in enumerate(ids.tolist()):
            single = mtu(x[i:i + 1], 250, text[i:i + 1], t)
            assert (mixed[i:i + 1] - single).abs().max().item() < 1e-5
        assert (mtu(x, 250, text, "edit") - mtu(x, 250, text, "sr")).abs().max().item() > 1e-3


def test_wrong_channels_for_task_is_a_clear_error(tiny_mtu):
    x = torch.randn(1, 4, 16, 16)
    with pytest.raises(ValueError, match=r"sample has 4 channels; the batch's task\(s\) take \[8\]"):
        tiny_mtu(x, 1, torch.randn(1, 7, 32), "edit")


def test_upcycle_is_pure_and_seeded(tiny_base):
    base, info = tiny_base
    before = {k: v.clone() for k, v in base.state_dict().items()}
    a = upcycle(base, UpcycleConfig(seed=3), info)
    b = upcycle(base, UpcycleConfig(seed=3), info)
    c = upcycle(base, UpcycleConfig(seed=4), info)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert type(base.conv_in).__name__ == "Conv2d"
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["task_embedding.weight"], sc["task_embedding.weight"])


def test_block_selection(tiny_base):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(blocks=("mid_block.*",)), info)
    assert [n for n, _ in mtu.mtu_layers()] == ["unet.mid_block.attentions.0.transformer_blocks.0.ff"]
    err, scale = _max_err(base, mtu)
    assert err < TOL * max(1.0, scale)


def test_one_adam_step_changes_only_the_trainable_set(tiny_base):
    base, info = tiny_base
    mtu = upcycle(base, UpcycleConfig(tasks=("t2i", "edit"), dtr=True), info).train()
    trainable = set(set_trainable(mtu, "mtu"))
    comps = {component_of(mtu, n) for n in trainable}
    assert comps == {"experts", "routers", "task_embedding", "task_norms", "task_conv_in"}
    before = {n: p.detach().clone() for n, p in mtu.named_parameters()}
    buffers = {n: b.clone() for n, b in mtu.named_buffers()}
    assert buffers  # the DTR start tables
    opt = torch.optim.Adam([p for p in mtu.parameters() if p.requires_grad], lr=1e-2)
    x, text, _ = unet_inputs(base, batch=2, channels=8)

    def step():
        opt.zero_grad()
        loss = mtu(x, torch.tensor([10, 900]), text, "edit").pow(2).mean() + \
            mtu(x[:, :4], torch.tensor([500, 20]), text, "t2i").pow(2).mean()
        loss.backward()
        opt.step()

    step()
    frozen = set(before) - trainable
    changed = {n for n, p in mtu.named_parameters() if not torch.equal(before[n], p.detach())}
    assert len(frozen) > 0 and len(changed) > 0
    assert not (changed & frozen), sorted(changed & frozen)[:5]
    assert all(p.grad is None for n, p in mtu.named_parameters() if n in frozen)
    # The router's last layer starts at zero, so in step one no gradient reaches the task
    # embedding or the router's first layer; from step two on every trainable tensor moves.
    assert mtu.task_embedding.weight.grad.abs().max().item() == 0.0
    step()
    changed = {n for n, p in mtu.named_parameters() if not torch.equal(before[n], p.detach())}
    assert not (changed & frozen)
    assert changed == trainable, sorted(trainable - changed)
    assert all(torch.equal(buffers[n], b) for n, b in mtu.named_buffers())


def test_mixed_task_batch_with_zero_padded_channels_equals_per_task_calls(tiny_mtu):
    from tests._helpers import trained_like

    import copy

    mtu = trained_like(copy.deepcopy(tiny_mtu)).eval()
    g = torch.Generator().manual_seed(5)
    tasks = ["t2i", "edit", "inpaint-mask", "edit"]
    width = max(mtu.task_in_channels(t) for t in tasks)
    x = torch.zeros(4, width, 16, 16)
    for i, t in enumerate(tasks):
        x[i, :mtu.task_in_channels(t)] = torch.randn(mtu.task_in_channels(t), 16, 16, generator=g)
    text = torch.randn(4, 7, 32, generator=g)
    t = torch.tensor([10, 500, 999, 42])
    ids = torch.tensor([mtu.task_index(n) for n in tasks])
    with torch.no_grad():
        mixed = mtu(x, t, text, ids)
        for i, name in enumerate(tasks):
            alone = mtu(x[i:i + 1, :mtu.task_in_channels(name)], t[i:i + 1], text[i:i + 1], name)
            assert (mixed[i] - alone[0]).abs().max().item() < 1e-5
