"""Employees' mobiles through the API (issue 15): ``PUT /api/v1/employees/{id}`` with
``mobile`` in any written form, ``GET /api/v1/employees``, a number that is another
employee's mobile or a customer's refused (409), and the running daemon's classifier
following an edit without a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connector.fakepbx import FakePbx
from pbxjournal.daemon import Daemon
from storage.directory import EmployeeRecord
from tests.daemon_support import daemon_settings
from tests.db import ENGINES
from tests.http_support import Maker
from tests.test_peer_flows import PEER, peer_events


@pytest.mark.parametrize("engine", ENGINES)
async def test_put_employee_mobiles_normalised_listed_and_refused_when_taken(
    make_api: Maker, engine: str
) -> None:
    api = await make_api(engine)
    body = {
        "name": "Мобильная Анна",
        "extensions": ["151"],
        "mobile": ["+7 916 111-22-33", "8 (916) 1112233", "89162223344"],
    }
    saved = await api.put("/api/v1/employees/anna", body)
    assert saved["mobile"] == ["+79161112233", "+79162223344"]
    listed = {e["id"]: e for e in (await api.get("/api/v1/employees"))["items"]}
    assert listed["anna"]["mobile"] == ["+79161112233", "+79162223344"]
    # Another employee cannot take it; nor can a customer's number be a mobile.
    taken = await api.put(
        "/api/v1/employees/boris",
        {"name": "Борис", "extensions": ["152"], "mobile": ["79161112233"]},
        status=409,
    )
    assert taken["error"]["code"] == "mobile_taken" and "anna" in taken["error"]["message"]
    customers = await api.put(
        "/api/v1/employees/boris",
        {"name": "Борис", "extensions": ["152"], "mobile": ["8 926 555-00-11"]},
        status=409,
    )
    assert customers["error"]["code"] == "mobile_taken"
    assert "boris" not in {e["id"] for e in (await api.get("/api/v1/employees"))["items"]}
    bad = await api.put(
        "/api/v1/employees/boris", {"name": "Борис", "mobile": ["no digits"]}, status=422
    )
    assert bad["error"]["code"] == "invalid_number"
    # Without "mobile" the stored ones stay; [] removes them.
    kept = await api.put("/api/v1/employees/anna", {"name": "Анна", "extensions": ["151"]})
    assert kept["mobile"] == ["+79161112233", "+79162223344"]
    cleared = await api.put("/api/v1/employees/anna", {"name": "Анна", "mobile": []})
    assert cleared["mobile"] == []


async def test_a_mobile_given_over_http_is_known_to_the_running_daemon(tmp_path: Path) -> None:
    config = tmp_path / "peer.toml"
    config.write_text((PEER / "peer.toml").read_text("utf-8"), "utf-8")  # no mobiles
    pbx = FakePbx([PEER / "xfer_blind__xfer_blind_abacbc.ami"], speed=0)
    port = await pbx.start()
    settings = daemon_settings(port, tmp_path / "journal.sqlite3", config=config)
    daemon = Daemon(settings)
    runner = asyncio.create_task(daemon.run())
    try:
        for _ in range(200):
            if daemon.journal is not None:
                break
            await asyncio.sleep(0.05)
        assert daemon.journal is not None
        assert daemon.assembler.classifier.mobile_owner("+31260010001") is None
        # What PUT /api/v1/employees/{id} does.
        await daemon.journal.upsert_employee(
            EmployeeRecord("260010001", "tenant 26001", ("260010001",), ("+31 26 001 0001",))
        )
        for _ in range(100):
            if daemon.assembler.classifier.mobile_owner("+31260010001"):
                break
            await asyncio.sleep(0.05)
        assert daemon.assembler.classifier.mobile_owner("+31260010001") == "260010001"
        # A new call through the daemon's own assembler: answered on that mobile.
        calls = []
        events = peer_events("mobile__simple_mobile")
        for event in events:
            calls.extend(daemon.assembler.feed(event, event.time))
        calls.extend(daemon.assembler.expire(events[-1].time + 60))
        (call,) = [c for c in calls if c.participants]
        assert [(p.extension, p.role.value, p.mobile) for p in call.participants] == [
            ("260010001", "answered", True)
        ]
    finally:
        daemon.stop()
        await asyncio.wait_for(runner, 10)
        await pbx.close()
