"""Recommended sampling travels with the package: ``sampling.json`` -> manifest -> ``run``/``generate`` defaults."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from taskfold.cli import main
from taskfold.errors import ConfigError, TaskError
from taskfold.runtime import open_package
from taskfold.sampling import SAMPLING_FILE, read_sampling, write_sampling
from taskfold.tasks import BUILTIN_TASKS

TASKS = {n: BUILTIN_TASKS[n] for n in ("t2i", "edit", "sr")}
GOOD = {"format": "taskfold-sampling", "version": 1, "source": "test", "tasks": {"sr": {"strength": 0.3}}}


def _file(tmp_path, doc, name="s.json"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


BAD = {
    "not JSON": ("{nope", "is not JSON"),
    "a list": ([1], "is not a taskfold-sampling file"),
    "other format": (GOOD | {"format": "x"}, "is not a taskfold-sampling file"),
    "newer version": (GOOD | {"version": 2}, "has version 2"),
    "unknown top key": (GOOD | {"extra": 1}, "unknown key(s) 'extra'"),
    "tasks a list": (GOOD | {"tasks": []}, "'tasks' needs an object of task name"),
    "unknown task": (GOOD | {"tasks": {"depth": {"steps": 4}}}, "'tasks' has unknown key(s) 'depth'; expected t2i, edit, sr"),
    "unknown field": (GOOD | {"tasks": {"sr": {"eta": 1}}}, "unknown key(s) 'eta'"),
    "strength zero": (GOOD | {"tasks": {"sr": {"strength": 0}}}, "strength must be a number in (0, 1], got 0"),
    "strength a bool": (GOOD | {"tasks": {"sr": {"strength": True}}}, "strength: expected a finite number, got bool True"),
    "strength on t2i": (GOOD | {"tasks": {"t2i": {"strength": 0.5}}}, "strength 0.5 needs an image input"),
    "steps fractional": (GOOD | {"tasks": {"edit": {"steps": 2.5}}}, "steps: expected an integer, got float 2.5"),
    "no step runs": (GOOD | {"tasks": {"sr": {"strength": 0.2, "steps": 4}}}, "runs no denoising step"),
    "steps too many": (GOOD | {"tasks": {"sr": {"steps": 1001}}}, "steps must be an integer from 1 to 1000, got 1001"),
    "image guidance on t2i": (GOOD | {"tasks": {"t2i": {"image_guidance_scale": 1.5}}}, "has no image guidance"),
    "guidance a string": (GOOD | {"tasks": {"edit": {"guidance_scale": "7"}}}, "guidance_scale"),
    "task entry a number": (GOOD | {"tasks": {"sr": 3}}, "task 'sr' needs an object of strength, guidance_scale, image_guidance_scale, steps, got int"),
    "source too long": (GOOD | {"source": "x" * 501}, "'source' must be a string of at most 500"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_sampling_file_is_refused_naming_the_value(tmp_path, case):
    doc, words = BAD[case]
    with pytest.raises((ConfigError, TaskError)) as e:
        read_sampling(_file(tmp_path, doc), TASKS)
    assert words in str(e.value), str(e.value)


def test_an_oversized_or_missing_sampling_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(ConfigError, match="1,048,577 bytes; expected at most 1,048,576"):
        read_sampling(big, TASKS)
    with pytest.raises(ConfigError, match="cannot read sampling file"):
        read_sampling(tmp_path / "absent.json", TASKS)
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_sampling(tmp_path, TASKS)


def test_cli_export_refuses_a_bad_sampling_file_before_writing(tiny_package, tmp_path, capsys):
    _, _, mtu, _ = tiny_package
    bad = _file(tmp_path, GOOD | {"tasks": {"sr": {"strength": 1.5}}})
    assert main(["export", str(mtu), "--out", str(tmp_path / "pkg"), "--sampling", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "strength must be a number in (0, 1], got 1.5" in err and "Traceback" not in err
    assert not (tmp_path / "pkg").exists()


@pytest.fixture(scope="module")
def sampled(tiny_package, tmp_path_factory):
    """The tiny MTU model with a ``sampling.json`` in its folder, exported (sr and edit)."""
    _, _, mtu, data = tiny_package
    root = tmp_path_factory.mktemp("sampled")
    shutil.copytree(mtu, root / "mtu")
    write_sampling(root / "mtu" / SAMPLING_FILE, {"sr": {"strength": 0.4, "steps": 3},
                                                 "edit": {"guidance_scale": 2.0, "image_guidance_scale": 1.1}},
                   source="chosen by hand for the test")
    assert main(["export", str(root / "mtu"), "--out", str(root / "pkg"), "--tasks", "sr,edit", "--height", "16",
                 "--width", "16", "--parity-timesteps", "2"]) == 0
    return root / "pkg", data


def test_export_records_the_recommended_sampling_and_the_runtime_uses_it(sampled):
    pkg_dir, _ = sampled
    manifest = json.loads((pkg_dir / "manifest.json").read_text())
    assert manifest["sampling"] == {"source": "chosen by hand for the test", "file": SAMPLING_FILE,
                                    "tasks": ["edit", "sr"]}
    sr, edit = manifest["tasks"]["sr"], manifest["tasks"]["edit"]
    assert (sr["strength"], sr["steps"], edit["strength"], edit["steps"]) == (0.4, 3, 1.0, 20)
    assert (edit["guidance_scale"], edit["image_guidance_scale"]) == (2.0, 1.1)
    pkg = open_package(pkg_dir)
    assert pkg.sampling("sr") == {"steps": 3, "strength": 0.4, "guidance_scale": None, "image_guidance_scale": None}
    assert pkg.sampling("edit", steps=5) == {"steps": 5, "strength": 1.0, "guidance_scale": 2.0,
                                             "image_guidance_scale": 1.1}


def test_run_without_sampling_flags_uses_the_package_defaults_and_says_so(sampled, tmp_path, capsys):
    pkg_dir, data = sampled
    row = next(json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()
               if json.loads(line)["task"] == "sr")
    image = data / row["condition"]
    out = tmp_path / "o.png"
    assert main(["run", str(pkg_dir), "--task", "sr", "--image", str(image), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "steps 3*, strength 0.4*" in said and "(* = package default)" in said, said
    pkg = open_package(pkg_dir)
    want = pkg.generate("sr", image=str(image), steps=3, strength=0.4)
    from PIL import Image

    got = np.asarray(Image.open(out), dtype=np.float32)
    ref = np.clip(np.round((want[0].transpose(1, 2, 0) + 1) * 127.5), 0, 255)
    assert np.abs(got - ref).max() <= 1.0
    other = pkg.generate("sr", image=str(image), steps=20, strength=1.0)
    assert np.abs(other - want).max() > 0.05  # the defaults did change the result


def test_prompt_warnings_for_a_text_free_task_and_unknown_words(sampled, tiny_package, tmp_path, capsys):
    pkg_dir, data = sampled
    pkg = open_package(pkg_dir)
    assert pkg.prompt_warnings("sr", "make it sharp") == ["task 'sr' reads no text; the prompt 'make it sharp' "
                                                          "is ignored"]
    assert pkg.prompt_warnings("sr", "") == []
    warnings = pkg.prompt_warnings("edit", "make the circle zorblax")
    assert warnings == ["prompt word(s) 'zorblax' are not in the text encoder's vocabulary (encoded as unknown)"]
    assert pkg.prompt_warnings("edit", "make the circle blue") == []
    long = pkg.prompt_warnings("edit", "make the circle blue " * 10)
    assert len(long) == 1 and "the text encoder reads the first" in long[0]
    row = next(json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines()
               if json.loads(line)["task"] == "sr")
    assert main(["run", str(pkg_dir), "--task", "sr", "--prompt", "hi", "--image", str(data / row["condition"]),
                 "--steps", "3", "--out", str(tmp_path / "o.png")]) == 0
    io = capsys.readouterr()
    assert io.err == "warning: task 'sr' reads no text; the prompt 'hi' is ignored\n"
    assert "steps 3, strength 0.4*" in io.out


def test_a_model_folders_sampling_file_that_is_a_link_is_refused(tiny_package, tmp_path, capsys):
    _, _, mtu, _ = tiny_package
    shutil.copytree(mtu, tmp_path / "mtu")
    outside = _file(tmp_path, GOOD, "outside.json")
    (tmp_path / "mtu" / SAMPLING_FILE).symlink_to(outside)
    assert main(["export", str(tmp_path / "mtu"), "--out", str(tmp_path / "pkg"), "--tasks", "sr"]) == 2
    err = capsys.readouterr().err
    assert "sampling.json' is a symbolic link" in err and "Traceback" not in err
    assert not (tmp_path / "pkg").exists()


def test_a_truncated_sampling_file_is_refused(tmp_path):
    whole = json.dumps(GOOD)
    with pytest.raises(ConfigError, match="is not JSON"):
        read_sampling(_file(tmp_path, whole[: len(whole) // 2]), TASKS)
