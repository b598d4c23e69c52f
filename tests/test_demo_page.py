"""The demo feed page in a real headless Chromium (Debian's chromium + chromium-driver, selenium).

The app runs under uvicorn on a free port against a SQLite store; the test stands in for the
speed layer by writing the user's new list once the page's `POST /v1/events` has landed. The
screenshot is kept under tests/artifacts/ (gitignored).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from serving.main import create_app
from tests.test_api import API_KEY, NOW, WATERMARK, seed, sqlite_settings, sqlite_stores, user_list

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
ARTIFACTS = Path(__file__).parent / "artifacts"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, object]]:
    settings = sqlite_settings(tmp_path, demo_page=True)
    lists, articles = sqlite_stores(settings)
    seed(lists, articles)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}", lists
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        lists.close()
        articles.close()


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_demo_feed_shows_the_list_and_follows_a_click_to_the_speed_layers_new_list(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, lists = served
    wait = WebDriverWait(browser, 20)
    browser.get(f"{base}/demo?key={API_KEY}&user=u000001")

    def rows() -> list[list[str]]:
        return [
            [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "#items tr")
        ]

    wait.until(lambda _: len(rows()) == 10)
    assert [row[1] for row in rows()[:3]] == ["Title 0", "Title 1", "Title 2"]
    assert {(row[4], row[5]) for row in rows()} == {("batch", "stored")}  # layer, source
    assert browser.find_element(By.ID, "provenance-layer").text == "batch"
    assert browser.find_element(By.ID, "provenance-variant").text == "default"

    browser.find_element(By.LINK_TEXT, "Title 2").click()  # a real POST /v1/events
    wait.until(lambda _: "recorded" in browser.find_element(By.ID, "status").text)
    speed = user_list(
        "u000001", tag="a", layer="speed", computed_at=NOW, watermark=NOW,
        article_ids=[f"a{i:03d}" for i in range(30, 40)], scores=np.linspace(0.9, 0.5, 10),
    )  # fmt: skip
    assert speed.watermark > WATERMARK and lists.put_recommendations(speed).accepted

    wait.until(lambda _: "updated the list" in browser.find_element(By.ID, "status").text)
    assert [row[1] for row in rows()[:2]] == ["Title 30", "Title 31"]
    assert {row[4] for row in rows()} == {"speed"}
    assert browser.find_element(By.ID, "provenance-layer").text == "speed"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#items tr.changed")) == 10
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "demo-feed.png"))


def test_the_demo_page_is_off_unless_enabled(tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(create_app(sqlite_settings(tmp_path, demo_page=False))) as client:
        assert client.get("/demo").status_code == 404
        assert client.get("/demo/demo.js").status_code == 404
