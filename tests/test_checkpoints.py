"""Using a checkpoint (eval, resume): every unusable file is named in one line with what to do, the
evaluation's output folder is checked before the work, Ctrl-C ends cleanly; a fuzz over checkpoints."""

import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
import tempfile
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import amdim_lib.__main__ as cli
from amdim_lib import load_encoder
from amdim_lib.__main__ import main
from amdim_lib.run.checkpoints import load_checkpoint, save_checkpoint
from amdim_lib.run.presets import Config, get_config
from amdim_lib.run.train import build_state, resume_from_checkpoint, train, train_step, Runtime

TINY = dict(train_size=64, test_size=32, batch_size=16, epochs=1)


class Evaluated(Exception):
    """Raised by the stand-in for evaluate_encoder: the checkpoint was accepted and evaluation began."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    train(get_config("shapes", "smoke", **TINY), out, progress=False)
    return out


@pytest.fixture
def run(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def no_evaluation(monkeypatch):
    def evaluate_encoder(*args, **kwargs):
        raise Evaluated
    monkeypatch.setattr(cli, "evaluate_encoder", evaluate_encoder)  # the name the command line calls


def _eval_exit(*argv) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(["eval", *argv])
    assert stopped.value.code not in (0, None)
    return str(stopped.value.code)


def _edited(run, change) -> str:
    state = load_checkpoint(run / "checkpoint.pt")
    change(state)
    save_checkpoint(run / "edited.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    return str(run / "edited.pt")


# ----------------------------------------------------------------------------- the output folder, Ctrl-C

def test_eval_refuses_a_read_only_folder_before_evaluating(run, monkeypatch, no_evaluation):
    """(Tests run as root, who may write anywhere: read-only is simulated by os.access saying so.)"""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(run) else real_access(p, mode))
    before = sorted(p.name for p in run.iterdir())
    message = _eval_exit("--checkpoint", str(run / "checkpoint.pt"))
    assert f"{run} is read-only" in message and "--out" in message and "\n" not in message
    assert sorted(p.name for p in run.iterdir()) == before


def test_eval_refuses_an_output_that_is_a_file_before_evaluating(run, no_evaluation):
    (run / "taken").write_text("keep")
    message = _eval_exit("--checkpoint", str(run / "checkpoint.pt"), "--out", str(run / "taken"))
    assert f"{run / 'taken'} is a file, not a folder" in message
    assert (run / "taken").read_text() == "keep"


def test_ctrl_c_in_eval_ends_with_a_message_and_writes_nothing(run):
    # As in a terminal: a parent started in the background (CI) may have set SIGINT to be ignored, which
    # the child would inherit.
    stand_in = ("import signal, sys, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
                "import amdim_lib.analysis.evaluate as e\n"
                "e.evaluate_encoder = lambda *a, **k: time.sleep(120)  # the evaluation, as long as it takes\n"
                "from amdim_lib.__main__ import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", stand_in, "eval", "--checkpoint", str(run / "checkpoint.pt")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.startswith(f"evaluating {run / 'checkpoint.pt'}"), (first, proc.communicate())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert "eval interrupted (Ctrl-C)" in err and "evaluate again" in err and "Traceback" not in err
    assert not (run / "eval.json").exists() and not (run / "report.md").exists()


# ----------------------------------------------------------------------------- unusable checkpoints

def test_the_library_loader_names_a_checkpoint_whose_contents_do_not_fit(run):
    # Sweeps and notebooks load encoders without the command line: they get the same one-line error.
    from amdim_lib.run.build import encoder_from_checkpoint

    for change, expected in ((lambda s: s.pop("config"), "it has no 'config' entry"),
                             (lambda s: s["encoder"].pop("head5.conv1.weight"), "its weights do not fit")):
        path = _edited(run, change)
        with pytest.raises(ValueError, match="cannot be used") as refused:
            encoder_from_checkpoint(path)
        assert path in str(refused.value) and expected in str(refused.value) and "\n" not in str(refused.value)



@pytest.mark.parametrize("change,expected", [
    (lambda s: s.pop("config"), "it has no 'config' entry"),
    (lambda s: s["config"].update(ndf=-3), "invalid configuration: ndf=-3"),
    (lambda s: s["encoder"].update({"to_r7.0.conv.weight": torch.zeros(3, 3, 3, 3)}),
     "its weights do not fit the configuration it records (size mismatch for to_r7.0.conv.weight"),
    (lambda s: s["encoder"].pop("head5.conv1.weight"), "its weights do not fit the configuration it records (Missing key"),
])
def test_eval_names_a_checkpoint_whose_contents_do_not_fit(run, no_evaluation, change, expected):
    path = _edited(run, change)
    message = _eval_exit("--checkpoint", path)
    assert message.startswith(f"error: {path} cannot be used: ") and expected in message
    assert "another checkpoint of the run" in message and "\n" not in message


def test_eval_refuses_non_finite_weights_naming_the_checkpoint(run, no_evaluation):
    path = _edited(run, lambda s: s["encoder"]["head7.conv1.weight"].view(-1)[0].fill_(float("nan")))
    message = _eval_exit("--checkpoint", path)
    assert f"{path} holds non-finite weights (head7.conv1.weight)" in message and "earlier checkpoint" in message


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool])
def test_load_encoder_refuses_weights_that_are_not_floating_point(run, dtype):
    # load_state_dict would cast them silently: int64 truncates every weight, complex drops a part.
    path = _edited(run, lambda s: s["encoder"].update(
        {"head5.conv1.weight": s["encoder"]["head5.conv1.weight"].mul(1000).to(dtype)}))
    with pytest.raises(ValueError, match=r"holds weights that are not floating-point numbers \(head5.conv1.weight"):
        load_encoder(path)
    assert "not floating-point numbers" in _eval_exit("--checkpoint", path)


def test_load_encoder_refuses_non_finite_weights_for_every_caller(run):
    path = _edited(run, lambda s: s["encoder"]["to_r1.0.0.conv1.weight"].__setitem__((0, 0, 0, 0), float("inf")))
    with pytest.raises(ValueError, match=r"holds non-finite weights \(to_r1.0.0.conv1.weight\)"):
        load_encoder(path)


def test_an_unsafe_file_is_refused_without_advising_the_unsafe_load(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this would have run",))
    torch.save({"format": "amdim-workbook-checkpoint", "version": 1, "x": Payload()}, tmp_path / "evil.pt")
    message = _eval_exit("--checkpoint", str(tmp_path / "evil.pt"))
    assert str(tmp_path / "evil.pt") in message and "Python object (print)" in message and "refused" in message
    assert "weights_only" not in message and "can still be loaded" not in message and "succeed" not in message


# What torch.load says when it refuses a file, in the wordings of the PyTorch versions the project allows
# (2.4-2.5: weights_only off by default; 2.6 on: on by default, with two options; other refusals).
_UNSAFE_ADVICE = "Re-running `torch.load` with `weights_only` set to `False` will likely succeed, but it can " \
                 "result in arbitrary code execution. Do it only if you got the file from a trusted source."
TORCH_REFUSALS = {
    "2.4": "Weights only load failed. " + _UNSAFE_ADVICE + "\n Please file an issue with the following so that we can "
           "make `weights_only=True` compatible with your use case: WeightsUnpickler error: Unsupported global: GLOBAL "
           "__main__.Payload was not an allowed global by default. Please use `torch.serialization.add_safe_globals("
           "[Payload])` to allowlist this global if you trust this class/function.",
    "2.6": "Weights only load failed. This file can still be loaded, to do so you have two options, do those steps only "
           "if you trust the source of the checkpoint. \n\t(1) In PyTorch 2.6, we changed the default value of the "
           "`weights_only` argument in `torch.load` from `False` to `True`. " + _UNSAFE_ADVICE + "\n\t(2) Alternatively, "
           "to load with `weights_only=True` please check the recommended steps in the following error message.\n\t"
           "WeightsUnpickler error: Unsupported global: GLOBAL posix.system was not an allowed global by default.",
    "operand": "Weights only load failed. This file can still be loaded, to do so you have two options. \n\t(1) "
               + _UNSAFE_ADVICE + "\n\tWeightsUnpickler error: Unsupported operand 149",
    "class": "Weights only load failed. " + _UNSAFE_ADVICE + "\nWeightsUnpickler error: Unsupported class "
             "__main__.Payload",
    "reduce": "Weights only load failed. " + _UNSAFE_ADVICE + "\nWeightsUnpickler error: Trying to call reduce for "
              "unrecognized function <built-in function eval> which belongs to builtins",
}


@pytest.mark.parametrize("version", sorted(TORCH_REFUSALS))
def test_no_wording_of_a_refusal_carries_the_advice_to_load_unsafely(version):
    from amdim_lib.run.checkpoints import load_failure
    message = load_failure(pickle.UnpicklingError(TORCH_REFUSALS[version]))
    for advice in ("weights_only", "False", "trust", "safe_globals", "can still be loaded", "succeed", "options"):
        assert advice not in message, (version, message)
    assert message.endswith("refused") and "\n" not in message


# ----------------------------------------------------------------------------- fuzz

def _junk(rng: random.Random):
    return rng.choice([None, 0, -1, 3.5, "x", [], [1, 2], {}, {"a": torch.ones(2)}, torch.zeros(2, 3), True])


def _mutate(rng: random.Random, state: dict) -> dict:
    """A checkpoint of the right format with one random fault: a key missing, a value replaced by
    junk, a tensor of the wrong shape, dtype or size, a broken configuration, or a random dict."""
    fault = rng.choice(["drop", "junk", "shape", "dtype", "oversize", "config", "nested", "random"])
    if fault == "random":
        return {f"k{i}": _junk(rng) for i in range(rng.randint(0, 4))}
    if fault in ("drop", "junk"):
        key = rng.choice(sorted(state))
        state.pop(key) if fault == "drop" else state.__setitem__(key, _junk(rng))
    elif fault in ("shape", "dtype", "oversize"):
        part = state[rng.choice(["encoder", "probes"])]
        name = rng.choice(sorted(part))
        tensor = part[name]
        part[name] = {"shape": lambda: torch.zeros(*[d + rng.randint(1, 3) for d in tensor.shape] or [2]),
                      "dtype": lambda: tensor.to(rng.choice([torch.float16, torch.float64, torch.int64, torch.bool,
                                                             torch.complex64, torch.uint8])),
                      # far more numbers than the configuration's weight holds: 4 MiB in place of a few bytes
                      "oversize": lambda: torch.zeros(2**20)}[fault]()
    elif fault == "config":
        key = rng.choice(sorted(state["config"]))
        rng.choice([lambda: state["config"].pop(key), lambda: state["config"].update({key: _junk(rng)}),
                    lambda: state["config"].update(unknown_key=1)])()
    else:
        part = rng.choice(["rng", "optimizer", "scheduler", "scaler"])
        if isinstance(state[part], dict) and state[part]:
            key = rng.choice(sorted(state[part]))
            state[part][key] = _junk(rng)
    return state


def _resumes_or_names_it(config: Config, folder) -> None:
    state = build_state(config, 10, torch.device("cpu"), 4)
    try:
        resume_from_checkpoint(state, config, folder)
    except ValueError as error:
        assert str(folder) in str(error) and "\n" not in str(error), error
        return
    x = torch.rand(config.batch_size, 3, 32, 32)
    losses, _, _ = train_step(state, x, x.flip(3), torch.zeros(config.batch_size, dtype=torch.long), config,
                              Runtime(torch.device("cpu")))
    assert losses is None or torch.isfinite(losses["loss"]), "a resumed run that was accepted can train"


def test_fuzz_checkpoints_through_eval_and_resume(trained, tmp_path, no_evaluation, capsys):
    rng, start = random.Random(0), time.time()
    config = get_config("shapes", "smoke", **TINY)
    base = load_checkpoint(trained / "checkpoint.pt")
    for trial in range(60):
        state = _mutate(rng, {k: v for k, v in torch.load(trained / "checkpoint.pt", weights_only=True).items()
                              if k not in ("format", "version")})
        folder = tmp_path / f"case{trial}"
        folder.mkdir()
        path = folder / "checkpoint.pt"
        save_checkpoint(path, state)
        try:
            main(["eval", "--checkpoint", str(path), "--no-baselines"])
        except Evaluated:
            pass
        except SystemExit as stopped:
            message = str(stopped.code)
            assert message.startswith("error: ") and str(path) in message and "\n" not in message, message
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unreadable checkpoints are skipped with a warning
            _resumes_or_names_it(config, folder)
    assert base["step"] == 4 and time.time() - start < 60
    capsys.readouterr()


def _deflated_copy(source, target) -> None:
    """`source` rewritten as a zip whose entries are compressed, as torch.save never writes them."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry.filename), compress_type=zipfile.ZIP_DEFLATED)


def test_a_checkpoint_with_compressed_entries_is_refused_before_it_is_inflated(run, tmp_path):
    from amdim_lib.official import load_encoder
    from amdim_lib.run.runfolder import latest_run_checkpoint

    bomb = tmp_path / "bomb.pt"
    torch.save({"huge": torch.zeros(8_000_000)}, tmp_path / "plain.pt")  # 32 MB of zeros: a few kB deflated
    _deflated_copy(tmp_path / "plain.pt", bomb)
    assert bomb.stat().st_size < 200_000
    for load in (load_checkpoint, load_encoder):
        with pytest.raises(ValueError, match=r"bomb\.pt holds \d+ compressed entr.*MiB once inflated.*never writes"):
            load(bomb)
    _deflated_copy(run / "checkpoint.pt", tmp_path / "deflated.pt")
    (run / "checkpoint.pt").unlink()
    shutil.copy(tmp_path / "deflated.pt", run / "checkpoint.pt")
    with pytest.warns(UserWarning, match="compressed entr"):  # the resume path skips it for an older copy
        latest_run_checkpoint(run)


# ----------------------------------------------------------------------------- as an unprivileged user
# Root may write anywhere, so these run their subject as `nobody` (setpriv), on a copy of the run in a folder
# that user can reach, with a HOME it cannot write: permissions as a user meets them, not os.access simulated.

def _as_nobody(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    home = cwd / "home"
    home.mkdir(exist_ok=True)  # root's, mode 0755: nobody can read it but not write it
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "amdim_lib", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home / ".matplotlib")})


@pytest.fixture
def shared_run(trained):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a command as an unprivileged user")
    folder = Path(tempfile.mkdtemp(prefix="amdim-nobody-", dir="/tmp"))
    folder.chmod(0o755)
    shutil.copytree(trained, folder / "run")
    for path in [folder / "run", *(folder / "run").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by everyone, writable by root alone
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_an_unprivileged_eval_of_a_run_it_cannot_write_is_refused_before_evaluating(shared_run):
    before = sorted(p.name for p in (shared_run / "run").iterdir())
    done = _as_nobody("eval", "--checkpoint", "run/checkpoint.pt", "--no-baselines", cwd=shared_run)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "run is read-only" in done.stderr and "--out" in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in (shared_run / "run").iterdir()) == before


def test_an_unprivileged_train_into_a_folder_it_cannot_write_says_so_in_one_line(shared_run):
    locked = shared_run / "locked"
    locked.mkdir(mode=0o755)
    done = _as_nobody("train", "--preset", "smoke", "--no-progress", "--out", "locked/run", cwd=shared_run)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "error:" in done.stderr and "locked" in done.stderr, done.stderr[-2000:]
    assert not any(locked.iterdir())
