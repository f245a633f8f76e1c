"""Helpers shared by the test modules."""

import torch


def unet_inputs(unet, batch=2, channels=None, size=16, seed=0, text_len=7):
    """Seeded ``(sample, encoder_hidden_states, added_cond_kwargs)`` for a diffusers UNet config."""
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(batch, channels or cfg.in_channels, size, size, generator=g)
    text = torch.randn(batch, text_len, cfg.cross_attention_dim, generator=g)
    added = None
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        added = {"text_embeds": torch.randn(batch, pooled, generator=g),
                 "time_ids": torch.tensor([[128.0, 128, 0, 0, 128, 128]] * batch)}
    return x, text, added


def trained_like(model, seed=0):
    """Perturb every trainable tensor so tasks differ (routers far from uniform)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in model.mtu_layers():
            layer.router.net[2].weight.copy_(torch.randn(layer.router.net[2].weight.shape, generator=g))
            for p in (layer.task_norm_weight, layer.task_norm_bias, layer.w1, layer.b1, layer.w2, layer.b2):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for conv in model.unet.conv_in.convs:
            conv.weight.add_(torch.randn(conv.weight.shape, generator=g) * 0.05)
    return model


def cli(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``taskfold ARGV`` run in this process."""
    from taskfold.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err):
    """A refusal: exit 2 and one ``error: ...`` line, no traceback."""
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def small_shapes(tmp_path_factory, tasks, name="data"):
    """A 40-row-per-task shapes dataset (seed 2, a quarter held out) in a fresh temporary folder."""
    from taskfold.train.shapes import make_shapes

    out = tmp_path_factory.mktemp(name) / "data"
    make_shapes(out, n=40, size=32, seed=2, tasks=tuple(tasks), test_fraction=0.25)
    return out
