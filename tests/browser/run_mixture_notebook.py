"""Run notebook 07 in a real JupyterLab in headless Chromium, move the inspector's controls, take screenshots.

Not collected by pytest (no test_ prefix): it needs Debian's chromium and chromedriver and the selenium
package, which the workbook itself does not depend on. See tests/browser/README.md.

    .venv/bin/python tests/browser/run_mixture_notebook.py [--preset smoke] [--shots /tmp/browser_shots]
        [--output-dir DIR]   # DIR with an earlier run's checkpoints: no training

What it does:
1. writes a copy of notebooks/07_mixture_segmentation.ipynb into a temporary folder with the parameters
   overridden (preset, output_dir), as papermill would;
2. starts `jupyter lab` from the venv on 127.0.0.1 with a random token and waits until it answers;
3. opens the copy in headless Chromium (selenium + chromedriver), runs all cells from the Run menu and
   waits until no cell is busy and the inspector has rendered;
4. selects another image in the inspector's dropdown, then another component, checking each time that the
   figure (its image source) and the status line change, i.e. that the widget responds through the kernel;
5. saves screenshots (the whole page and the inspector) into --shots, and summary.json with the checks.

Exit status 0 when every check passed, 1 otherwise (the summary says which failed).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "07_mixture_segmentation.ipynb"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1500,2000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parameterised_copy(target_dir: Path, preset: str, output_dir: Path) -> Path:
    """The notebook with an injected cell after the parameters cell, as papermill does."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(
        f"# Parameters injected by {Path(__file__).name}\npreset = {preset!r}\noutput_dir = {str(output_dir)!r}",
        metadata={"tags": ["injected-parameters"]}))
    path = target_dir / "07_mixture_segmentation_browser.ipynb"
    nbformat.write(nb, path)
    return path


def start_lab(root: Path, port: int, token: str, log_path: Path, config_dir: Path | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
    """`jupyter lab` serving `root`, run from `cwd` (default root) with JUPYTER_CONFIG_DIR=config_dir
    (default root/.jupyter-config), in its own session so that stop_lab ends it and its kernels."""
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
           "jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers often run as root
        cmd.append("--allow-root")
    log = open(log_path, "w")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config_dir or root / ".jupyter-config"))
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd or root, env=env,
                            start_new_session=True)


def stop_lab(lab: subprocess.Popen) -> None:
    os.killpg(lab.pid, signal.SIGTERM)  # the server and the kernels it started (own session)
    try:
        lab.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(lab.pid, signal.SIGKILL)


def wait_for_lab(lab: subprocess.Popen, port: int, token: str, timeout: float = 120) -> None:
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if lab.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with status {lab.returncode}; see jupyterlab.log")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"JupyterLab did not answer on port {port} within {timeout:.0f} s")


def make_driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


def click_menu(driver, top: str, item: str) -> None:
    """Click `item` in the menu bar's `top` menu (e.g. "Run", "Run All Cells")."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')][.//div[text()='{top}']]").click()
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(
        By.XPATH, f"//li[contains(@class,'lm-Menu-item')][.//div[text()='{item}']]"))
    driver.find_element(By.XPATH, f"//li[contains(@class,'lm-Menu-item')][.//div[text()='{item}']]").click()


def cells_finished(driver) -> bool:
    """True when every code cell has run (a number in its prompt, no "*"); a traceback raises RuntimeError.
    Cells with hidden input (solutions, scaffolding) show an empty placeholder prompt and are skipped: the
    visible cells after them are queued behind them ("[*]") until they have run."""
    from selenium.webdriver.common.by import By

    prompts = driver.execute_script(
        "return Array.from(document.querySelectorAll("
        "'.jp-Notebook .jp-CodeCell .jp-InputPrompt:not(.jp-Placeholder-prompt)'))"
        ".map(e => e.textContent.trim());")
    errors = driver.find_elements(By.CSS_SELECTOR,
                                  ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [e for e in errors if "Traceback" in e.text or "Error" in e.text]
    if tracebacks:
        raise RuntimeError("a cell failed in JupyterLab: " + tracebacks[0].text[:500])
    return bool(prompts) and all(p.startswith("[") and "*" not in p and p != "[ ]:" for p in prompts)


def record_failure(checks: dict, driver, shots: Path, error: Exception) -> None:
    """Say in the summary exactly what failed, with a screenshot of the page when there is one."""
    checks["error"] = f"{type(error).__name__}: {error}"
    if driver is not None:
        driver.save_screenshot(str(shots / "99_failure.png"))


def summarise(checks: dict, required: tuple[str, ...], shots: Path, t0: float) -> int:
    """Write and print summary.json (every check, the required ones that failed, the time); exit status
    0 when nothing failed and no error stopped the run, else 1."""
    checks["seconds"] = round(time.time() - t0, 1)
    checks["failed"] = [key for key in required if checks.get(key) is not True]
    checks["passed"] = "error" not in checks and not checks["failed"]
    (shots / "summary.json").write_text(json.dumps(checks, indent=2))
    print(json.dumps(checks, indent=2))
    print(f"screenshots in {shots}")
    return 0 if checks["passed"] else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--shots", default="/tmp/browser_shots")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the notebook to run")
    parser.add_argument("--output-dir", default=None,
                        help="the notebook's output_dir (default: a temporary folder); a folder holding the "
                             "checkpoints of an earlier run at the same preset skips the training")
    args = parser.parse_args(argv)

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    shots = Path(args.shots)
    shots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mixture-browser-"))
    notebook = parameterised_copy(work, args.preset, Path(args.output_dir).resolve() if args.output_dir else work / "out")
    port, token = free_port(), secrets.token_hex(16)
    checks: dict[str, object] = {}
    lab = start_lab(work, port, token, shots / "jupyterlab.log")
    driver = None
    t0 = time.time()
    try:
        wait_for_lab(lab, port, token)
        checks["lab_started_s"] = round(time.time() - t0, 1)
        driver = make_driver(work / "chromium-profile")
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?token={token}")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
        # The kernel must be idle before "Run All Cells" is useful.
        wait.until(lambda d: d.execute_script(
            "const s = document.querySelector('.jp-Notebook'); return s !== null;"))
        time.sleep(3)
        driver.save_screenshot(str(shots / "00_opened.png"))

        click_menu(driver, "Run", "Run All Cells")
        t_run = time.time()
        WebDriverWait(driver, args.timeout, poll_frequency=2).until(cells_finished)
        checks["notebook_ran_s"] = round(time.time() - t_run, 1)
        for button in driver.find_elements(By.XPATH, "//button[normalize-space()='No']"):  # the news prompt
            if button.is_displayed():
                button.click()
        # The inspector: a dropdown (image), toggle buttons (component), sliders and an image.
        box = wait.until(lambda d: next((b for b in d.find_elements(By.CSS_SELECTOR, ".widget-vbox")
                                         if b.find_elements(By.CSS_SELECTOR, ".widget-toggle-buttons")), None))
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", box)
        time.sleep(2)
        select = Select(box.find_element(By.CSS_SELECTOR, ".widget-dropdown select"))
        figure = box.find_element(By.CSS_SELECTOR, ".widget-image")
        status = box.find_elements(By.CSS_SELECTOR, ".widget-html-content")[-1]
        buttons = box.find_elements(By.CSS_SELECTOR, ".widget-toggle-button")
        checks["widgets_rendered"] = {"images": len(select.options), "components": len(buttons),
                                      "figure_width_px": figure.size["width"]}
        driver.save_screenshot(str(shots / "01_after_run.png"))
        box.screenshot(str(shots / "02_inspector_initial.png"))

        def changed(element, before, attribute="src", timeout=90):
            try:
                WebDriverWait(driver, timeout, poll_frequency=0.5).until(
                    lambda d: element.get_attribute(attribute) != before)
                return True
            except Exception:
                return False

        src, text = figure.get_attribute("src"), status.text
        target = select.options[min(len(select.options) - 1, 4)].text  # a photograph when there are any
        select.select_by_visible_text(target)
        checks["image_change_updates_figure"] = changed(figure, src)
        time.sleep(1)
        checks["image_selected"] = Select(box.find_element(By.CSS_SELECTOR, ".widget-dropdown select")).first_selected_option.text
        box.screenshot(str(shots / "03_inspector_other_image.png"))

        src, text = figure.get_attribute("src"), status.text
        target = next(b for b in buttons if "mod-active" not in b.get_attribute("class"))  # not the current one
        checks["component_clicked"] = target.text
        target.click()
        checks["component_change_updates_figure"] = changed(figure, src)
        checks["component_change_updates_status"] = changed(status, text, attribute="textContent", timeout=30)
        checks["status_text"] = status.text
        checks["component_selected"] = "mod-active" in target.get_attribute("class")
        time.sleep(1)
        box.screenshot(str(shots / "04_inspector_other_component.png"))
        driver.save_screenshot(str(shots / "05_page_end.png"))
    except Exception as error:  # keep going to the summary: say exactly what failed
        record_failure(checks, driver, shots, error)
    finally:
        if driver is not None:
            driver.quit()
        stop_lab(lab)
    return summarise(checks, ("image_change_updates_figure", "component_change_updates_figure",
                              "component_change_updates_status", "component_selected"), shots, t0)


if __name__ == "__main__":
    sys.exit(main())
