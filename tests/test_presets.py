import pytest

from amdim_lib.run.presets import MODEL_SIZES, PRESETS_NAMES, WORKBOOK_SIZES, get_config, preset_names, workbook_sizes


def test_every_notebook_has_sizes_at_every_preset_and_the_paper_variants_use_the_papers():
    for notebook, sizes in WORKBOOK_SIZES.items():
        assert set(sizes) == set(PRESETS_NAMES), notebook
        for preset in preset_names():
            expected = sizes.get(preset, sizes["paper"])
            assert workbook_sizes(notebook, preset) == expected
    copy = workbook_sizes("07", "demo")
    copy["model"]["ndf"] = 1
    assert workbook_sizes("07", "demo")["model"]["ndf"] == MODEL_SIZES["small"]["ndf"]  # a copy, not the table


def test_the_short_runs_of_notebooks_03_and_07_are_valid_configurations():
    for preset in PRESETS_NAMES:
        train = workbook_sizes("03", preset)["train"]
        get_config("shapes", train.pop("base"), **train)
        sizes = workbook_sizes("07", preset)
        get_config("shapes", sizes["base"], mixture_k=4, **sizes["model"])


def test_unknown_notebook_and_preset_are_named():
    with pytest.raises(ValueError, match="'08'.*'01'"):
        workbook_sizes("08", "demo")
    with pytest.raises(ValueError, match="'huge'.*smoke"):
        workbook_sizes("01", "huge")
