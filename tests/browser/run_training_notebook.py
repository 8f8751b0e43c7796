"""Check in a real JupyterLab (headless Chromium) that notebook 04 loads the run `make demo` wrote, not retrain it.

Not collected by pytest (no test_ prefix): it needs Debian's chromium and chromedriver and the selenium
package, which the workbook itself does not depend on. See tests/browser/README.md. Run it after `make demo`
(or `python -m amdim_lib demo --only 04 --out runs/demo`):

    .venv/bin/python tests/browser/run_training_notebook.py [--shots /tmp/browser_shots_04] [--timeout 600]

What it does:
1. requires runs/demo/04_training/checkpoint.pt (notebook 04's default output_dir "../runs/demo/04_training",
   relative to notebooks/), else exits with status 2; records the checkpoint's sha256 and mtime and
   metrics.json;
2. starts `jupyter lab` from the venv the way `make lab` does (from the repository root, serving notebooks/),
   on 127.0.0.1 with a random port and token, headless;
3. copies notebooks/04_training.ipynb to notebooks/browser_check_04_training.ipynb (autosave then never writes
   outputs into the committed notebook; the name stays outside workbook.notebooks()'s "NN_*.ipynb", so `demo
   --only 04` and the tests never pick the copy up) and opens the copy with its default parameters; the copy
   and its .ipynb_checkpoints entry are deleted at the end, whatever happens;
4. runs all cells from the Run menu, waits until no cell is busy, saves the notebook;
5. checks: no error output (on the page and in the saved copy), the notebook says it loaded the finished run
   and trained nothing, the checkpoint's sha256 and mtime are unchanged, and the metrics.json the notebook
   has just written says "trained_now": false with the same number of updates.

Screenshots, the executed copy, jupyterlab.log and summary.json (every check) go into --shots.
Exit status 0 when every check passed, 1 otherwise, 2 when there is no demo run to load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_mixture_notebook import (REPO, cells_finished, click_menu, free_port, make_driver,  # noqa: E402
                                  record_failure, start_lab, stop_lab, summarise, wait_for_lab)

NOTEBOOKS = REPO / "notebooks"
SOURCE = NOTEBOOKS / "04_training.ipynb"
COPY = NOTEBOOKS / "browser_check_04_training.ipynb"
RUN_DIR = REPO / "runs" / "demo" / "04_training"  # 04's default output_dir, "../runs/demo/04_training"
CHECKPOINT = RUN_DIR / "checkpoint.pt"
METRICS = RUN_DIR / "metrics.json"
LOADED = ("Loaded the finished run", "nothing was trained now")  # 04's message when trained_now is False
TRAINED = ("Trained from scratch", "Resumed the run")  # its messages when it trained

OUTPUT_TEXTS_JS = """
return Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea-output'))
    .map(e => [e.getAttribute('data-mime-type') || '', e.textContent]);
"""


def file_state(path: Path) -> dict:
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "mtime_ns": path.stat().st_mtime_ns,
            "mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(path.stat().st_mtime))}


def read_metrics() -> dict | None:
    try:
        return json.loads(METRICS.read_text()) if METRICS.exists() else None
    except ValueError as error:
        return {"unreadable": str(error)}


def metrics_digest(metrics: dict | None) -> dict | None:
    keys = ("preset", "steps", "total_steps", "finished", "trained_now", "seconds", "seconds_source")
    return None if metrics is None else {k: metrics.get(k) for k in keys if k in metrics}


def save_notebook(driver, timeout: float = 60) -> dict:
    """Save the copy from the File menu (Ctrl+S as a fallback) and return it as read back from disk."""
    import nbformat
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    before = COPY.stat().st_mtime_ns
    try:
        click_menu(driver, "File", "Save Notebook")
    except Exception:
        ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if COPY.stat().st_mtime_ns != before:
            time.sleep(1)  # let the write finish
            nb = nbformat.read(COPY, as_version=4)
            if all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"):
                return nb
        time.sleep(1)
    raise TimeoutError(f"the notebook was not saved with every cell executed within {timeout:.0f} s")


def notebook_texts(nb) -> tuple[list[str], list[str]]:
    """(error outputs as 'ename: evalue', every other output's text) of a saved notebook."""
    errors, texts = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                errors.append(f"{out.ename}: {out.evalue}")
            elif out.output_type == "stream":
                texts.append(out.text)
            else:
                texts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return errors, texts


def says_loaded(texts: list[str]) -> bool:
    plain = [t.replace("*", "").replace("`", "") for t in texts]  # markdown source or rendered text
    return any(all(p in t for p in LOADED) for t in plain) and not any(p in t for t in plain for p in TRAINED)


def remove_copy(checkpoints_dir_existed: bool) -> None:
    COPY.unlink(missing_ok=True)
    checkpoints_dir = NOTEBOOKS / ".ipynb_checkpoints"
    (checkpoints_dir / f"{COPY.stem}-checkpoint.ipynb").unlink(missing_ok=True)
    if not checkpoints_dir_existed and checkpoints_dir.is_dir() and not any(checkpoints_dir.iterdir()):
        checkpoints_dir.rmdir()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default="/tmp/browser_shots_04")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the notebook to run")
    args = parser.parse_args(argv)

    if not CHECKPOINT.exists():
        print(f"no demo run to load: {CHECKPOINT.relative_to(REPO)} does not exist. Run `make demo` (or "
              "`.venv/bin/python -m amdim_lib demo --only 04 --out runs/demo`) first.", file=sys.stderr)
        return 2

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    checkpoint_before, metrics_before = file_state(CHECKPOINT), read_metrics()
    checks: dict[str, object] = {"run_dir": str(RUN_DIR.relative_to(REPO)), "checkpoint_before": checkpoint_before,
                                 "metrics_before": metrics_digest(metrics_before)}
    work = Path(tempfile.mkdtemp(prefix="training-browser-"))  # Chromium profile, Jupyter config and settings
    checkpoints_dir_existed = (NOTEBOOKS / ".ipynb_checkpoints").is_dir()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally clause still cleans up
    port, token = free_port(), secrets.token_hex(16)
    lab = driver = None
    t0 = time.time()
    try:
        shutil.copyfile(SOURCE, COPY)
        # As `make lab` (`jupyter lab notebooks/` from the repository root), with a throwaway config folder
        # so that the user's JupyterLab settings and workspaces are neither used nor changed.
        lab = start_lab(NOTEBOOKS, port, token, shots / "jupyterlab.log", config_dir=work / "jupyter-config",
                        cwd=REPO)
        wait_for_lab(lab, port, token)
        checks["lab_started_s"] = round(time.time() - t0, 1)
        driver = make_driver(work / "chromium-profile")
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{COPY.name}?token={token}")
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell"))
        time.sleep(3)
        driver.save_screenshot(str(shots / "00_opened.png"))

        click_menu(driver, "Run", "Run All Cells")
        t_run = time.time()
        try:
            WebDriverWait(driver, args.timeout, poll_frequency=2).until(cells_finished)
            checks["page_no_traceback"] = True
        except RuntimeError as error:  # cells_finished saw a traceback
            checks["page_no_traceback"] = False
            checks["page_traceback"] = str(error)
            WebDriverWait(driver, args.timeout, poll_frequency=2).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell .jp-InputPrompt")
                and "*" not in "".join(e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-InputPrompt")))
        checks["notebook_ran_s"] = round(time.time() - t_run, 1)
        for button in driver.find_elements(By.XPATH, "//button[normalize-space()='No']"):  # the news prompt
            if button.is_displayed():
                button.click()

        page = driver.execute_script(OUTPUT_TEXTS_JS)
        checks["page_no_traceback"] = checks["page_no_traceback"] and not any("Traceback" in t for _, t in page)
        loaded_on_page = [t.strip() for _, t in page if LOADED[0] in t]
        checks["loaded_message"] = loaded_on_page[0] if loaded_on_page else None
        checks["page_says_loaded"] = says_loaded([t for _, t in page])
        message = driver.find_elements(By.XPATH, f"//div[contains(@class,'jp-OutputArea-output')]"
                                                 f"[contains(., '{LOADED[0]}')]")
        if message:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", message[0])
            time.sleep(1)
        driver.save_screenshot(str(shots / "01_loaded_message.png"))

        nb = save_notebook(driver)
        shutil.copyfile(COPY, shots / "04_training_executed.ipynb")
        errors, texts = notebook_texts(nb)
        checks["saved_notebook_errors"] = errors
        checks["saved_notebook_no_errors"] = not errors
        checks["saved_notebook_says_loaded"] = says_loaded(texts)
        driver.execute_script("const o = document.querySelector('.jp-WindowedPanel-outer');"
                              "if (o) o.scrollTop = o.scrollHeight;")
        time.sleep(1)
        driver.save_screenshot(str(shots / "02_page_end.png"))
    except Exception as error:  # keep going to the summary: say exactly what failed
        record_failure(checks, driver, shots, error)
    finally:
        if driver is not None:
            driver.quit()
        if lab is not None:
            stop_lab(lab)
        remove_copy(checkpoints_dir_existed)
        shutil.rmtree(work, ignore_errors=True)
    checks["copy_removed"] = not COPY.exists()

    checkpoint_after = file_state(CHECKPOINT) if CHECKPOINT.exists() else None
    checks["checkpoint_after"] = checkpoint_after
    checks["checkpoint_sha256_unchanged"] = bool(checkpoint_after) and \
        checkpoint_after["sha256"] == checkpoint_before["sha256"]
    checks["checkpoint_mtime_unchanged"] = bool(checkpoint_after) and \
        checkpoint_after["mtime_ns"] == checkpoint_before["mtime_ns"]
    metrics_after = read_metrics()
    checks["metrics_after"] = metrics_digest(metrics_after)
    checks["metrics_written_now"] = METRICS.exists() and METRICS.stat().st_mtime > t0
    checks["metrics_trained_now_false"] = bool(metrics_after) and metrics_after.get("trained_now") is False
    checks["metrics_same_steps"] = bool(metrics_after) and (
        metrics_before is None or metrics_after.get("steps") == metrics_before.get("steps"))
    return summarise(checks, ("page_no_traceback", "page_says_loaded", "saved_notebook_no_errors",
                              "saved_notebook_says_loaded", "checkpoint_sha256_unchanged", "checkpoint_mtime_unchanged",
                              "metrics_written_now", "metrics_trained_now_false", "metrics_same_steps", "copy_removed"),
                     shots, t0)


if __name__ == "__main__":
    sys.exit(main())
