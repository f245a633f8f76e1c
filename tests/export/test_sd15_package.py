"""Shared weights at SD1.5 size (issue acceptance: package <= 1.05 x (base + 3 x task-specific tensors))."""

import json

import pytest
import torch

from taskfold.export.package import ExportConfig, export_package
from taskfold.upcycle import UpcycleConfig, load_base, upcycle


def _perturb_routers(mtu, seed=0):
    """Routers far from uniform, as after training, so every task folds to different FFNs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in mtu.mtu_layers():
            w = layer.router.net[2].weight
            w.copy_(torch.randn(w.shape, generator=g))
            layer.task_norm_weight.add_(torch.randn(layer.task_norm_weight.shape, generator=g) * 0.01)
    return mtu


def _onnx_bytes(manifest) -> int:
    return sum(v["bytes"] for k, v in manifest["files"].items() if k.startswith("onnx/"))


@pytest.mark.slow
def test_sd15_four_task_package_stores_the_backbone_once(tmp_path):
    base, info = load_base("preset:sd15", seed=0)
    base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    mtu = _perturb_routers(upcycle(base, UpcycleConfig(tasks=("t2i", "edit", "sr", "inpaint")), info,
                                   copy_base=False)).eval()
    del base
    # What one task needs beyond the backbone, from the structure: every FFN's W2 and b2 (scaled by
    # the router), its norm3 (per-task norms) and the task's conv_in.
    per_task = 0
    for _, layer in mtu.mtu_layers():
        per_task += (layer.dim * layer.hidden + layer.dim + 2 * layer.dim) * 4
    per_task += mtu.unet.conv_in.convs[1].weight.numel() * 4 + mtu.unet.conv_in.convs[1].bias.numel() * 4
    cfg = ExportConfig(height=64, width=64, parity_timesteps=2)
    manifest = export_package(mtu, cfg, tmp_path / "pkg4", log=print)
    together = _onnx_bytes(manifest)
    single = _onnx_bytes(export_package(mtu, ExportConfig(tasks=("edit",), height=64, width=64, parity_timesteps=2),
                                        tmp_path / "pkg1", log=print))
    limit = 1.05 * (base_bytes + 3 * per_task)
    figures = {"base_unet_bytes": base_bytes, "task_specific_bytes": per_task, "package_onnx_bytes": together,
               "limit_bytes": int(limit), "one_task_export_bytes": single, "four_separate_exports_bytes": 4 * single,
               "ratio_to_base_plus_3_task": together / (base_bytes + 3 * per_task),
               "ratio_to_separate": together / (4 * single)}
    print(json.dumps(figures, indent=2))
    assert all(g["parity"]["status"] == "passed" for g in manifest["graphs"])
    assert together <= limit
    assert together < 0.4 * 4 * single
