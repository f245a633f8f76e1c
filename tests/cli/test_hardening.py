"""Inputs that used to escape as tracebacks, hangs, huge allocations or terminal tricks: each is one
``error: ...`` line naming the value and the bound, exit status 2, before any work."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests._helpers import cli, one_line_error
from taskfold.errors import printable




@contextmanager
def _deadline(seconds: int):
    """Fail (instead of hanging the suite) if the block takes longer than ``seconds``."""
    def expired(*_):
        raise AssertionError(f"still running after {seconds} s: it blocked")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png(path: Path, width: int, height: int, pixels: bool = True) -> Path:
    """A valid 8-bit grey PNG of black pixels, written without holding the image (169 Mpx -> 0.7 MB), or with
    ``pixels=False`` only its header (a file Pillow refuses as a decompression bomb before reading on)."""
    z = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte + pixels
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush() if pixels else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    root = tmp_path_factory.mktemp("huge")
    return grey_png(root / "huge.png", 13000, 13000), grey_png(root / "bomb.png", 20000, 20000, pixels=False)


# --- task names ----------------------------------------------------------------------------------

def test_a_task_name_with_a_trailing_newline_is_refused(tmp_path, capsys):
    from taskfold.errors import TaskError
    from taskfold.tasks import TaskSpec

    with pytest.raises(TaskError, match="invalid task name 'depth\\\\n'"):
        TaskSpec(name="depth\n")
    assert TaskSpec(name="depth").name == "depth"
    cfg = tmp_path / "up.json"
    cfg.write_text(json.dumps({"tasks": ["t2i", "depth\n"], "custom_tasks": [{"name": "depth\n"}]}))
    code, _, err = cli(capsys, "upcycle", "--base", "preset:tiny", "--config", cfg, "--out", tmp_path / "m")
    one_line_error(code, err)
    assert "invalid task name 'depth\\n'" in err and not (tmp_path / "m").exists()


# --- images: bounded from the header, Pillow's errors as one line ----------------------------------

def test_an_image_too_large_is_refused_from_its_header(huge, tmp_path):
    from taskfold.errors import ConfigError
    from taskfold.runtime.images import MAX_IMAGE_SIDE, open_image

    big, bomb = huge
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"is 13000x13000 pixels; taskfold reads images of at most {MAX_IMAGE_SIDE} "):
        open_image(big, "condition image")
    assert time.perf_counter() - start < 1.0  # 169 Mpx were never decoded (that takes seconds and 169 MB)
    with pytest.raises(ConfigError, match="larger than taskfold reads .* Image size \\(400000000 pixels\\)"):
        open_image(bomb, "condition image")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ConfigError, match="'.*notes.png' is not a readable image \\(cannot identify"):
        open_image(tmp_path / "notes.png")


def test_run_refuses_a_huge_or_bomb_image_in_one_line(tiny_package, huge, tmp_path, capsys):
    _, pkg, _, _ = tiny_package
    for image, words in zip(huge, ("is 13000x13000 pixels; taskfold reads images of at most 8192 pixels a side",
                                   "is larger than taskfold reads (at most 8192 pixels a side)")):
        code, _, err = cli(capsys, "run", pkg, "--task", "edit", "--prompt", "make it blue", "--image", image,
                            "--out", tmp_path / "o.png")
        one_line_error(code, err)  # no DecompressionBombWarning line either
        assert f"condition image '{image}' {words}" in err
    assert not (tmp_path / "o.png").exists()


def test_data_check_and_train_refuse_a_huge_image_alike(tiny_package, huge, tmp_path, capsys):
    _, _, mtu, data = tiny_package
    bad = tmp_path / "data"
    shutil.copytree(data, bad)
    shutil.copy(huge[0], bad / "huge.png")
    shutil.copy(huge[1], bad / "bomb.png")
    with open(bad / "metadata.jsonl", "a") as f:
        for name in ("huge.png", "bomb.png"):
            f.write(json.dumps({"task": "t2i", "prompt": "a red circle", "target": name}) + "\n")
    lines = len((bad / "metadata.jsonl").read_text().splitlines())
    code, out, err = cli(capsys, "data", "check", bad)
    assert code == 2 and "Traceback" not in err, err
    assert f"line {lines - 1}: target 'huge.png' is 13000x13000 pixels; taskfold reads images of at most 8192" in err
    assert f"line {lines}: target 'bomb.png' is larger than taskfold reads" in err
    code, _, err = cli(capsys, "train", mtu, "--data", bad, "--steps", "1", "--out", tmp_path / "run")
    one_line_error(code, err)
    assert "target 'huge.png' is 13000x13000 pixels" in err
    assert not (tmp_path / "run").exists()  # not even train_config.json


# --- prompts -----------------------------------------------------------------------------------------

def test_a_prompt_of_bytes_that_are_not_utf8_is_refused(tiny_package, tmp_path, capsys):
    _, pkg, _, _ = tiny_package
    prompt = b"caf\xe9 circle".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
    code, _, err = cli(capsys, "run", pkg, "--task", "t2i", "--prompt", prompt, "--out", tmp_path / "o.png")
    one_line_error(code, err)
    assert "--prompt is not valid UTF-8 text: byte(s) e9 at character 3" in err
    assert not (tmp_path / "o.png").exists()


def test_prompt_warnings_are_linear_in_the_prompt(tiny_package, monkeypatch):
    import random
    import string

    from taskfold.runtime import open_package

    _, pkg_dir, _, _ = tiny_package
    pkg = open_package(pkg_dir)
    tok = pkg._load_tokenizer()
    # pieces agree with one call: known and unknown words, punctuation, repeats, odd white space
    rng = random.Random(0)
    vocab = ["a", "red", "circle", "make", "it", "blue", "zorblax", "qux", ",", "square!", "\t", "\n"]
    text = " ".join(rng.choice(vocab) for _ in range(1500))
    n, unknown = tok.untruncated(text)
    assert pkg.prompt_warnings("t2i", text) == [
        f"prompt word(s) {', '.join(map(repr, unknown))} are not in the text encoder's vocabulary (encoded as unknown)",
        f"the prompt is {n} tokens; the text encoder reads the first {tok.max_length}"]

    calls = []
    untruncated = tok.untruncated

    def counted(prompt):
        calls.append(len(prompt))
        return untruncated(prompt)
    monkeypatch.setattr(tok, "untruncated", counted)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(8)) for _ in range(40_000)]
    start = time.perf_counter()
    warnings = pkg.prompt_warnings("t2i", " ".join(words))
    took = time.perf_counter() - start
    assert len(calls) == 1 + math.ceil(40_000 / 256)  # the begin/end count, then pieces of 256 words
    assert max(calls) < 256 * 9
    distinct = len(set(words))
    assert warnings == [
        f"prompt word(s) {', '.join(map(repr, list(dict.fromkeys(words))[:20]))} and {distinct - 20:,} more are not "
        "in the text encoder's vocabulary (encoded as unknown)",
        f"the prompt is {40_002} tokens; the text encoder reads the first {tok.max_length}"]
    assert took < 1.0, f"{took:.2f} s"  # one call on the whole prompt took 9.9 s


# --- config sizes and config files --------------------------------------------------------------------

def test_every_size_a_config_sets_is_bounded(tmp_path, capsys):
    from taskfold.train.config import LIMITS as TRAIN_LIMITS
    from taskfold.upcycle.config import LIMITS as UPCYCLE_LIMITS

    cases = []
    for key, most in UPCYCLE_LIMITS.items():
        if key == "seed":
            continue  # the command's own --seed wins over the file's; checked below
        value = (["t2i"] * (most + 1) if key == "tasks" else ["*"] * (most + 1) if key == "blocks"
                 else [{"name": f"t{i}"} for i in range(most + 1)] if key == "custom_tasks" else most + 1)
        cfg = tmp_path / f"{key}.json"
        cfg.write_text(json.dumps({key: value}))
        cases.append((["upcycle", "--base", "preset:tiny", "--config", cfg, "--out", tmp_path / "m"],
                      f"upcycle config {key}: {'length ' if isinstance(value, list) else ''}{most + 1:,} is more "
                      f"than the most taskfold accepts, {most:,}"))
    cases.append((["upcycle", "--base", "preset:tiny", "--router-hidden", str(10**9), "--out", tmp_path / "m"],
                  "router_hidden: 1,000,000,000 is more than the most taskfold accepts, 4,096"))
    cases.append((["upcycle", "--base", "preset:tiny", "--experts", str(10**6), "--out", tmp_path / "m"],
                  "num_experts: 1,000,000 is more than the most taskfold accepts, 64"))
    for key, most in TRAIN_LIMITS.items():
        flag = "--" + key.replace("_", "-")
        if key == "num_train_timesteps":
            continue  # not an option; checked below
        steps = [] if key == "steps" else ["--steps", "1"]
        cases.append((["train", tmp_path / "mtu", "--data", tmp_path / "data", *steps, flag, str(most + 1),
                       "--out", tmp_path / "r"], f"{flag} {most + 1:,} is more than the most taskfold accepts, {most:,}"))
    for argv, words in cases:
        code, _, err = cli(capsys, *argv)
        one_line_error(code, err)
        assert words in err, (argv, err)
    from taskfold.errors import ConfigError
    from taskfold.train.config import TrainConfig
    from taskfold.upcycle.config import UpcycleConfig

    with pytest.raises(ConfigError, match="seed: 9,223,372,036,854,775,808 is more than the most taskfold accepts"):
        UpcycleConfig.from_dict({"seed": 2**63})
    with pytest.raises(ConfigError, match="--num-train-timesteps 100,001 is more than the most taskfold accepts"):
        TrainConfig(num_train_timesteps=100_001)
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_a_fifo_or_folder_given_as_a_config_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    with _deadline(30):
        code, _, err = cli(capsys, "upcycle", "--base", "preset:tiny", "--config", fifo, "--out", tmp_path / "m")
        one_line_error(code, err)
        assert f"upcycle config '{fifo}' is a FIFO, not a regular file" in err
        code, _, err = cli(capsys, "data", "check", tmp_path, "--config", fifo)
        one_line_error(code, err)
        assert "is a FIFO, not a regular file" in err
        (tmp_path / "folder").mkdir()
        code, _, err = cli(capsys, "upcycle", "--base", "preset:tiny", "--config", tmp_path / "folder", "--out",
                            tmp_path / "m")
        one_line_error(code, err)
        assert "is a folder, not a regular file" in err
        mtu = tmp_path / "mtu"
        mtu.mkdir()
        os.mkfifo(mtu / "config.json")  # a model folder whose config is a FIFO
        code, _, err = cli(capsys, "inspect", mtu)
        one_line_error(code, err)
    from taskfold._io import read_versioned_json
    from taskfold.errors import CheckpointError

    with _deadline(30), pytest.raises(CheckpointError, match="MTU config '.*config.json' is a FIFO, not a regular"):
        read_versioned_json(mtu / "config.json", "taskfold-mtu", 1, CheckpointError, "MTU config")


# --- output paths of `run` -----------------------------------------------------------------------------

def test_run_checks_its_output_path_before_generating(tiny_package, tmp_path, capsys, monkeypatch):
    import taskfold.runtime.package as package

    _, pkg, _, _ = tiny_package

    def no_opening(*a, **k):
        raise AssertionError("the package was opened before --out was checked")
    monkeypatch.setattr(package, "open_package", no_opening)
    dangling = tmp_path / "z.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    code, _, err = cli(capsys, "run", pkg, "--task", "t2i", "--out", dangling, "--overwrite")
    one_line_error(code, err)
    assert f"--out '{dangling}' is a symbolic link" in err and not (tmp_path / "nowhere.png").exists()
    code, _, err = cli(capsys, "run", pkg, "--task", "t2i", "--out", "/nonexistent/dir/z.png")
    one_line_error(code, err)
    assert "--out '/nonexistent/dir/z.png': its folder '/nonexistent/dir' does not exist" in err
    code, _, err = cli(capsys, "run", pkg, "--task", "t2i", "--out", tmp_path / "new" / "z.png")
    one_line_error(code, err)
    assert not (tmp_path / "new").exists()  # never created silently
    (tmp_path / "d.png").mkdir()
    code, _, err = cli(capsys, "run", pkg, "--task", "t2i", "--out", tmp_path / "d.png", "--overwrite")
    one_line_error(code, err)
    assert "is a folder; give a file path" in err


# --- control characters ----------------------------------------------------------------------------------

def test_printable_escapes_what_a_terminal_would_act_on():
    assert printable("\x1b[2K\rok: 12 files match") == "\\x1b[2K\\rok: 12 files match"
    assert printable("a\x00b\x7fc\x85d\x9b\u2028e\u202ef\udcff") == "a\\x00b\\x7fc\\x85d\\x9b\\u2028e\\u202ef\\udcff"
    assert printable("café, C:\\path\\n, 形") == "café, C:\\path\\n, 形"  # text and backslashes stay


def test_verify_escapes_a_file_name_that_would_rewrite_the_line(tiny_package, tmp_path, capsys):
    _, pkg, _, _ = tiny_package
    copy = tmp_path / "pkg"
    shutil.copytree(pkg, copy)
    (copy / "\x1b[2K\rok: 12 files match").write_bytes(b"")
    code, out, err = cli(capsys, "verify", copy)
    assert code == 2 and out == ""
    assert "\x1b" not in err and "\r" not in err and "Traceback" not in err, err
    assert "\\x1b[2K\\rok: 12 files match" in err
    assert err.splitlines()[-1].startswith("error: 1 problem(s) in ")


def test_errors_escape_control_characters_in_what_they_quote(tmp_path, capsys, monkeypatch):
    import taskfold.upcycle.checkpoint as checkpoint
    from taskfold.errors import CheckpointError

    def bad(path):
        raise CheckpointError(f"cannot read {path}/config.json\x1b[2K\rok", hint="a hint with \x9b2J in it")
    monkeypatch.setattr(checkpoint, "load_mtu", bad)
    code, _, err = cli(capsys, "inspect", tmp_path / "m\x1b]0;pwned\x07")
    one_line_error(code, err)
    assert not any(c in err for c in "\x1b\x07\x9b\r"), err
    assert "m\\x1b]0;pwned\\x07/config.json\\x1b[2K ok (hint: a hint with \\x9b2J in it)" in err
