import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import amdim_lib.__main__ as cli
from amdim_lib.__main__ import main


def test_help_is_available_for_every_command():
    for command in ([], ["train"], ["eval"], ["bench"], ["demo"], ["reproduce"]):
        result = subprocess.run([sys.executable, "-m", "amdim_lib", *command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "usage:" in result.stdout


def test_print_config_resolves_overrides(capsys):
    main(["train", "--preset", "smoke", "--set", "tasks=1t7", "--set", "tclip=None", "--set", "lr=1e-3", "--print-config"])
    config = json.loads(capsys.readouterr().out)
    assert config["tasks"] == ["1t7"] and config["tclip"] is None and config["lr"] == 1e-3


@pytest.mark.parametrize("argv,message", [
    (["train", "--set", "foo=1"], "KEY one of"),
    (["train", "--set", "batch_size=1"], ">= 2"),
    (["eval", "--checkpoint", "/nonexistent/checkpoint.pt"], "no checkpoint"),
])
def test_bad_input_gives_a_clear_error(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(argv + (["--print-config"] if argv[0] == "train" else []))


def test_train_eval_and_bench_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--preset", "smoke", "--out", str(out), "--no-progress", "--set", "epochs=1"])
    assert (out / "checkpoint.pt").exists()
    main(["eval", "--checkpoint", str(out / "checkpoint.pt")])
    results = json.loads((out / "eval.json").read_text())
    assert set(results) == {"AMDIM (trained)", "random init", "raw pixels"}
    assert all(0 <= r["linear"] <= 1 and 0 <= r["knn"] <= 1 for r in results.values())
    assert "| raw pixels |" in (out / "report.md").read_text()
    main(["bench", "--preset", "smoke", "--steps", "2", "--data-steps", "3"])
    printed = capsys.readouterr().out
    assert "images/s" in printed and "peak memory" in printed and "data pipeline" in printed and "lost to data loading" in printed
    assert "3 steps an epoch" in printed


def test_the_photograph_demo_fetches_first_then_runs_training_and_evaluation_on_it(tmp_path, monkeypatch):
    fetched, ran = [], []
    monkeypatch.setattr(cli, "fetch", lambda name, data_dir=None: fetched.append((name, data_dir)) or tmp_path / name)
    monkeypatch.setattr(cli, "run_workbook", lambda out, **kwargs: ran.append((out, kwargs)) or {})
    main(["demo", "--dataset", "cifar10", "--download"])
    assert fetched == [("cifar10", None)]
    assert ran == [("runs/demo-cifar10", dict(preset="demo", only=["04", "05"], device="auto", dataset="cifar10",
                                              data_dir=str(tmp_path / "cifar10")))]
    main(["demo", "--dataset", "cifar10", "--data-dir", "/data/c10", "--out", "elsewhere"])  # no --download: no fetch
    assert len(fetched) == 1 and ran[-1][0] == "elsewhere" and ran[-1][1]["data_dir"] == "/data/c10"
    main(["demo"])  # Shapes: the whole workbook, as make demo runs it
    assert ran[-1] == ("runs/demo", dict(preset="demo", only=None, device="auto"))


def test_the_photograph_demo_runs_the_training_and_evaluation_notebooks_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for label in range(4):
            folder = tmp_path / "photos" / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) // (label + 1)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    assert main(["demo", "--dataset", "folder", "--data-dir", str(tmp_path / "photos"), "--preset", "smoke",
                 "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(summary) == ["04_training", "05_evaluation"] and (tmp_path / "out" / "report.html").exists()
    assert json.loads((tmp_path / "out" / "04_training" / "config.json").read_text())["dataset"] == "folder"
