"""Invariant 1: GEGLU-aware shards sum to the dense FFN; routing weights; width rules."""

import pytest
import torch
from diffusers.models.attention import FeedForward

from taskfold.errors import ConfigError
from taskfold.upcycle.experts import resolve_expert_width, routing_weights, shard_ffn, shards_forward


@pytest.mark.parametrize("dim,width", [(32, 8), (32, 32), (40, 20), (64, 1)])
def test_shards_sum_to_dense_ffn_float64(dim, width):
    torch.manual_seed(0)
    ff = FeedForward(dim, activation_fn="geglu").double()
    for p in ff.parameters():  # non-trivial biases too
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(3, 5, dim, dtype=torch.float64)
    shards = shard_ffn(ff, width)
    assert shards.num_shards == 4 * dim // width
    err = (shards_forward(shards, x) - ff(x)).abs().max().item()
    assert err < 1e-10, err


def test_shard_layout_takes_value_and_gate_rows():
    ff = FeedForward(8, activation_fn="geglu")
    hidden = 32
    shards = shard_ffn(ff, 8)  # 4 shards of width 8
    w = ff.net[0].proj.weight
    for s in range(4):
        assert torch.equal(shards.w1[s, :8], w[s * 8:(s + 1) * 8])  # value rows
        assert torch.equal(shards.w1[s, 8:], w[hidden + s * 8:hidden + (s + 1) * 8])  # gate rows
        assert torch.equal(shards.w2[s], ff.net[2].weight[:, s * 8:(s + 1) * 8])


def test_routing_weights_softmax_and_top_k():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    r = routing_weights(logits, None)
    assert torch.allclose(r.sum(-1), torch.ones(2))
    assert torch.allclose(r[1], torch.full((4,), 0.25))
    r2 = routing_weights(logits, 2)
    assert torch.allclose(r2.sum(-1), torch.ones(2))
    assert (r2[0, :2] == 0).all() and r2[0, 3] > r2[0, 2] > 0
    assert torch.equal((r2[1] > 0).nonzero().squeeze(1), torch.tensor([0, 1]))  # ties: lowest indices


def test_expert_width_rules():
    assert resolve_expert_width(1280, 4, None) == 320
    assert resolve_expert_width(1280, 8, 320) == 320  # two copies of each shard
    with pytest.raises(ConfigError, match="3 experts do not divide the FFN width 1280"):
        resolve_expert_width(1280, 3, None)
    with pytest.raises(ConfigError, match="width 300 does not divide"):
        resolve_expert_width(1280, 4, 300)
    with pytest.raises(ConfigError, match="need a multiple of 4 experts"):
        resolve_expert_width(1280, 6, 320)
