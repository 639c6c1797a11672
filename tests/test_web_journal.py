"""The web journal in a real browser: Debian's chromium driven by Selenium, against the real
daemon in-process, fed by the fake PBX (speed 0) with the real captures.

The daemon and the fake PBX run on an event loop in a thread of their own (Selenium's calls
block); the test speaks to them with ``run``. Screenshots of each screen go under the test's
tmp directory. Skipped only when /usr/bin/chromium or /usr/bin/chromedriver is missing (CI
installs both).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.browser import LiveDaemon, chromium, chromium_available, live_daemon, sign_in, wait

if not chromium_available():
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

SLUGS = [
    "01-incoming-answered-direct",
    "02-incoming-ringgroup-102-answers",
    "03-incoming-noanswer-timeout",
    "04-incoming-abandoned-while-ringing",
    "07-outgoing-answered",
    "08-outgoing-noanswer-cancelled",
    "10-internal-101-to-102",
    "11-incoming-blind-transfer",
]
#: Played last, held after its first message until the test releases it.
LATE = "13-incoming-pickup-by-105"
LATE_NUMBER = "79998887766"
XSS = "<img src=x onerror=alert(1)>"
DOCS_IMG = Path(__file__).parent.parent / "docs" / "img"

T = TypeVar("T")


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    with live_daemon(
        tmp_path_factory.mktemp("web-journal"),
        [*SLUGS, LATE],
        recordings=SLUGS,
        committed=len(SLUGS),
        hold=lambda m: m.first("CallerIDNum") == LATE_NUMBER,
        accounts=[("anna", "101", "anna-password"), ("petrov", "102", "petrov-password")],
    ) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def rows(driver: WebDriver) -> list[dict[str, Any]]:
    script = """
      return [...document.querySelectorAll('#rows tr.call')].map(r => ({
        id: Number(r.dataset.id),
        status: r.querySelector('.badge').textContent,
        tone: r.querySelector('.badge').className,
        party: r.querySelector('.c-party').innerText,
      }));"""
    result: list[dict[str, Any]] = driver.execute_script(script)
    return result


def settled(driver: WebDriver) -> list[dict[str, Any]]:
    """The rows once the page has loaded them (the state line empty or "Звонков нет")."""
    wait(
        driver,
        lambda d: (
            d.find_element(By.ID, "state").text in ("", "Звонков нет")
            and d.execute_script("return document.readyState") == "complete"
        ),
    )
    return rows(driver)


def ids_of_api(journal: LiveDaemon, query: str = "") -> list[int]:
    return [c["id"] for c in journal.api("/api/v1/calls?limit=500" + query)["items"]]


def shoot(driver: WebDriver, shots: Path, name: str) -> None:
    driver.save_screenshot(str(shots / f"{name}.png"))


def test_a_wrong_password_is_refused(journal: LiveDaemon, browser: WebDriver, shots: Path) -> None:
    sign_in(browser, journal.base, "anna", "not-her-password")
    error = wait(browser, lambda d: d.find_element(By.ID, "error"))
    assert error.text == "Неверный логин или пароль."
    assert "/login" in browser.current_url
    shoot(browser, shots, "sign-in-refused")


def test_the_journal_shows_the_calls_with_their_statuses(
    journal: LiveDaemon, browser: WebDriver, shots: Path
) -> None:
    sign_in(browser, journal.base, "anna", "anna-password")
    wait(browser, lambda d: d.current_url.rstrip("/") == journal.base)
    shown = settled(browser)
    expected = journal.api("/api/v1/calls?limit=500")["items"]
    assert [r["id"] for r in shown] == [c["id"] for c in expected]
    assert [r["status"] for r in shown] == [c["status_label"] for c in expected]
    labels = {r["status"] for r in shown}
    assert {"Принят", "Дозвонились", "Потерян", "Отменен"} <= labels
    tones = {r["status"]: r["tone"] for r in shown}
    assert "badge-ok" in tones["Принят"] and "badge-ok" in tones["Дозвонились"]
    assert "badge-bad" in tones["Потерян"] and "badge-muted" in tones["Отменен"]
    assert any("+7 916 123-45-67" in r["party"] for r in shown)
    assert browser.find_element(By.ID, "who").text.startswith("Ivanova Anna")
    shoot(browser, shots, "journal")


def test_lost_calls_filter_and_the_address_bar_keeps_the_view(
    journal: LiveDaemon, browser: WebDriver, shots: Path
) -> None:
    browser.get(journal.base + "/")
    everything = settled(browser)
    browser.find_element(By.XPATH, "//label[span='Потерянные']").click()
    wait(browser, lambda d: "kind=lost" in d.current_url)
    wait(browser, lambda d: [r["id"] for r in rows(d)] == ids_of_api(journal, "&kind=lost"))
    lost = rows(browser)
    assert lost and {r["status"] for r in lost} == {"Потерян"}
    shoot(browser, shots, "lost")
    # The link reopens the same view...
    link = browser.current_url
    browser.get("about:blank")
    browser.get(link)
    assert [r["id"] for r in settled(browser)] == [r["id"] for r in lost]
    assert browser.find_element(By.CSS_SELECTOR, "input[value=lost]").is_selected()
    # ... and Back returns to the previous one.
    browser.get(journal.base + "/")
    settled(browser)
    browser.find_element(By.XPATH, "//label[span='Потерянные']").click()
    wait(browser, lambda d: "kind=lost" in d.current_url)
    browser.back()
    wait(browser, lambda d: [r["id"] for r in rows(d)] == [r["id"] for r in everything])
    assert not browser.find_element(By.CSS_SELECTOR, "input[value=lost]").is_selected()


def test_search_finds_a_number_in_any_written_form(
    journal: LiveDaemon, browser: WebDriver, shots: Path
) -> None:
    browser.get(journal.base + "/")
    settled(browser)
    box = browser.find_element(By.ID, "q")
    box.send_keys("8 (916) 123-45-67")
    wait(browser, lambda d: "q=8" in d.current_url)
    wait(browser, lambda d: len(rows(d)) == 1)
    (row,) = rows(browser)
    assert "+7 916 123-45-67" in row["party"]
    assert [row["id"]] == ids_of_api(journal, "&q=89161234567")
    shoot(browser, shots, "search")


def test_my_calls_are_the_signed_in_employees(
    journal: LiveDaemon, browser: WebDriver, shots: Path
) -> None:
    mine: dict[str, list[int]] = {}
    for login, password in (("anna", "anna-password"), ("petrov", "petrov-password")):
        sign_in(browser, journal.base, login, password)
        wait(browser, lambda d: d.current_url.rstrip("/") == journal.base)
        settled(browser)
        browser.find_element(By.XPATH, "//label[span='Мои звонки']").click()
        wait(browser, lambda d: "mine=1" in d.current_url)
        employee = "101" if login == "anna" else "102"
        expected = ids_of_api(journal, f"&employee={employee}")
        wait(browser, lambda d, e=expected: [r["id"] for r in rows(d)] == e)
        mine[login] = expected
    assert mine["anna"] != mine["petrov"]
    assert mine["anna"] and mine["petrov"]


def test_names_are_text_never_html(journal: LiveDaemon, browser: WebDriver, shots: Path) -> None:
    sign_in(browser, journal.base, "anna", "anna-password")
    wait(browser, lambda d: d.current_url.rstrip("/") == journal.base)
    settled(browser)
    browser.execute_script("window.notReloaded = true")
    journal.api(
        "/api/v1/customers/xss",
        {"name": XSS, "numbers": ["79161234567"], "contacts": []},
        method="PUT",
    )
    # The row changes in place (the change feed), showing the name as text.
    wait(browser, lambda d: any(XSS in r["party"] for r in rows(d)))
    assert browser.execute_script("return window.notReloaded") is True
    assert not browser.find_elements(By.CSS_SELECTOR, "#rows img[src='x']")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    shoot(browser, shots, "customer-name-as-text")


def test_now_on_the_phone_shows_the_call_in_progress(
    journal: LiveDaemon, browser: WebDriver, shots: Path
) -> None:
    # The late call is held by the fake PBX mid-call: the daemon's assembler has it open.
    live = journal.api("/api/v1/live")
    assert live["available"] and [c["number"] for c in live["items"]] == ["+" + LATE_NUMBER]
    sign_in(browser, journal.base, "anna", "anna-password")
    wait(browser, lambda d: d.current_url.rstrip("/") == journal.base)
    settled(browser)
    strip = wait(browser, lambda d: d.find_element(By.ID, "now"))
    wait(browser, lambda d: strip.is_displayed())
    (card,) = browser.find_elements(By.CSS_SELECTOR, "#now-calls .now-call")
    assert card.get_attribute("data-linkedid") == live["items"][0]["linkedid"]
    assert "+7 999 888-77-66" in card.text
    states = {"ringing": "ЗВОНОК", "talking": "РАЗГОВОР", "waiting": "ОЖИДАНИЕ"}
    assert states[live["items"][0]["state"]] in card.text.upper()
    shoot(browser, shots, "now-number")
    # The customer's name once the number is known, at the next refresh (no reload).
    browser.execute_script("window.notReloaded = true")
    journal.api(
        "/api/v1/customers/c-late",
        {"name": "ООО <Поздний> звонок", "numbers": [LATE_NUMBER], "contacts": []},
        method="PUT",
    )
    wait(browser, lambda d: "ООО <Поздний> звонок" in d.find_element(By.ID, "now").text, 10)
    assert browser.execute_script("return window.notReloaded") is True
    shoot(browser, shots, "now-customer")
    browser.set_window_size(390, 844)
    shoot(browser, shots, "now-phone")
    browser.set_window_size(1366, 768)


def test_a_new_call_appears_at_the_top_without_a_reload(
    journal: LiveDaemon, browser: WebDriver, shots: Path
) -> None:
    browser.get(journal.base + "/")
    before = settled(browser)
    browser.execute_script("window.notReloaded = true")
    journal.pbx.release()
    wait(browser, lambda d: "+7 999 888-77-66" in rows(d)[0]["party"], 30)
    after = rows(browser)
    assert [r["id"] for r in after[1:]] == [r["id"] for r in before]
    assert browser.execute_script("return window.notReloaded") is True
    shoot(browser, shots, "new-call")
    # The phone's width: the same journal as cards.
    browser.set_window_size(390, 844)
    shoot(browser, shots, "phone")
    browser.set_window_size(1366, 768)
    # The README's pictures, refreshed on request only (a test run leaves the tree as it was):
    # PBXJOURNAL_UPDATE_SCREENSHOTS=1 pytest tests/test_web_journal.py
    if not os.environ.get("PBXJOURNAL_UPDATE_SCREENSHOTS"):
        return
    DOCS_IMG.mkdir(exist_ok=True)
    for name in ("journal", "lost", "phone"):
        source = shots / f"{name}.png"
        if source.exists():
            shutil.copy(source, DOCS_IMG / f"web-{name}.png")


def blind_transfer_call(journal: LiveDaemon) -> dict[str, Any]:
    """The call of capture 11: a blind transfer, two recording parts."""
    for summary in journal.api("/api/v1/calls?limit=500")["items"]:
        call: dict[str, Any] = journal.api(f"/api/v1/calls/{summary['id']}")
        kinds = [t["kind"] for t in call["timeline"]["transfers"]]
        if kinds == ["blind"] and len(call["timeline"]["recordings"]) == 2:
            return call
    raise AssertionError("no blind-transfer call with two recording parts")


def audio_state(driver: WebDriver) -> dict[str, Any]:
    state: dict[str, Any] = driver.execute_script(
        "const a = document.getElementById('audio');"
        "return {time: a.currentTime, paused: a.paused, rate: a.playbackRate, src: a.src,"
        " ready: a.readyState, error: a.error && a.error.code};"
    )
    return state


def test_the_side_panel_plays_the_parts_and_edits_the_comment(
    journal: LiveDaemon, browser: WebDriver, shots: Path
) -> None:
    call = blind_transfer_call(journal)
    parts = call["timeline"]["recordings"]
    sign_in(browser, journal.base, "anna", "anna-password")
    wait(browser, lambda d: d.current_url.rstrip("/") == journal.base)
    settled(browser)
    browser.find_element(By.CSS_SELECTOR, f"#rows tr[data-id='{call['id']}'] .c-time").click()
    panel = wait(browser, lambda d: d.find_element(By.ID, "panel"))
    wait(browser, lambda d: panel.is_displayed() and d.find_elements(By.ID, "timeline"))
    timeline = browser.find_element(By.ID, "timeline").text
    assert "Перевод" in timeline and "ответил" in timeline
    for employee in call["employees"]:
        assert (employee["name"] or employee["extension"]) in panel.text
    assert browser.find_element(By.ID, "part-label").text == "Часть 1 из 2"

    # Play; the seek bar starts playing mid-file at once.
    browser.find_element(By.ID, "play").click()
    wait(browser, lambda d: not audio_state(d)["paused"] and audio_state(d)["time"] > 0)
    assert audio_state(browser)["src"].endswith(f"/api/v1/recordings/{parts[0]['id']}")
    browser.find_element(By.ID, "play").click()
    wait(browser, lambda d: audio_state(d)["paused"])
    browser.execute_script(
        "const s = document.getElementById('seek'); s.value = 4;"
        "s.dispatchEvent(new Event('input'));"
    )
    wait(browser, lambda d: not audio_state(d)["paused"] and audio_state(d)["time"] >= 4)
    shoot(browser, shots, "panel-playing")
    # 10 s back: to the start of the part; 10 s forward from there: past the end of the
    # 9.6 s first part, into the second (the parts are one conversation).
    browser.find_element(By.ID, "back10").click()
    wait(browser, lambda d: audio_state(d)["time"] < 2)
    browser.find_element(By.ID, "fwd10").click()
    wait(browser, lambda d: audio_state(d)["src"].endswith(f"/api/v1/recordings/{parts[1]['id']}"))
    wait(browser, lambda d: audio_state(d)["time"] > 0.3 and not audio_state(d)["paused"])
    assert browser.find_element(By.ID, "part-label").text == "Часть 2 из 2"
    browser.find_element(By.ID, "part-prev").click()
    wait(browser, lambda d: audio_state(d)["src"].endswith(f"/api/v1/recordings/{parts[0]['id']}"))

    # The next part, at 1.5x.
    browser.find_element(By.ID, "part-next").click()
    wait(browser, lambda d: audio_state(d)["src"].endswith(f"/api/v1/recordings/{parts[1]['id']}"))
    assert browser.find_element(By.ID, "part-label").text == "Часть 2 из 2"
    browser.find_element(By.ID, "speed-1_5").click()
    wait(browser, lambda d: audio_state(d)["rate"] == 1.5)
    wait(browser, lambda d: audio_state(d)["ready"] >= 1 and audio_state(d)["error"] is None)

    # The download is the whole conversation as one audio file, for this session.
    href = browser.find_element(By.ID, "download").get_attribute("href")
    assert href == f"{journal.base}/api/v1/calls/{call['id']}/recording?format=mp3"
    head = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then(async r => {"
        "  const b = new Uint8Array(await r.arrayBuffer());"
        "  done({status: r.status, type: r.headers.get('Content-Type'), size: b.length,"
        "        head: Array.from(b.slice(0, 12))});"
        "}).catch(e => done({error: String(e)}));",
        href,
    )
    assert head["status"] == 200, head
    magic = bytes(head["head"])
    assert magic.startswith(b"ID3") or (magic[0] == 0xFF and magic[1] & 0xE0 == 0xE0), magic
    assert head["size"] > 1000

    # The comment: saved through the API with the CSRF token; the row's icon follows.
    comment = "Перезвонить <b>завтра</b>"
    box = browser.find_element(By.ID, "comment-text")
    box.clear()
    box.send_keys(comment)
    browser.find_element(By.ID, "comment-save").click()
    icon = f"#rows tr[data-id='{call['id']}'] img.icon-comment"
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, icon))
    assert browser.find_element(By.CSS_SELECTOR, icon).get_attribute("title") == (
        "Комментарий: " + comment
    )
    assert journal.api(f"/api/v1/calls/{call['id']}")["comment"] == comment
    shoot(browser, shots, "panel-comment")
    browser.find_element(By.ID, "comment-delete").click()
    wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, icon))
    assert journal.api(f"/api/v1/calls/{call['id']}")["comment"] is None
    browser.set_window_size(390, 844)
    shoot(browser, shots, "panel-phone")
    browser.set_window_size(1366, 768)
    browser.find_element(By.ID, "panel-close").click()
    wait(browser, lambda d: not d.find_element(By.ID, "panel").is_displayed())


def open_call_of(driver: WebDriver, journal: LiveDaemon, number: str) -> int:
    (call,) = [c for c in journal.api("/api/v1/calls?limit=500")["items"] if c["number"] == number]
    driver.find_element(By.CSS_SELECTOR, f"#rows tr[data-id='{call['id']}'] .c-time").click()
    wait(driver, lambda d: d.find_elements(By.ID, "customer-search"))
    return int(call["id"])


def party_of(driver: WebDriver, call_id: int) -> str:
    text: str = driver.find_element(By.CSS_SELECTOR, f"#rows tr[data-id='{call_id}'] .c-party").text
    return text


def test_registering_a_number_from_the_journal(
    journal: LiveDaemon, browser: WebDriver, shots: Path
) -> None:
    sign_in(browser, journal.base, "anna", "anna-password")
    wait(browser, lambda d: d.current_url.rstrip("/") == journal.base)
    settled(browser)
    browser.execute_script("window.notReloaded = true")

    # A new customer for an unregistered number: its name typed, then F7.
    first = open_call_of(browser, journal, "+79267001122")
    shoot(browser, shots, "register-unregistered")
    browser.find_element(By.ID, "customer-search").send_keys("ИП Новиков Сергей")
    wait(browser, lambda d: "Не найдено" in d.find_element(By.ID, "customer-found").text)
    browser.find_element(By.ID, "customer-search").send_keys(Keys.F7)
    wait(browser, lambda d: "ИП Новиков Сергей" in party_of(d, first))
    wait(browser, lambda d: d.find_elements(By.ID, "register-done"))
    assert not browser.find_elements(By.ID, "customer-search")
    owner = journal.api("/api/v1/numbers/79267001122")["customer"]
    assert owner["name"] == "ИП Новиков Сергей" and owner["id"].startswith("web-")
    for call in journal.api("/api/v1/calls?limit=500&q=79267001122")["items"]:
        assert call["customer"]["id"] == owner["id"]
        assert "ИП Новиков Сергей" in party_of(browser, call["id"])
    shoot(browser, shots, "register-created")

    # A number added to a contact person of a customer 1C has, found as one types.
    journal.api(
        "/api/v1/customers/c-kvazar",
        {
            "name": "АО Квазар",
            "numbers": [],
            "contacts": [
                {"id": "p-orlova", "name": "Орлова Ирина", "numbers": []},
                {"id": "p-zaitsev", "name": "Зайцев Олег", "numbers": []},
            ],
        },
        method="PUT",
    )
    second = open_call_of(browser, journal, "+74957654321")
    browser.find_element(By.ID, "customer-search").send_keys("квазар")
    pick = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#customer-found .pick"))
    assert pick.text == "АО Квазар"
    shoot(browser, shots, "register-found")
    pick.click()
    choice = wait(browser, lambda d: d.find_element(By.ID, "contact-choice"))
    choice.find_element(By.XPATH, "option[.='Орлова Ирина']").click()
    browser.find_element(By.ID, "bind-contact").click()
    wait(browser, lambda d: "Орлова Ирина" in party_of(d, second))
    assert "АО Квазар" in party_of(browser, second)
    assert journal.api("/api/v1/numbers/74957654321")["customer"]["contact"]["id"] == "p-orlova"
    assert browser.execute_script("return window.notReloaded") is True
    shoot(browser, shots, "register-contact")
