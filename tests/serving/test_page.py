"""The web page in a real headless browser (Debian's chromium through chromedriver, installed by
scripts/setup.sh): drop a photo and see its original first, open it, review the duplicate groups
and mark a keeper, read the collection's stats. A failing test leaves a screenshot and the page's
HTML under ``$SIMCLR_ARTIFACTS`` (default: ``test-artifacts/``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from simclr_search.edits import edited
from simclr_search.serving.server.app import start_server
from simclr_search.serving.server.settings import ServerOptions
from tests.conftest import kodak_photos
from tests.serving.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "datasets" / "denoise-eval"
SHIPPED = ROOT / "models" / "compact-cifar10"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("SIMCLR_ARTIFACTS", ROOT / "test-artifacts"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="needs chromium and chromedriver (scripts/setup.sh installs them as root)",
    ),
]


@pytest.fixture
def library(tmp_path: Path) -> dict[str, Path]:
    photos = kodak_photos(6)
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(2)
    files = {}
    for i in range(len(photos)):
        files[f"photo{i}"] = root / f"photo{i}.png"
    files["photo0-copy"] = root / "photo0-copy.jpg"
    for name, path in files.items():
        if name == "photo0-copy":
            path.write_bytes(edited(photos[0], "colour_filter", rng))
        else:
            path.write_bytes(photos[int(name[5:])])
    query = tmp_path / "query.jpg"
    query.write_bytes(edited(photos[2], "crop", rng))
    return {"query": query, **files}


@pytest.fixture
def site(library, tmp_path: Path, loop_thread) -> Iterator[str]:
    from simclr_search.serving.client import Client

    running = loop_thread.run(
        start_server(
            make_config(SHIPPED, tmp_path / "store"),
            ServerOptions(address="127.0.0.1:0", metrics_port=0, http_port=0),
        )
    )
    with Client(f"127.0.0.1:{running.port}") as client:
        items = [(n, p.read_bytes(), str(p), {}) for n, p in library.items() if n != "query"]
        assert all(r.status == 1 for r in client.index_images(items))
    yield f"http://127.0.0.1:{running.http_port}/"
    loop_thread.run(running.stop())


@pytest.fixture
def browser(request) -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    report = getattr(request.node, "rep_call", None)  # set by tests/serving/conftest.py
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))
        (ARTIFACTS / f"{request.node.name}.html").write_text(driver.page_source)
    driver.quit()


def _wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_search_by_photo_shows_the_original_first_and_opens_it(site, browser, library) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site)
    _wait(browser, lambda d: d.find_element(By.ID, "collection").get_attribute("value") == "images")
    browser.find_element(By.ID, "file-input").send_keys(str(library["query"]))
    hits = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit"))
    first = hits[0]
    assert first.get_attribute("data-id") == "photo2"
    assert first.find_elements(By.CSS_SELECTOR, ".badge-copy"), first.text
    _wait(browser, lambda d: first.find_element(By.TAG_NAME, "img").get_attribute("src"))
    assert (
        browser.execute_script(
            "return arguments[0].naturalWidth", first.find_element(By.TAG_NAME, "img")
        )
        > 0
    )  # the stored photo itself, read from its uri
    first.click()
    panel = _wait(
        browser,
        lambda d: (
            d.find_element(By.ID, "item-panel").is_displayed()
            and d.find_element(By.ID, "item-panel")
        ),
    )
    assert str(library["photo2"]) in panel.text


def test_duplicate_groups_and_keepers(site, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site)
    _wait(browser, lambda d: d.find_element(By.ID, "collection").get_attribute("value") == "images")
    browser.find_element(By.ID, "tab-duplicates").click()
    browser.find_element(By.ID, "find-duplicates").click()
    groups = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#groups .group"))
    assert len(groups) == 1
    members = {
        m.get_attribute("data-id") for m in groups[0].find_elements(By.CSS_SELECTOR, ".member")
    }
    assert members == {"photo0", "photo0-copy"}
    keeper = groups[0].find_element(By.CSS_SELECTOR, ".member.keeper").get_attribute("data-id")
    other = ({"photo0", "photo0-copy"} - {keeper}).pop()
    button = browser.find_element(By.CSS_SELECTOR, f'.member[data-id="{other}"] .keep-toggle')
    button.click()
    _wait(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, ".member.keeper").get_attribute("data-id") == other
        ),
    )
    browser.refresh()  # the choice is kept in the browser
    _wait(browser, lambda d: d.find_element(By.ID, "collection").get_attribute("value") == "images")
    browser.find_element(By.ID, "tab-duplicates").click()
    browser.find_element(By.ID, "find-duplicates").click()
    _wait(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, ".member.keeper").get_attribute("data-id") == other
        ),
    )


def test_collection_stats(site, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site)
    browser.find_element(By.ID, "tab-stats").click()
    table = _wait(
        browser,
        lambda d: "items" in d.find_element(By.ID, "stats").text and d.find_element(By.ID, "stats"),
    )
    assert "items 7" in table.text.replace("\n", " ")
