"""Registering a number from the web journal changes every row of that number, without a
reload (chromium, as tests/test_web_journal.py): capture 15 has a missed call from 79265550011
and the call back dialled as 89265550011 — one number in two written forms, two rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import LiveDaemon, live_daemon, sign_in, wait

# Skipped with it when chromium or chromedriver is missing.
from tests.test_web_journal import browser, rows, settled, shoot

__all__ = ["browser"]  # the fixture, shared with tests/test_web_journal.py

SLUGS = ["01-incoming-answered-direct", "15-missed-then-callback"]
NUMBER = "+79265550011"
T = TypeVar("T")


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    with live_daemon(
        tmp_path_factory.mktemp("web-registration"),
        SLUGS,
        committed=3,
        accounts=[("anna", "101", "anna-password")],
    ) as live:
        yield live


def test_registering_a_number_changes_every_row_of_that_number(
    journal: LiveDaemon, browser: WebDriver, tmp_path: Path
) -> None:
    sign_in(browser, journal.base, "anna", "anna-password")
    wait(browser, lambda d: d.current_url.rstrip("/") == journal.base)
    shown = settled(browser)
    ids = browser.execute_script(
        "return [...document.querySelectorAll('#rows tr.call')].map(r => Number(r.dataset.id))"
    )
    assert len(shown) == 3
    same = [r for r in shown if "+7 926 555-00-11" in r["party"]]
    assert len(same) == 2, shown
    other = next(r for r in shown if r not in same)
    browser.execute_script("window.notReloaded = true")

    # From the missed call's row: a new customer with the number.
    missed = next(r for r in same if r["status"] != "Дозвонились")
    browser.find_element(By.CSS_SELECTOR, f"#rows tr[data-id='{missed['id']}'] .c-time").click()
    search = wait(browser, lambda d: d.find_element(By.ID, "customer-search"))
    search.send_keys("ООО Перезвон")
    wait(browser, lambda d: "Не найдено" in d.find_element(By.ID, "customer-found").text)
    search.send_keys(Keys.F7)

    # Both rows of the number show the name — the other one through the change feed.
    def names(d: WebDriver) -> dict[int, str]:
        return {r["id"]: r["party"] for r in rows(d)}

    wait(browser, lambda d: all("ООО Перезвон" in names(d)[r["id"]] for r in same), 20)
    assert "ООО Перезвон" not in names(browser)[other["id"]]
    assert browser.execute_script("return window.notReloaded") is True
    assert [r["id"] for r in rows(browser)] == ids  # rows changed in place, none added
    shoot(browser, tmp_path, "registered-both-rows")
