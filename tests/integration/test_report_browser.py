"""The fleet report page in a real browser (issue 15): Debian's headless Chromium, driven by Selenium
through Debian's chromedriver, opens the page ``relayguard report`` wrote from a record directory, as
``file://`` (the page is self-contained: nothing is served, nothing is fetched).

The screenshot in docs/operations.md comes from this test: set ``RG_REPORT_SCREENSHOT=docs/images/
fleet-report.png`` to write it there (every run writes one to its temporary folder anyway).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from relayguard.cli import main, write_records
from relayguard.domain.models import Outcome
from relayguard.engine import ServerResult
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
RUN_ID = "sweep-20261206T030000Z-4f1c"
#: Untrusted text as an inventory or a server could hand it over: it must show as text and run nothing.
EVIL = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def _mail(domains: int, failing: int, without_dmarc: int, ips_without_fcrdns: int) -> dict[str, object]:
    summary = {"domains": domains, "judged": domains, "failing": failing, "without_spf": 0, "without_dkim": 0,
               "without_dmarc": without_dmarc, "ips": 2, "ips_without_fcrdns": ips_without_fcrdns, "dns_errors": 0}
    return {"judged": True, "total_domains": domains, "truncated": False, "summary": summary, "counts": {},
            "domains": [], "notes": []}


def fleet() -> list[ServerResult]:
    """A run of twelve servers of every kind, in inventory order (not the page's order)."""
    def result(name: str, outcome: Outcome, **fields: object) -> ServerResult:
        return ServerResult(name=name, address="198.51.100.10", mode="fix", outcome=outcome, **fields)  # type: ignore[arg-type]

    fixed = {"generation": "modern", "exposed_before": True, "exposed_after": False, "restarted": True}
    clean = {"generation": "modern", "exposed_before": False, "exposed_after": False}
    return [
        result("web01.example.net", Outcome.REMEDIATED, **fixed, deliverability=_mail(42, 3, 5, 1)),
        result("web02.example.net", Outcome.COMPLIANT, **clean, deliverability=_mail(17, 0, 0, 0)),
        result("web03.example.net", Outcome.REMEDIATED, **{**fixed, "generation": "legacy"}),
        result("web04.example.net", Outcome.UNREACHABLE, reason="connect: [Errno 111] Connection refused"),
        result("web05.example.net", Outcome.COMPLIANT, **clean),
        result("web06.example.net", Outcome.FAILED, generation="modern", exposed_before=True, exposed_after=True,
               reason="whmapi1-refused: set_tweaksetting popbeforesmtp: Access denied"),
        result("mx1.example.org", Outcome.NOT_CPANEL, generation="none"),
        result("web08.example.net", Outcome.SKIPPED, generation="modern", exposed_before=True, reason="max-changes"),
        result("web09.example.net", Outcome.HOST_KEY_MISMATCH,
               reason="the server's host key differs from the pinned one"),
        result("web10.example.net", Outcome.REMEDIATED, **fixed, deliverability=_mail(8, 1, 2, 0)),
        result("web11.example.net", Outcome.NONCOMPLIANT, generation="legacy", exposed_before=True),
        result(EVIL, Outcome.AUTH_FAILED, reason='"><b>not bold</b>'),
    ]


FAILURES = [EVIL, "web06.example.net", "web09.example.net", "web04.example.net"]  # critical by name, then warning


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (chromedriver's browsers and their helpers), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium at a fixed size; quit at the end, and not one of its processes left behind."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/bootstrap installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                 "--hide-scrollbars", "--force-device-scale-factor=1", "--disable-extensions", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path given, so Selenium Manager never looks for (or downloads) one.
    service = Service(str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    assert service.process is not None
    spawned = {service.process.pid} | _descendants(service.process.pid)
    try:
        yield driver
    finally:
        driver.quit()  # ends the browser and stops chromedriver
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in spawned) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = sorted(pid for pid in spawned if _alive(pid))
        for pid in left:
            os.kill(pid, 9)  # by PID: only what this fixture started
        assert not left, f"browser processes left running: {left}"


@pytest.fixture
def page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The page of the fleet's records, written by ``relayguard report`` with relative paths (the records'
    locations on the page name no temporary folder)."""
    monkeypatch.chdir(tmp_path)
    write_records("records", fleet(), RUN_ID, {})
    assert main(["report", "--from", "records", "--run", RUN_ID, "--html", "fleet-report.html"]) == 0
    return tmp_path / "fleet-report.html"


def _visible_servers(driver: webdriver.Chrome) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#servers tbody tr")
    return [row.find_element(By.CSS_SELECTOR, "td.server").text for row in rows if row.is_displayed()]


def _header(driver: webdriver.Chrome, label: str) -> WebElement:
    return driver.find_element(By.XPATH, f"//table[@id='servers']/thead//button[normalize-space()='{label}']")


def test_the_report_page_counts_sorts_failures_first_filters_and_shows_untrusted_text_as_text(
        browser: webdriver.Chrome, page: Path, tmp_path: Path) -> None:
    browser.get(page.as_uri())
    assert browser.title == f"RelayGuard fleet report: run {RUN_ID}"

    # Counts: twelve servers, four failed, six exposed before and one still after, three Exim restarts.
    counts = {key: browser.find_element(By.ID, f"count-{key}").text
              for key in ("total", "failed", "exposed-before", "exposed-after", "restarted")}
    assert counts == {"total": "12", "failed": "4", "exposed-before": "6", "exposed-after": "1", "restarted": "3"}
    bars = {bar.get_attribute("data-outcome"): bar.find_element(By.CSS_SELECTOR, "text.count").text
            for bar in browser.find_elements(By.CSS_SELECTOR, "#chart .bar")}
    assert bars == {"failed": "1", "host-key-mismatch": "1", "auth-failed": "1", "unreachable": "1",
                    "noncompliant": "1", "skipped": "1", "remediated": "3", "compliant": "2", "not-cpanel": "1"}
    assert browser.find_element(By.ID, "deliverability-summary").text == (
        "67 domains: 4 breaking receiver rules, 7 without DMARC, 1 sending IP without forward-confirmed PTR, "
        "across 3 servers")

    # Failing servers first, the most severe first.
    assert _visible_servers(browser)[:4] == FAILURES

    # The hostname with markup is the cell's text; neither its script nor its onerror ran.
    assert EVIL in _visible_servers(browser)
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    assert browser.find_elements(By.CSS_SELECTOR, "#servers img, #servers b") == []
    # Nothing was refused by the page's Content-Security-Policy or failed to load: its own style and script ran.
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []

    # Sorting: by server name, both ways, and back to the page's order by status.
    _header(browser, "Server").click()
    names = _visible_servers(browser)
    assert names == sorted(names, key=str.lower) or names == sorted(names)
    assert names[0] == EVIL  # "<" sorts before letters
    _header(browser, "Server").click()
    assert _visible_servers(browser) == names[::-1]
    _header(browser, "Status").click()
    assert _visible_servers(browser)[:4] == FAILURES

    # Filtering: by text, by group, by a bar of the chart; the counter follows.
    search = browser.find_element(By.ID, "filter")
    search.send_keys("web0")
    assert len(_visible_servers(browser)) == 8
    assert all("web0" in name for name in _visible_servers(browser))
    assert browser.find_element(By.ID, "shown").text == "8"
    search.send_keys("6")
    assert _visible_servers(browser) == ["web06.example.net"]
    search.clear()
    search.send_keys(" ")  # an input event with an empty needle: every row again
    assert len(_visible_servers(browser)) == 12
    choice = Select(browser.find_element(By.ID, "group"))
    choice.select_by_value("failure")
    assert _visible_servers(browser) == FAILURES
    browser.find_element(By.CSS_SELECTOR, '#chart .bar[data-outcome="remediated"] rect').click()
    assert choice.first_selected_option.get_attribute("value") == "remediated"
    assert _visible_servers(browser) == ["web01.example.net", "web03.example.net", "web10.example.net"]
    choice.select_by_value("")
    assert browser.find_element(By.ID, "shown").text == "12"

    # The documentation's screenshot: the whole page, as an operator first sees it.
    browser.get(page.as_uri())
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.set_window_size(1280, height + 40)
    shot = tmp_path / "fleet-report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RG_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["RG_REPORT_SCREENSHOT"])
