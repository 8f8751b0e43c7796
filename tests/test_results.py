"""analysis.results: the paper's figures with the encoder of each, and evaluations that say which checkpoint
they describe."""

import json

from amdim_lib.__main__ import main
from amdim_lib.analysis.results import (PAPER_LINEAR, PAPER_MODEL, paper_reference, paper_results_table, results_table,
                                        run_row)
from amdim_lib.run.presets import MODEL_SIZES, get_config
from amdim_lib.run.runfolder import RunFolder
from amdim_lib.run.train import train


def test_the_papers_table_holds_every_figure_with_its_encoder():
    lines = paper_results_table().splitlines()
    assert lines[0] == "| data set | linear (%) | encoder | source |" and len(lines) == 2 + len(PAPER_LINEAR)
    for key, linear in PAPER_LINEAR.items():
        size = MODEL_SIZES[PAPER_MODEL[key]]
        row = next(line for line in lines if f"| {linear:.1f} |" in line)
        assert f"ndf {size['ndf']}, n_rkhs {size['n_rkhs']}, depth {size['n_depth']}" in row, key
    assert "| ImageNet | 68.1 | 128 px," in paper_results_table()


def test_an_evaluation_names_its_checkpoint_and_the_table_flags_it_once_the_run_moves_on(tmp_path):
    config = get_config("shapes", "smoke", train_size=128, test_size=64, batch_size=32, epochs=2)
    train(config, tmp_path, stop_at_step=2)  # an evaluation of a run that is still training
    assert main(["eval", "--checkpoint", str(tmp_path / RunFolder.CHECKPOINT), "--no-baselines"]) == 0
    info = json.loads((tmp_path / RunFolder.EVAL_INFO).read_text())
    assert info["step"] == 2 and info["preset"] == "checkpoint" and len(info["sha256"]) == 64
    assert "at step 2 (SHA-256 " in (tmp_path / RunFolder.REPORT).read_text()
    assert run_row(tmp_path)["stale"] is None
    train(config, tmp_path, resume=True)  # the run goes on to its final checkpoint
    stale = run_row(tmp_path)["stale"]
    assert "evaluated at step 2" in stale and "run eval again" in stale
    assert "(STALE: evaluated at step 2;" in results_table([run_row(tmp_path)], include_missing=False)
    main(["eval", "--checkpoint", str(tmp_path / RunFolder.CHECKPOINT), "--no-baselines"])
    assert run_row(tmp_path)["stale"] is None and json.loads((tmp_path / RunFolder.EVAL_INFO).read_text())["step"] == 8


def test_paper_reference_is_the_figure_of_the_same_encoder():
    assert paper_reference("cifar10", model="cifar") == ("CIFAR-10", 91.2)
    assert paper_reference("stl10", model="stl10") == ("STL-10", 94.2)
    assert paper_reference("folder", "/data/cifar-100-subset", model="cifar") == ("CIFAR-100", 70.2)
    assert paper_reference("imagenet", model="imagenet") == ("ImageNet", 68.1)
    # Another encoder (the small CIFAR model, a demo model, an unknown size) has no paper figure to match.
    assert paper_reference("cifar10", model="official") == ("CIFAR-10", None)
    assert paper_reference("stl10", model="cifar")[1] is None
    assert paper_reference("cifar10")[1] is None
    assert paper_reference("shapes") == ("Shapes", None)
    assert paper_reference("folder", "/data/my_photos")[1] is None


def test_the_scales_table_labels_each_row_with_its_encoder_and_budget(tmp_path):
    from amdim_lib.analysis.results import photo_result, scales_table

    assert photo_result(tmp_path / "absent.json") is None
    run = {"name": "Shapes, this run", "ndf": 32, "n_rkhs": 256, "n_depth": 2, "budget": "cpu, 1,023 updates of batch 64, 4 min",
           "trained": 0.871, "random init": 0.19, "raw pixels": 0.162}
    photo = {"data": "CIFAR-10 image folder cifar10-subset", "seed": 0, "model": {"ndf": 32, "n_rkhs": 256, "n_depth": 2},
             "updates": 2652, "batch_size": 64, "train_seconds": 600, "cpu": "a 2-core CPU",
             "accuracy": {"AMDIM (trained)": {"linear": 0.68}, "random init": {"linear": 0.40}, "raw pixels": {"linear": 0.34}}}
    lines = scales_table(run, photo).splitlines()
    assert len(lines) == 5
    assert "| Shapes, this run | ndf 32, n_rkhs 256, depth 2 | cpu, 1,023 updates of batch 64, 4 min | 87.1 | 19.0 | 16.2 |" in lines
    assert "2,652 updates of batch 64, 10 min on a 2-core CPU | 68.0 | 40.0 | 34.0 |" in lines[3]
    assert lines[4].startswith("| CIFAR-10, the paper | ndf 320, n_rkhs 1280, depth 10 |") and "91.2" in lines[4]
    assert len(scales_table(run).splitlines()) == 4, "without a committed photograph result, its row is left out"
