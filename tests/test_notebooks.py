"""Notebooks: the attention views drawn inline in an executed, exported notebook, in a real browser; and the
tutorial (docs/tutorial.ipynb) executed offline in its quick setting.

Notebooks run with nbclient on a fresh kernel of this interpreter (the `notebook` extra: nbclient, nbformat,
nbconvert, ipykernel), are exported to HTML with nbconvert's default (JupyterLab) template, and are opened
from disk in headless Chromium with no network.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .browser import AVAILABLE, SKIP_REASON, TIMEOUT, make_driver

for _module in ("nbclient", "nbformat", "nbconvert", "ipykernel"):
    pytest.importorskip(_module, reason=f"running notebooks needs {_module}: pip install 'smilesformer[notebook]'")

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbconvert import HTMLExporter  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.ipynb"
needs_chromium = pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)

# nbconvert's JupyterLab template links require.js, MathJax and mermaid from cdnjs; offline those loads fail
# and are logged by the browser. They are the exporter's, not the views': the views must work without them.
EXPORTER_CDN = "cdnjs.cloudflare.com"

VIEWS_NOTEBOOK = [
    "from smilesformer import SmilesModel\n"
    "from smilesformer.explain import explain_molecule, head_view, model_view\n"
    "smiles = 'CCCCC[C@@H](Br)CC'",
    "head_view('smilesformer-moses', smiles)",  # the bundled pretrained model: no head
    "model_view('smilesformer-moses', smiles)",  # a second view on the same page
    # a molecule of 243 tokens on a small random model that reads that far; weights scaled up so its heads
    # attend sharply, as trained ones do (at the default scale a random head spreads 1/243 on every token)
    "import torch\n"
    "long = SmilesModel.from_scratch('tiny', 'regression', ['y'], max_length=400)\n"
    "with torch.no_grad():\n"
    "    for p in long.model.parameters():\n"
    "        p.mul_(8 if p.dim() == 2 else 1)\n"
    "head_view(long, 'CC(=O)' * 40 + 'O')",
    "explain_molecule(long, 'c1ccccc1C(=O)O', n_steps=8)",  # static heat maps
]


def run_notebook(nb, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    """Execute ``nb`` in place on a fresh kernel started in ``cwd``, with this environment plus ``env``."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute(env={**os.environ, **(env or {})})  # passed on to the kernel's process
    return nb


def export_html(nb, path: Path) -> Path:
    body, _ = HTMLExporter().from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")
    return path


def check_page(driver, page: Path) -> tuple[list[dict], int]:
    """Open an exported notebook; check every attention frame drew; return what each frame showed and the
    number of drawings in explanations (static SVG).

    Fails on any browser console error other than the exporter's own CDN loads, and on any error or warning of
    a view's own page.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.as_uri())
    frames = driver.find_elements(By.CSS_SELECTOR, "iframe.smilesformer-attention")
    srcdocs = [frame.get_attribute("srcdoc") for frame in frames]
    drawings = len(driver.find_elements(By.CSS_SELECTOR, ".smilesformer-explanation svg"))
    shown = []
    for frame in frames:
        driver.switch_to.frame(frame)
        WebDriverWait(driver, TIMEOUT).until(lambda d: d.execute_script("return document.body.dataset.rendered"))
        view = driver.execute_script("return document.body.dataset.rendered")
        info = {"view": view, "tokens": len(driver.find_elements(By.CSS_SELECTOR, "#left .tok")),
                "molecule": len(driver.find_elements(By.CSS_SELECTOR, "#mol-svg svg")),
                "discs": len(driver.find_elements(By.CSS_SELECTOR, "#mol-overlay circle"))}
        # painted pixels: the head view's lines, or the model view's first cell
        canvas = "#lines" if view == "head" else "#grid canvas"
        info["painted"] = driver.execute_script(
            "const c = document.querySelector(arguments[0]);"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let k = 3; k < d.length; k += 4) if (d[k]) n++; return n;", canvas)
        info["cells"] = len(driver.find_elements(By.CSS_SELECTOR, "#grid .cell"))
        if view == "head":  # hovering a token redraws its lines only
            driver.execute_script("document.querySelectorAll('#left .tok')[1]"
                                  ".dispatchEvent(new MouseEvent('mouseenter'))")
            info["hover_note"] = driver.find_element(By.ID, "mol-note").text
        shown.append(info)
        driver.switch_to.default_content()
    time.sleep(0.2)  # let late console messages arrive
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and EXPORTER_CDN not in e["message"]]
    assert not errors, errors
    # Chromium does not log the console of a sandboxed frame, so each frame's page is also opened on its own
    # (the same HTML, top level), where an error would be logged.
    for k, page_html in enumerate(srcdocs):
        alone = page.with_name(f"{page.stem}_view{k}.html")
        alone.write_text(page_html, encoding="utf-8")
        driver.get(alone.as_uri())
        WebDriverWait(driver, TIMEOUT).until(lambda d: d.execute_script("return document.body.dataset.rendered"))
        driver.find_element(By.ID, "tab-model").click()  # draw the other tab too
        driver.find_element(By.ID, "tab-head").click()
        time.sleep(0.2)
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert not errors, (k, errors)
    return shown, drawings


@pytest.fixture
def browser(tmp_path):
    driver = make_driver(tmp_path / "profile")
    yield driver
    driver.quit()


@needs_chromium
def test_views_draw_inline_in_an_exported_notebook(tmp_path, browser):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in VIEWS_NOTEBOOK]
    run_notebook(nb, tmp_path)
    outputs = [o for cell in nb.cells for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("text/html" in o.get("data", {}) for o in outputs) == 4
    shown, drawings = check_page(browser, export_html(nb, tmp_path / "views.html"))
    assert [s["view"] for s in shown] == ["head", "model", "head"]
    bundled, grid, long = shown
    assert bundled["tokens"] == 17 and bundled["molecule"] == 1 and bundled["discs"] == 9 and bundled["painted"]
    assert "where token 1 (C) attends" in bundled["hover_note"]
    assert grid["cells"] == 3 * 12 and grid["painted"]
    assert long["tokens"] == 243 and long["painted"] and long["discs"] == 121
    assert drawings == 2  # the explanation's attribution and attention maps: static, no script


@pytest.mark.skipif(not TUTORIAL.is_file(), reason="docs/tutorial.ipynb is not in this checkout")
def test_tutorial_runs_offline_quick(tmp_path, request):
    nb = nbformat.read(TUTORIAL, as_version=4)
    started = time.monotonic()
    run_notebook(nb, tmp_path, {"SMILESFORMER_TUTORIAL_QUICK": "1", "HF_HUB_OFFLINE": "1"})
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "quick setting" in text  # the variable reached the kernel
    assert "test MSE" in text and "Pearson r" in text and "Ridge" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the parity plot
    print(f"tutorial (quick) ran in {time.monotonic() - started:.0f} s")
    if AVAILABLE:
        browser = make_driver(tmp_path / "profile")
        try:
            shown, drawings = check_page(browser, export_html(nb, tmp_path / "tutorial.html"))
        finally:
            browser.quit()
        assert shown and all(s["painted"] for s in shown) and drawings
