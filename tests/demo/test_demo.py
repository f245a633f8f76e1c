"""A reduced ``taskfold demo`` end to end: every stage runs, the page holds every number and image,
and a second run reuses what is finished."""

from __future__ import annotations

import json
import re

import pytest

from taskfold.cli import main
from taskfold.demo import STAGES_FILE, DemoConfig, bundled_base, bundled_mtu, stages

#: CoreML is left out here (its conversion is tested in tests/export); the page shows whichever formats ran.
ARGS = ["--steps", "4", "--batch-size", "4", "--data-rows", "20", "--eval", "2", "--bench-runs", "2", "--strength",
        "sr=0.6,edit=0.5", "--guidance", "t2i=3", "--image-guidance", "edit=2", "--formats", "onnx", "--no-progress"]
STAGES = ["upcycle", "data", "train", "export", "evaluate", "routers", "bench", "report"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    assert main(["demo", "--out", str(out), *ARGS]) == 0
    return out


def test_every_stage_ran_and_is_recorded(demo):
    stages = json.loads((demo / STAGES_FILE).read_text())
    assert list(stages) == STAGES
    assert all(s["finished"] for s in stages.values())
    assert stages["upcycle"]["argv"][:3] == ["upcycle", "--base", str(bundled_base())]
    manifest = json.loads((demo / "package" / "manifest.json").read_text())
    assert sorted(manifest["tasks"]) == ["edit", "inpaint", "sr", "t2i"]
    assert all(g["parity"].get("status") in ("passed", "structural") for g in manifest["graphs"])
    assert stages["export"]["argv"][1] == str(bundled_mtu())  # the page shows the bundled fine-tune
    assert manifest["sampling"]["file"] == "sampling.json"  # with the sampling its validation chose
    assert stages["evaluate"]["argv"][stages["evaluate"]["argv"].index("--strength") + 1] == "sr=0.6,edit=0.5"
    sampling = {t: m["sampling"] for t, m in json.loads((demo / "eval" / "metrics.json").read_text())["tasks"].items()}
    rec = manifest["tasks"]  # what is not given on the command line is the package's recommendation
    assert sampling["sr"] == {"strength": 0.6, "guidance_scale": None, "image_guidance_scale": None,
                              "steps": rec["sr"]["steps"]}
    assert sampling["edit"] == {"strength": 0.5, "guidance_scale": rec["edit"]["guidance_scale"],
                                "image_guidance_scale": 2.0, "steps": rec["edit"]["steps"]}
    assert sampling["inpaint"] == {k: rec["inpaint"][k] for k in
                                   ("strength", "guidance_scale", "image_guidance_scale", "steps")}
    assert sampling["t2i"] == {"strength": 1.0, "guidance_scale": 3.0, "image_guidance_scale": None,
                               "steps": rec["t2i"]["steps"]}


def test_the_demo_can_show_its_own_fine_tune_instead(tmp_path):
    argv = {name: a for name, a, _ in stages(DemoConfig(out=str(tmp_path), model="trained"))}
    own = str(tmp_path / "train" / "mtu")
    assert argv["export"][1] == own and argv["routers"][1] == own and argv["bench"][argv["bench"].index("--model") + 1] == own


def test_page_shows_every_image_and_number(demo):
    page = (demo / "index.html").read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources, "no images on the page"
    for src in sources:
        assert (demo / src).is_file(), src
    metrics = json.loads((demo / "eval" / "metrics.json").read_text())
    for task, m in metrics["tasks"].items():
        assert f"<h3>{task}</h3>" in page
        shown = [f"{m['psnr']:.2f} / {m['ssim']:.3f}"] if "psnr" in m else []
        if task != "sr":  # every other built-in task is scored by whether it did its job, with its interval
            lo, hi = m["success_interval"]
            shown.append(f"{m['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] ({m['successes']}/{m['n']})")
        if task in ("edit", "inpaint"):  # and counted per kind of row
            kinds = m["success_by_kind"]
            assert sum(n for _, n in kinds.values()) == m["n"] and sum(k for k, _ in kinds.values()) == m["successes"]
            shown.append(", ".join(f"{kind} {k}/{n}" for kind, (k, n) in kinds.items()))
        for name, also in m.get("also", {}).items():  # the earlier edit metric, beside the strict one
            shown.append(f"earlier {name.replace('_', '-')} metric: {also['successes']}/{m['n']}")
        if task == "edit":
            assert set(kinds) <= {"recolour", "move", "resize"} and "asked_only" in m["also"]
            for s in m["samples"][:8]:  # each column's verdict names what the strict metric found wrong
                assert ("(" + ", ".join(s["wrong"]) + " wrong)" in page) if s["wrong"] else s["success"]
        assert shown
        for cell in shown:
            assert cell in page and cell in (demo / "report.md").read_text(), cell
        shown_samples = min(8, len(m["samples"]))
        assert page.count(f"{task} output") == shown_samples
    bench = json.loads((demo / "bench" / "report.json").read_text())
    for r in bench["rows"]:
        assert f"{r['flop_ratio_conv_in_aside']:.6f}" in page
    assert "routers.png" in sources and "bench/latency.png" in sources
    rec = json.loads((demo / "package" / "manifest.json").read_text())["tasks"]
    inpaint = rec["inpaint"]
    start = f"img2img {inpaint['strength']:g}" if inpaint["strength"] < 1 else "from noise"
    for cell in (f"img2img 0.6, guidance none, {rec['sr']['steps']} steps",
                 f"img2img 0.5, guidance {rec['edit']['guidance_scale']:g} / 2, {rec['edit']['steps']} steps",
                 f"{start}, guidance {inpaint['guidance_scale']:g} / {inpaint['image_guidance_scale']:g}, "
                 f"{inpaint['steps']} steps",
                 f"from noise, guidance 3, {rec['t2i']['steps']} steps"):
        assert f"<td>{cell}</td>" in page, cell
    assert "models/tiny-mtu (bundled fine-tune)" in page
    # the columns a newcomer asked about are explained where they appear
    flat = " ".join(page.split())
    for words in ("is the same graph in a plain session", "minus after the previous contender",
                  "does not count scaled_dot_product_attention"):
        assert words in flat, words


@pytest.mark.parametrize("args, words", [
    (["--strength", "0"], "strength 0.0 must be a number in (0, 1]"),
    (["--strength", "sr=2"], "strength 2.0 must be a number in (0, 1]"),
    (["--guidance", "paint=3"], "--guidance names task(s) 'paint'; the tasks here are t2i, edit, sr, inpaint"),
    (["--image-guidance", "edit=-1"], "--image-guidance -1.0 must be a positive scale"),
    (["--formats", "coreml"], "must include onnx"),
])
def test_bad_demo_options_are_refused_before_any_stage(tmp_path, capsys, args, words):
    assert main(["demo", "--out", str(tmp_path / "d"), *args]) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_second_run_reuses_finished_stages(demo, capsys):
    before = (demo / "index.html").stat().st_mtime_ns
    assert main(["demo", "--out", str(demo), *ARGS]) == 0
    out = capsys.readouterr().out
    assert out.count("done before, reused") == len(STAGES)
    assert (demo / "index.html").stat().st_mtime_ns == before


def test_changed_stage_reruns_it_and_what_follows(demo, capsys):
    args = list(ARGS)
    args[args.index("--bench-runs") + 1] = "3"
    assert main(["demo", "--out", str(demo), *args]) == 0
    out = capsys.readouterr().out
    reused = re.findall(r"\[demo\] (\S+): done before", out)
    assert reused == STAGES[:STAGES.index("bench")]
    assert json.loads((demo / "bench" / "report.json").read_text())["config"]["runs"] == 3


def test_report_of_an_unfinished_folder_is_refused(tmp_path, capsys):
    (tmp_path / "stages.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a finished demo folder" in err and not (tmp_path / "index.html").exists()
