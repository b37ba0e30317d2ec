"""The landing page `/` as an operator sees it: Debian's Chromium, headless and with JavaScript
off, driven through chromedriver (selenium), reads the page the real HTTP server renders of the
real poller's snapshot over the simulator (tests/landing_world.py): a healthy target, a failing
one, a throttled one and one whose keys CI refuses. Assertions are on the rendered text and
colours, not on the HTML.

Chromium and chromedriver are required: `sudo apt-get install chromium chromium-driver` (.ci/run
installs them). The README's screenshot: LANDING_SCREENSHOT=docs/landing.png python3 -m pytest
tests/test_landing_browser.py -k screenshot (alone: links unvisited, "polled 0 s ago").
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from landing_world import (
    DOWN,
    FAILING,
    HEALTHY,
    HOSTILE,
    NOISY_CODES,
    THROTTLED,
    Console,
    console_site,
)
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from exporter import __version__

INSTALL = (
    "the landing page tests need Debian's Chromium and its driver: "
    "sudo apt-get install chromium chromium-driver (.ci/run installs them)"
)
WIDTH = 1400  # the browser window, CSS pixels
SCREENSHOT_HEIGHT = 2000  # the README's screenshot: the top of the page
GREEN = "rgba(209, 231, 221, 1)"
AMBER = "rgba(255, 243, 205, 1)"
RED = "rgba(248, 215, 218, 1)"
POLLED = re.compile(r"^polled \d+ s ago$")


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{' or '.join(names)} not found on PATH: {INSTALL}")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDTH},1000")
    # What an operator without JavaScript sees: the page must not need it.
    options.add_experimental_option(
        "prefs", {"profile.managed_default_content_settings.javascript": 2}
    )
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    with pytest.MonkeyPatch.context() as monkeypatch, console_site(monkeypatch) as site:
        yield site


@pytest.fixture
def page(browser: WebDriver, console: Console) -> WebDriver:
    browser.get(f"{console.url}/")
    assert browser.title == "Tencent CI exporter"
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Tencent CI exporter {__version__}"
    return browser


def cells(row: WebElement) -> list[str]:
    return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]


def rows(scope: WebDriver | WebElement, table: str) -> list[WebElement]:
    return scope.find_elements(By.CSS_SELECTOR, f"table.{table} tbody tr")


def target_row(page: WebDriver, bucket: str) -> WebElement:
    found = [row for row in rows(page, "targets") if cells(row)[1] == bucket]
    assert len(found) == 1, bucket
    return found[0]


def section(page: WebDriver, bucket: str) -> WebElement:
    """A target's section, reached by its link in the targets table (no script needed)."""
    link = target_row(page, bucket).find_element(By.TAG_NAME, "a")
    anchor = link.get_attribute("href") or ""
    return page.find_element(By.ID, anchor.rpartition("#")[2])


def facts(scope: WebElement) -> dict[str, WebElement]:
    table = scope.find_element(By.CSS_SELECTOR, "table.facts")
    return {
        row.find_element(By.TAG_NAME, "th").text: row.find_element(By.TAG_NAME, "td")
        for row in table.find_elements(By.TAG_NAME, "tr")
    }


def background(element: WebElement) -> str:
    return element.value_of_css_property("background-color")


def test_the_browser_reads_without_javascript(browser: WebDriver) -> None:
    browser.get("data:text/html,<title>before</title><script>document.title='after'</script>")
    assert browser.title == "before"


def test_each_target_shows_its_state_in_colour_and_how_long_ago_it_was_polled(
    page: WebDriver,
) -> None:
    expected = {
        HEALTHY: ("up", GREEN),
        FAILING: ("up", GREEN),
        THROTTLED: ("throttled", AMBER),
        DOWN: ("down", RED),
    }
    listed = [cells(row)[1] for row in rows(page, "targets")]
    assert listed == [FAILING, HEALTHY, THROTTLED, DOWN]  # the configuration's order
    for bucket, (state, colour) in expected.items():
        row = target_row(page, bucket)
        state_cell = row.find_element(By.TAG_NAME, "td")
        assert (state_cell.text, background(state_cell)) == (state, colour), bucket
        assert POLLED.match(cells(row)[3]), cells(row)


def test_the_targets_table_sums_up_each_target(page: WebDriver) -> None:
    header = [th.text for th in page.find_elements(By.CSS_SELECTOR, "table.targets thead th")]
    assert header[4:8] == ["Queues", "Running", "Submitted", "Failed since start"]
    healthy = cells(target_row(page, HEALTHY))
    assert healthy[4:] == ["2", "5", "3", "0", "-", "-"]
    failing = cells(target_row(page, FAILING))
    assert failing[4:] == ["3", "0", "0", str(sum(NOISY_CODES.values()) + 2), "-", "-"]
    throttled = cells(target_row(page, THROTTLED))
    assert throttled[4:8] == ["1", "4", "6", "0"]
    assert re.fullmatch(
        r"requests spaced \d\.\d\d s apart; 2 slow-down answers since start", throttled[8]
    ), throttled[8]
    down = cells(target_row(page, DOWN))
    assert "HTTP 403 AccessDenied" in down[9]


def test_links_shard_and_configuration_status(page: WebDriver, console: Console) -> None:
    links = page.find_elements(By.CSS_SELECTOR, "nav a")
    assert [link.text for link in links] == ["/metrics", "/healthz", "/readyz"]
    status = facts(page.find_element(By.TAG_NAME, "body"))
    assert status["Shard"].text == "one shard: this process polls every target (4 of 4 configured)"
    configuration = status["Configuration"]
    assert configuration.text.startswith("loaded; last successful load 2026-11-21T04:00:")
    assert background(configuration) == GREEN
    for name, answer in (("/healthz", "ok"), ("/readyz", "ready"), ("/metrics", "tencent_ci_up{")):
        page.find_element(By.LINK_TEXT, name).click()
        assert page.current_url == f"{console.url}{name}"
        assert answer in page.find_element(By.TAG_NAME, "body").text
        page.back()


def test_a_healthy_target_shows_its_queues_load(page: WebDriver) -> None:
    healthy = section(page, HEALTHY)
    status = facts(healthy)["Status"]
    assert (status.text, background(status)) == ("up", GREEN)
    assert POLLED.match(facts(healthy)["Polled"].text)
    assert facts(healthy)["Last error"].text == "-"
    queues = [cells(row) for row in rows(healthy, "queues")]
    assert [(q[0], q[1], q[3], q[4], q[5], q[7]) for q in queues] == [
        ("media", "snapshot-fast", "Active", "1 / 5", "0", "0"),
        ("media", "transcode-main", "Active", "4 / 10", "3", "0"),
    ]
    assert queues[0][6] == "-"  # nothing waits
    assert re.fullmatch(r"\d+ min \(since 2026-11-21T04:00:00\+00:00\)", queues[1][6]), queues[1]
    text = healthy.text
    assert "No failed jobs counted since start." in text
    assert "No failed jobs seen since start." in text


def test_a_failing_target_groups_its_failures_by_code(page: WebDriver, console: Console) -> None:
    failing = section(page, FAILING)
    codes = [cells(row) for row in rows(failing, "codes")]
    expected = [(code, str(n), console.noisy_latest[code]) for code, n in NOISY_CODES.items()]
    expected.sort(key=lambda row: -int(row[1]))
    expected.append(("TemplateNotExist", "2", console.quiet_jobs[-1]))
    assert [(row[1], row[2], row[3]) for row in codes] == expected
    assert codes[0][0].startswith("ugc-transcode (media/")
    assert codes[0][5] == "InputFileNotExist: input 23 of the upload batch"
    assert codes[-1][0].startswith("ugc-snapshot (media/")
    # CI's message is text on the page, never markup.
    assert codes[-1][5] == HOSTILE
    assert page.find_elements(By.CSS_SELECTOR, "img, td b") == []
    queues = {cells(row)[1]: row for row in rows(failing, "queues")}
    archive = queues["ugc-archive"].find_elements(By.TAG_NAME, "td")
    assert (archive[3].text, background(archive[3])) == ("Paused", AMBER)
    assert archive[5].text == "0 (+4 held by pause)"


def test_the_recent_failed_jobs_keep_the_quiet_queue_in_view(
    page: WebDriver, console: Console
) -> None:
    recent = [cells(row) for row in rows(section(page, FAILING), "recent")]
    assert len(recent) == sum(NOISY_CODES.values()) + 2
    # Newest first: the quiet queue's two jobs ended last.
    assert [row[3] for row in recent[:2]] == list(reversed(console.quiet_jobs))
    assert all(row[4] == "TemplateNotExist" and row[5] == HOSTILE for row in recent[:2])
    assert recent[2][3] == console.noisy_latest["InternalError"]
    assert re.fullmatch(r"2026-11-21T04:0\d:\d\d\+00:00", recent[0][0]), recent[0][0]
    times = [row[0] for row in recent]
    assert times == sorted(times, reverse=True)


def test_a_throttled_target_says_how_it_is_slowed(page: WebDriver) -> None:
    throttled = section(page, THROTTLED)
    status = facts(throttled)["Status"]
    assert (status.text, background(status)) == ("throttled", AMBER)
    assert "2 slow-down answers since start" in facts(throttled)["Throttling"].text
    (queue,) = rows(throttled, "queues")
    load = queue.find_elements(By.TAG_NAME, "td")
    assert [cell.text for cell in load[:2]] == ["ai", "translate-batch"]
    assert (load[4].text, background(load[4])) == ("4 / 4", AMBER)  # at MaxConcurrent
    assert load[5].text == "6"


def test_a_down_target_shows_its_error(page: WebDriver) -> None:
    down = section(page, DOWN)
    status = facts(down)["Status"]
    assert (status.text, background(status)) == ("down", RED)
    assert facts(down)["Last success (UTC)"].text == "never"
    assert "HTTP 403 AccessDenied" in facts(down)["Last error"].text
    assert "No queues listed yet." in down.text


def test_screenshot(page: WebDriver, tmp_path: Path) -> None:
    """The top of the page as a PNG (LANDING_SCREENSHOT=docs/landing.png writes the README's)."""
    size = page.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    height = min(int(size["height"]), SCREENSHOT_HEIGHT)
    clip = {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}
    shot = page.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, tall = struct.unpack(">II", png[16:24])
    assert (width, tall) == (WIDTH, height)
    target = Path(os.environ.get("LANDING_SCREENSHOT") or tmp_path / "landing.png")
    target.write_bytes(png)
