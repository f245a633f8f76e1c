"""CoreML export: every task of a tiny 4-task MTU model converts with the spec's interface and
exactly the base UNet's operations; DTR graphs convert; palettisation and multifunction packages
shrink the bytes they should. Prediction (macOS only) matches PyTorch."""

import copy
import hashlib
import json
import sys
import time

import numpy as np
import pytest
import torch

from taskfold.errors import ConfigError, ExportError
from taskfold.export import coreml
from taskfold.export.fold import fold, with_dtr
from taskfold.export.graph import MTUTaskGraph, UNetGraph, example_inputs, unet_graph_spec
from taskfold.export.parity import TOLERANCES
from taskfold.upcycle import UpcycleConfig, upcycle
from tests._helpers import trained_like

pytest.importorskip("coremltools", reason="coremltools is the 'coreml' extra")

TASKS = ("t2i", "edit", "sr", "inpaint")
SIZE, TEXT_LEN = 16, 77


def _graph(unet, in_channels):
    spec = unet_graph_spec(unet.config, in_channels, batch=1, height=SIZE, width=SIZE, text_len=TEXT_LEN)
    return UNetGraph(unet), spec, example_inputs(spec, 1, SIZE, SIZE)


def _base_ops(base, precision="fp16", dtr=None):
    """Op histogram of the base UNet converted like the task graphs (with the same DTR masks)."""
    unet = with_dtr(copy.deepcopy(base), dtr.timesteps, dtr.alpha, dtr.beta) if dtr is not None else base
    return coreml.op_histogram(coreml.convert(*_graph(unet, 4), None, precision=precision))


def _op_output_dtypes(path):
    """``{op_type: {output dtypes}}`` of the main function, from the package's protobuf."""
    ct = coreml._coremltools()
    fn = coreml._spec(path).mlProgram.functions["main"]
    out = {}
    for op in fn.block_specializations[fn.opset].operations:
        for o in op.outputs:
            out.setdefault(op.type, set()).add(ct.proto.MIL_pb2.DataType.Name(o.type.tensorType.dataType))
    return out


@pytest.fixture(scope="module")
def mtu4(tiny_base):
    base, info = tiny_base
    return trained_like(upcycle(base, UpcycleConfig(tasks=TASKS), info)).eval()


@pytest.fixture(scope="module")
def base_ops(tiny_base):
    return _base_ops(tiny_base[0])


@pytest.fixture(scope="module")
def packages(mtu4, tmp_path_factory):
    """Every task converted (fp16): ``{task: (path, spec, seconds)}``."""
    out = tmp_path_factory.mktemp("coreml")
    result = {}
    for task in TASKS:
        graph, spec, example = _graph(fold(mtu4, task), mtu4.task_in_channels(task))
        start = time.perf_counter()
        coreml.convert(graph, spec, example, out / f"{task}.mlpackage")
        result[task] = (out / f"{task}.mlpackage", spec, time.perf_counter() - start)
    return result


def test_every_task_has_the_declared_interface_and_the_base_operations(mtu4, packages, base_ops):
    assert sum(base_ops.values()) > 400 and base_ops["conv"] == 33
    for task, (path, spec, seconds) in packages.items():
        assert coreml.structural_problems(path, spec, base_ops) == [], task
        d = coreml.describe(path)
        assert [t["name"] for t in d["inputs"]] == ["sample", "timestep", "encoder_hidden_states"]
        assert d["inputs"][0]["shape"] == (1, mtu4.task_in_channels(task), SIZE, SIZE)
        assert d["outputs"] == [{"name": "out_sample", "shape": (1, 4, SIZE, SIZE), "dtype": "float32"}]
        assert {t["dtype"] for t in d["inputs"]} == {"float32"}
        meta = coreml.load(path).user_defined_metadata
        assert json.loads(meta["taskfold.graph_spec"]) == spec.to_dict() and meta["taskfold.precision"] == "fp16"
        assert seconds < 120, f"{task} took {seconds:.1f} s to convert"
    assert [mtu4.task_in_channels(t) for t in TASKS] == [4, 8, 8, 8]


def test_fp16_weights_are_two_bytes_per_parameter(mtu4, packages):
    n_params = sum(p.numel() for p in fold(mtu4, "edit").parameters())
    weights = coreml.package_bytes(packages["edit"][0], weights_only=True)
    assert 2 * n_params <= weights <= 2 * n_params * 1.05, (n_params, weights)


def test_fp16_graph_keeps_the_timestep_arithmetic_in_fp32(packages):
    dtypes = _op_output_dtypes(packages["edit"][0])
    assert dtypes["sin"] == dtypes["cos"] == {"FLOAT32"}  # sinusoidal embedding of t
    assert dtypes["conv"] == dtypes["linear"] == dtypes["matmul"] == {"FLOAT16"}  # learned layers


def test_structural_problems_names_every_difference(mtu4, packages, base_ops):
    path, spec, _ = packages["edit"]
    wrong = unet_graph_spec(mtu4.unet.config, 9, batch=1, height=SIZE, width=SIZE, text_len=TEXT_LEN)
    fewer = base_ops.copy()
    fewer["conv"] -= 1
    problems = coreml.structural_problems(path, wrong, fewer)
    assert problems == ["input 'sample' has shape [1, 8, 16, 16], the spec declares [1, 9, 16, 16]",
                        "op 'conv': 33 in the graph, 32 in the reference"]


@pytest.mark.slow
def test_fp32_graph_has_the_base_fp32_operations_and_four_byte_weights(tiny_base, mtu4, tmp_path):
    graph, spec, example = _graph(fold(mtu4, "sr"), mtu4.task_in_channels("sr"))
    coreml.convert(graph, spec, example, tmp_path / "sr32.mlpackage", precision="fp32")
    assert coreml.structural_problems(tmp_path / "sr32.mlpackage", spec, _base_ops(tiny_base[0], "fp32")) == []
    n_params = sum(p.numel() for p in graph.parameters())
    weights = coreml.package_bytes(tmp_path / "sr32.mlpackage", weights_only=True)
    assert 4 * n_params <= weights <= 4 * n_params * 1.05
    assert _op_output_dtypes(tmp_path / "sr32.mlpackage")["conv"] == {"FLOAT32"}


def test_dtr_graph_converts_with_the_masked_base_operations(tiny_base, tmp_path):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=("t2i", "inpaint-mask"), dtr=True), info)).eval()
    graph, spec, example = _graph(fold(mtu, "inpaint-mask"), mtu.task_in_channels("inpaint-mask"))
    coreml.convert(graph, spec, example, tmp_path / "dtr.mlpackage")
    reference = _base_ops(base, dtr=mtu.dtr)
    assert coreml.structural_problems(tmp_path / "dtr.mlpackage", spec, reference) == []
    ops = coreml.op_histogram(tmp_path / "dtr.mlpackage")
    widths = len(mtu.dtr.widths)  # one start table per distinct block width
    assert ops["gather"] == ops["logical_and"] == widths == 4 and ops["floor"] == 1
    assert _op_output_dtypes(tmp_path / "dtr.mlpackage")["floor"] == {"FLOAT32"}  # floor(t + 0.5) not in fp16
    assert coreml.describe(tmp_path / "dtr.mlpackage")["inputs"][0]["shape"] == (1, 9, SIZE, SIZE)


def test_palettize_4_bits_shrinks_the_weights(mtu4, packages, base_ops, tmp_path):
    pytest.importorskip("sklearn", reason="coremltools' k-means palettisation uses scikit-learn")
    path = packages["edit"][0]
    small = coreml.save(coreml.palettize(path, 4), tmp_path / "edit-4bit.mlpackage")
    before = coreml.package_bytes(path, weights_only=True)
    after = coreml.package_bytes(small, weights_only=True)
    assert after < 0.55 * before, (before, after)
    big = [p for p in fold(mtu4, "edit").parameters() if p.numel() > coreml.PALETTE_WEIGHT_THRESHOLD]
    ops = coreml.op_histogram(small)
    assert ops["constexpr_lut_to_dense"] == len(big) == 21
    del ops["constexpr_lut_to_dense"]
    assert ops == base_ops


def test_3_bit_palettes_need_an_ios18_model(packages):
    pytest.importorskip("sklearn", reason="coremltools' k-means palettisation uses scikit-learn")
    with pytest.raises(ConfigError, match="iOS18.*spec version 8") as e:  # iOS17 (the default) is spec version 8
        coreml.palettize(packages["edit"][0], 3)
    assert "minimum_deployment_target='iOS18'" in e.value.hint


@pytest.mark.parametrize("bits", [0, 1, 5, 16, 4.5, "4", True])
def test_palettize_refuses_other_bit_widths(packages, bits):
    with pytest.raises(ConfigError) as e:
        coreml.palettize(packages["edit"][0], bits)
    assert repr(bits) in str(e.value) and "[2, 3, 4, 6, 8]" in str(e.value)


def test_multifunction_package_stores_shared_weights_once(mtu4, packages, base_ops, tmp_path):
    paths = {task: p for task, (p, _, _) in packages.items()}
    out = coreml.save_multifunction(paths, tmp_path / "all.mlpackage", default_function="t2i")
    assert sorted(coreml.functions(out)) == sorted(TASKS)
    unique = {}  # fp16 bytes of every distinct weight tensor over the four folded tasks
    for task in TASKS:
        for p in fold(mtu4, task).parameters():
            data = p.detach().half().numpy().tobytes()
            unique[hashlib.sha256(data).hexdigest()] = len(data)
    together = coreml.package_bytes(out, weights_only=True)
    separate = sum(coreml.package_bytes(p, weights_only=True) for p in paths.values())
    assert sum(unique.values()) <= together <= 1.05 * sum(unique.values()), (together, sum(unique.values()))
    assert together < 0.3 * separate, (together, separate)  # measured 468,544 B vs 1,680,256 B
    # whole packages (the program text is per function and not shared): measured 1.31 MB vs 2.52 MB
    assert coreml.package_bytes(out) < 0.6 * sum(coreml.package_bytes(p) for p in paths.values())
    for task, p in paths.items():
        assert coreml.describe(out, task) == coreml.describe(p)
        assert coreml.op_histogram(out, task) == coreml.op_histogram(p)
    assert coreml.describe(out) == coreml.describe(paths["t2i"])  # the default function
    assert coreml.op_histogram(out) == base_ops
    assert coreml.structural_problems(out, packages["edit"][1], base_ops, function="edit") == []
    with pytest.raises(ConfigError, match="'upscale' is not one of the functions"):
        coreml.save_multifunction(paths, tmp_path / "x.mlpackage", default_function="upscale")


def test_save_replaces_atomically_and_wants_an_mlpackage(packages, tmp_path):
    path = packages["t2i"][0]
    target = tmp_path / "model.mlpackage"
    target.mkdir()
    (target / "stale").write_text("old")
    coreml.save(coreml.load(path), target)
    assert not (target / "stale").exists()
    assert coreml.package_bytes(target) == coreml.package_bytes(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.mlpackage"]  # no temp siblings left
    assert not (target / coreml.DEBUG_MAP).exists()
    with pytest.raises(ConfigError, match="model.mlmodel"):
        coreml.save(coreml.load(path), tmp_path / "model.mlmodel")


def test_bad_arguments_are_config_errors(mtu4, tmp_path):
    graph, spec, example = _graph(fold(mtu4, "t2i"), 4)
    with pytest.raises(ConfigError, match="'int8'.*\\['fp16', 'fp32'\\]"):
        coreml.convert(graph, spec, example, None, precision="int8")
    with pytest.raises(ConfigError, match="'iOS99'"):
        coreml.convert(graph, spec, example, None, minimum_deployment_target="iOS99")
    dynamic = unet_graph_spec(fold(mtu4, "t2i").config, 4, 1, SIZE, SIZE, dynamic=True)
    with pytest.raises(ConfigError, match="static shapes; 'sample' has shape \\['batch', 4, 'height', 'width'\\]"):
        coreml.convert(graph, dynamic, example, None)


def test_missing_coremltools_names_the_extra(monkeypatch, mtu4):
    monkeypatch.setitem(sys.modules, "coremltools", None)  # makes `import coremltools` raise ImportError
    graph, spec, example = _graph(fold(mtu4, "t2i"), 4)
    with pytest.raises(ExportError) as e:
        coreml.convert(graph, spec, example, None)
    assert "coremltools" in str(e.value) and e.value.hint == "pip install 'taskfold[coreml]'"


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS can predict")
def test_predict_off_macos_is_an_export_error(packages):
    with pytest.raises(ExportError, match=f"macOS.*{sys.platform}"):
        coreml.predict(packages["t2i"][0], {})


def _relative_error(mtu, task, path):
    """Worst relative error (parity.py's measure) over timesteps spanning [0, T) plus fractional ones."""
    spec = unet_graph_spec(mtu.unet.config, mtu.task_in_channels(task), 1, SIZE, SIZE, TEXT_LEN)
    worst = 0.0
    for t in (0.0, 333.0, 999.0, 500.5, 700.3):
        inputs = example_inputs(spec, 1, SIZE, SIZE, seed=int(t), timestep=t)
        with torch.no_grad():
            ref = MTUTaskGraph(mtu, task)(*inputs.values()).numpy()
        got = coreml.predict(path, {k: v.numpy() for k, v in inputs.items()})
        worst = max(worst, float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-6)))
    return worst


@pytest.mark.macos
def test_prediction_matches_pytorch(mtu4, packages):
    for task, (path, _, _) in packages.items():
        err = _relative_error(mtu4, task, path)
        assert err <= TOLERANCES[("coreml", "fp16")], (task, err)


@pytest.mark.macos
def test_dtr_prediction_matches_pytorch_at_fractional_timesteps(tiny_base, tmp_path):
    base, info = tiny_base
    mtu = trained_like(upcycle(base, UpcycleConfig(tasks=("t2i", "edit"), dtr=True), info)).eval()
    for precision in ("fp16", "fp32"):
        path = tmp_path / f"edit-{precision}.mlpackage"
        coreml.convert(*_graph(fold(mtu, "edit"), 8), path, precision=precision)
        err = _relative_error(mtu, "edit", path)
        assert err <= TOLERANCES[("coreml", precision)], (precision, err)


def test_importing_coremltools_drops_only_its_known_harmless_notes():
    """coremltools' import notes that do not concern taskfold (its scikit-learn converter disabled, an untested
    torch, off macOS the Core ML bindings) are dropped by message; any other line of its loggers still prints,
    and nothing is dropped outside the import."""
    import subprocess

    code = (
        "import logging, sys\n"
        "from taskfold.runtime.backends import COREML, _dropping\n"
        "COREML.require()\n"
        "sys.stderr.write('imported\\n')\n"
        "log = logging.getLogger('coremltools.models.model')\n"
        "with _dropping('coremltools', COREML.import_notes):\n"
        "    log.warning('Torch version 9.9 has not been tested with coremltools. You may run into errors.')\n"
        "    log.warning('Failed to load _MLModelProxy: something else')\n"
        "    logging.getLogger('other').warning('Torch version 9.9 has not been tested with coremltools. x')\n"
        "log.warning('Torch version 9.9 has not been tested with coremltools. After the import.')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "imported", "Failed to load _MLModelProxy: something else",
        "Torch version 9.9 has not been tested with coremltools. x",
        "Torch version 9.9 has not been tested with coremltools. After the import."]
