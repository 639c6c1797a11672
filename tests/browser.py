"""Debian's headless Chromium for the web journal's tests and its benchmark, and the daemon they
drive: the real daemon fed by the fake PBX, on a loop of its own thread (Selenium's calls
block)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from connector.events import AmiMessage
from connector.fakepbx import FakePbx
from httpd.web.accounts import Accounts
from pbxjournal.daemon import Daemon
from tests.daemon_support import Committed, daemon_settings
from tests.scenarios import capture

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Headless, and without the background connections this closed network refuses.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1366,768",
    "--lang=ru",
)

T = TypeVar("T")


def chromium_available() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


@contextmanager
def chromium(page_load_timeout: float = 30.0) -> Iterator[Any]:
    """A Selenium driver of Debian's chromium with a fresh profile (no browser download:
    the driver is named, so selenium-manager never runs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in FLAGS:
        options.add_argument(argument)
    profile = tempfile.mkdtemp(prefix="pbxjournal-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(page_load_timeout)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class LoopThread:
    """An asyncio loop on a thread of its own, to run the daemon beside a blocking browser."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class LiveDaemon(LoopThread):
    """The fake PBX playing ``slugs`` and the daemon it feeds, on a loop of their own thread.

    ``start`` returns once ``committed`` calls are in the journal (and, with ``hold``, once the
    fake PBX holds the first message ``hold`` accepts, to be released by the test), with the web
    journal's ``accounts`` (login, extension, password) made. ``recordings``: the captures whose
    recordings the daemon finds (default: ``slugs``)."""

    def __init__(
        self,
        tmp: Path,
        slugs: Iterable[str],
        *,
        committed: int,
        accounts: Iterable[tuple[str, str, str]] = (),
        recordings: Iterable[str] | None = None,
        speed: float = 0,
        click_to_call: str | None = None,
        hold: Callable[[AmiMessage], bool] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.tmp = tmp
        self.slugs = list(slugs)
        self.recordings = self.slugs if recordings is None else list(recordings)
        self.expected = committed
        self.accounts = list(accounts)
        self.speed = speed
        self.click_to_call = click_to_call
        self.hold = hold
        self.environ = dict(environ or {})

    async def start(self) -> None:
        self.pbx = FakePbx(
            [capture(slug) for slug in self.slugs],
            speed=self.speed,
            click_to_call=capture(self.click_to_call) if self.click_to_call else None,
        )
        if self.hold is not None:
            self.pbx.hold_when(self.hold)
        port = await self.pbx.start()
        settings = daemon_settings(
            port, self.tmp / "journal.sqlite3", self.recordings, self.environ
        )
        self.daemon = Daemon(settings)
        self.committed = Committed(self.daemon)
        self.task = asyncio.create_task(self.daemon.run())
        await self.committed.wait_for(self.expected)
        if self.hold is not None:
            await self.pbx.wait_held()
        assert self.daemon.journal is not None
        accounts = Accounts(self.daemon.journal.database)
        for login, extension, password in self.accounts:
            await accounts.add(login, extension, password, admin=False)

    async def stop(self) -> None:
        self.daemon.stop()
        await asyncio.wait_for(self.task, 15)
        await self.pbx.close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"

    def api(self, path: str, body: Any = None, method: str = "GET") -> Any:
        """The JSON API with 1C's credentials (the oracle a page is compared with)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", "Basic " + base64.b64encode(b"1c:secret").decode())
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


@contextmanager
def live_daemon(tmp: Path, slugs: Iterable[str], **options: Any) -> Iterator[LiveDaemon]:
    """A started :class:`LiveDaemon`, stopped (and its loop closed) on leaving."""
    live = LiveDaemon(tmp, slugs, **options)
    live.run(live.start())
    try:
        yield live
    finally:
        live.run(live.stop())
        live.close()


def wait(driver: Any, condition: Any, seconds: float = 15.0, poll: float = 0.1) -> Any:
    """Selenium's wait for ``condition`` on ``driver``: its first truthy value. An element
    that the page replaced between being found and being read (a row re-rendered after a
    registration) is looked for again, as one not found yet is."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, seconds, poll_frequency=poll, ignored_exceptions=ignored).until(
        condition
    )


def sign_in(driver: Any, base: str, login: str, password: str, seconds: float = 15.0) -> None:
    """Fill and send the web journal's sign-in form at ``base`` (a fresh browser session)."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(base + "/")
    wait(driver, lambda d: "/login" in d.current_url, seconds)
    driver.find_element(By.ID, "login").send_keys(login)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
