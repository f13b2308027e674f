"""End to end in a real headless Chromium: the page predicts three SMILES, shows an error row, draws a molecule
and downloads the table as CSV.

Needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver) and selenium; the test
installs nothing and reaches nothing beyond a uvicorn server on a loopback port.
"""

from __future__ import annotations

import contextlib
import csv
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

import uvicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from smilesformer import SmilesModel
from smilesformer.serve import create_app

from .browser import AVAILABLE, SKIP_REASON, TIMEOUT, make_driver

if not AVAILABLE:
    pytest.skip(SKIP_REASON, allow_module_level=True)

SMILES = ["CCO", "C1CC((", "c1ccccc1O"]


@contextlib.contextmanager
def _serving(folder):
    """The app of a model folder under uvicorn on a free loopback port, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the OS picks a free port; uvicorn serves on this very socket (no race)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(folder), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=TIMEOUT)
    sock.close()


@pytest.fixture(scope="module")
def server_url(tiny_regressor_dir):
    with _serving(tiny_regressor_dir) as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    driver = make_driver(tmp_path / "profile", tmp_path / "downloads")
    yield driver
    driver.quit()


def test_page_predicts_draws_and_downloads(server_url, browser, tiny_regressor_dir, tmp_path):
    wait = WebDriverWait(browser, TIMEOUT)
    browser.get(server_url + "/")
    wait.until(lambda d: d.find_element(By.ID, "model-line").text.startswith("model "))

    browser.find_element(By.ID, "smiles-input").send_keys("\n".join(SMILES))
    browser.find_element(By.ID, "predict-button").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results-table tbody tr")) == 3)

    rows = browser.find_elements(By.CSS_SELECTOR, "#results-table tbody tr")
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#results-table thead th")]
    assert headers == ["#", "SMILES", "logS_pred", "error"]
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [c[1] for c in cells] == SMILES
    error_rows = [r for r in rows if "error-row" in r.get_attribute("class")]
    assert len(error_rows) == 1 and error_rows[0] is rows[1]
    assert "invalid SMILES" in cells[1][3] and cells[1][2] == ""
    expected = SmilesModel.from_pretrained(tiny_regressor_dir).predict(SMILES)["logS_pred"]
    for i in (0, 2):
        assert cells[i][3] == ""
        assert float(cells[i][2]) == pytest.approx(expected[i], abs=1e-3)

    rows[2].click()  # a valid molecule: its structure, coloured by attribution
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#drawing svg"))
    assert "attribution" in browser.find_element(By.ID, "detail-note").text.lower()

    browser.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="attention"]').click()
    wait.until(lambda d: "Attention" in d.find_element(By.ID, "detail-note").text)
    assert browser.find_element(By.ID, "layer-select").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#drawing svg")
    browser.save_screenshot(str(tmp_path / "page.png"))

    browser.find_element(By.ID, "download-button").click()
    download = tmp_path / "downloads" / "smilesformer_predictions.csv"
    deadline = time.monotonic() + TIMEOUT
    while not download.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    with download.open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["smiles"] for r in table] == SMILES
    assert [bool(r["error"]) for r in table] == [False, True, False]
    assert float(table[0]["logS_pred"]) == pytest.approx(expected[0], rel=1e-4)


def test_api_docs_render_offline(server_url, browser):
    browser.get(server_url + "/docs")
    WebDriverWait(browser, TIMEOUT).until(lambda d: "/predict" in d.find_element(By.TAG_NAME, "body").text)


def test_page_shows_the_interval_and_the_domain(tiny_uncertain_dir, browser, esol50):
    smiles = [esol50["smiles"][0], "C1CC((", "c1ccccc1O"]
    with _serving(tiny_uncertain_dir) as url:
        wait = WebDriverWait(browser, TIMEOUT)
        browser.get(url + "/")
        wait.until(lambda d: d.find_element(By.ID, "model-line").text.startswith("model "))
        browser.find_element(By.ID, "smiles-input").send_keys("\n".join(smiles))
        browser.find_element(By.ID, "predict-button").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results-table tbody tr")) == 3)
        headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#results-table thead th")]
        assert headers[-3:] == ["logS 90% interval", "domain", "error"]
        rows = browser.find_elements(By.CSS_SELECTOR, "#results-table tbody tr")
        bars = [row.find_elements(By.CSS_SELECTOR, ".interval-bar") for row in rows]
        assert [len(b) for b in bars] == [1, 0, 1], "a bar for each predicted row, none for the invalid one"
        badges = [[b.text for b in row.find_elements(By.CSS_SELECTOR, ".badge")] for row in rows]
        assert badges[0] == ["in domain (1.00)"], "a training molecule is in the domain"
        assert badges[1] == [] and badges[2][0].split(" (")[0] in ("in domain", "out of domain")
