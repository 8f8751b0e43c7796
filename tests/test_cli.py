import json
import subprocess
import sys

import pytest

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
