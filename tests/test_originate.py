"""Click-to-call (issue 17) through the whole daemon: HTTP in, AMI ``Originate`` out over a real
TCP session to the fake PBX, capture 18's events back, the journal row through ``/changes``.

The fake PBX plays capture 04 first (a customer gives up while 101's phone rings: a lost
call, attention on), then answers ``Originate`` as Asterisk does (capture 18 rewritten for the
requested employee and number). Calling that customer back from the journal makes an outgoing
row placed by the employee, linked to the lost call (``callback_of``), and the lost call's
attention goes off (it becomes ``no_answer``) through the journal's own rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from config import AmiSettings, load_settings
from connector.ami import open_session
from connector.fakepbx import FakePbx
from httpd.protocols import OriginateOrder
from pbxjournal.daemon import Daemon
from pbxjournal.originate import Originator
from tests.daemon_support import Committed, daemon_settings
from tests.scenarios import capture

LOST = "04-incoming-abandoned-while-ringing"  # +79267001122 gives up while 101 rings
CLICK_TO_CALL = capture("18-click-to-call-originate")
CLIENTS = [
    {
        "name": "1c",
        "username": "1c",
        "password": "secret",
        "scopes": ["read", "write", "originate"],
    },
    {"name": "reader", "username": "reader", "password": "reader-secret"},
]
ONEC = aiohttp.encode_basic_auth("1c", "secret")
READER = aiohttp.encode_basic_auth("reader", "reader-secret")


@dataclass
class Running:
    daemon: Daemon
    committed: Committed
    http: aiohttp.ClientSession
    base: str

    async def request(
        self, method: str, path: str, *, auth: str = ONEC, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": auth}
        async with self.http.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            return response.status, await response.json()

    async def originate(self, body: dict[str, Any], **kwargs: Any) -> tuple[int, Any]:
        return await self.request("POST", "/api/v1/originate", json=body, **kwargs)

    async def follow(self, originate_id: str, seconds: float = 20.0) -> list[dict[str, Any]]:
        """Every distinct state seen until a final one, in order."""
        seen: list[dict[str, Any]] = []
        for _ in range(int(seconds / 0.02)):
            status, body = await self.request("GET", f"/api/v1/originate/{originate_id}")
            assert status == 200, body
            if not seen or seen[-1]["state"] != body["state"]:
                seen.append(body)
            if body["state"] in ("finished", "failed"):
                return seen
            await asyncio.sleep(0.02)
        raise AssertionError(f"the click-to-call never ended: {seen}")


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, port: int, extra: dict[str, str] | None = None
) -> AsyncIterator[Running]:
    settings = daemon_settings(
        port,
        tmp_path / "journal.sqlite3",
        [LOST],
        {
            "PBXJOURNAL_HTTP__CLIENTS": json.dumps(CLIENTS),
            "PBXJOURNAL_PBX__HANGUP_GRACE": "0.3s",
            "PBXJOURNAL_LOG__NUMBERS": "masked",
            "PBXJOURNAL_AMI__SECRET": "ami-secret-never-logged",
            **(extra or {}),
        },
    )
    daemon = Daemon(settings)
    committed = Committed(daemon)
    task = asyncio.create_task(daemon.run())
    try:
        for _ in range(200):
            if daemon.http_port is not None:
                break
            await asyncio.sleep(0.025)
        assert daemon.http_port is not None
        async with aiohttp.ClientSession() as http:
            yield Running(daemon, committed, http, f"http://127.0.0.1:{daemon.http_port}")
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 20)


async def lost_call(run: Running) -> dict[str, Any]:
    await run.committed.wait_for(1)
    status, page = await run.request("GET", "/api/v1/calls")
    assert status == 200
    (call,) = page["items"]
    assert (call["direction"], call["status"], call["attention"]) == ("incoming", "lost", True)
    assert call["number"] == "+79267001122"
    return call  # type: ignore[no-any-return]


async def test_calling_back_a_lost_call_from_the_journal(tmp_path: Path) -> None:
    pbx = FakePbx([capture(LOST)], speed=4, click_to_call=CLICK_TO_CALL)
    port = await pbx.start()
    try:
        with capture_logs() as logs:
            async with running(tmp_path, port) as run:
                lost = await lost_call(run)
                status, since = await run.request("GET", "/api/v1/changes", params={"since": "0"})
                assert status == 200
                before = since["last_version"]

                status, accepted = await run.originate(
                    {"employee": "102", "number": "8 (926) 700-11-22", "call_id": lost["id"]}
                )
                assert status == 202, accepted
                assert accepted["state"] == "ringing_employee"
                assert accepted["employee"] == {
                    "id": "102",
                    "extension": "102",
                    "name": "Petrov Ivan",
                }
                assert accepted["number"] == "+79267001122"
                assert accepted["callback_of"] == lost["id"]
                states = await run.follow(accepted["id"])
                await run.committed.wait_for(2)

                status, changes = await run.request(
                    "GET", "/api/v1/changes", params={"since": str(before)}
                )
                assert status == 200
                by_id = {c["id"]: c for c in changes["items"]}
                back = next(c for c in changes["items"] if c["id"] != lost["id"])
                returned = by_id[lost["id"]]
    finally:
        await pbx.close()

    # The PBX was asked what the issue says: the employee's phone first, then the customer.
    (sent,) = [a for a in pbx.actions_received if a.first("Action") == "Originate"]
    assert sent.first("Channel") == "PJSIP/102"
    assert sent.first("Context") == "default"
    assert sent.first("Exten") == "89267001122"
    assert sent.first("Async") == "true"
    assert sent.first("Timeout") == "30000"
    assert sent.first("ActionID").endswith(accepted["id"])
    assert sent.first("ChannelId") == accepted["linkedid"]
    # The phone shows whom it is about to call (no customer: the formatted number).
    assert sent.first("CallerID") == '"+7 926 700-11-22" <89267001122>'
    variables = [v for k, v in sent.headers if k == "Variable"]
    assert f"PBXJOURNAL_CALLBACK_OF={lost['id']}" in variables

    # Ringing the employee, dialling the customer, talking, then the row was written.
    names = [s["state"] for s in states]
    assert names[-1] == "finished"
    order = ["ringing_employee", "dialling_customer", "talking", "finished"]
    assert names == [n for n in order if n in names]
    assert "talking" in names
    final = states[-1]
    assert final["call_id"] == back["id"]
    assert final["reason"] is None and final["reason_code"] == 4

    # The call back: outgoing, placed by 102, answered by the customer, linked to the lost call.
    assert back["direction"] == "outgoing"
    assert back["status"] == "reached"
    # Timed as capture 18: the customer answered 5 s after the click, talked 6 s.
    assert (back["ring_seconds"], back["talk_seconds"]) == (5.0, 6.0)
    assert back["number"] == "+79267001122"
    assert back["callback_of"] == lost["id"]
    assert [(e["extension"], e["role"]) for e in back["employees"]] == [("102", "placed")]
    assert back["linkedid"] == accepted["linkedid"]
    # ... and the lost call it returns: attention off, now a call nobody answered but returned.
    assert returned["attention"] is False
    assert returned["status"] == "no_answer"
    assert returned["callback_of"] is None

    # One log line for the click-to-call: who, the masked number, the result; no secret.
    lines = [e for e in logs if e["event"] == "originate"]
    assert len(lines) == 1
    (line,) = lines
    assert line["client"] == "1c"
    assert line["employee"] == "102"
    assert line["number"] == "+7926***1122"
    assert line["result"] == "finished"
    assert line["call_id"] == back["id"]
    text = repr(logs)
    assert "ami-secret-never-logged" not in text
    assert "secret" not in json.dumps([{k: str(v) for k, v in e.items()} for e in lines])
    assert "79267001122" not in repr(lines)


async def test_live_shows_the_click_to_call_while_the_phone_rings(tmp_path: Path) -> None:
    pbx = FakePbx([capture(LOST)], speed=1, click_to_call=CLICK_TO_CALL)
    pbx.unanswered_extensions = {"103"}
    port = await pbx.start()
    try:
        async with running(tmp_path, port, {"PBXJOURNAL_ORIGINATE__TIMEOUT": "3s"}) as run:
            await lost_call(run)
            loop = asyncio.get_running_loop()
            clicked = loop.time()
            status, accepted = await run.originate({"employee": "103", "number": "+79267001122"})
            assert status == 202
            item = None
            # What each poll saw (seconds since the click, the item's state and employees),
            # for the message should the ringing phone never show.
            seen: list[tuple[float, str | None, list[tuple[str, str]]]] = [
                (round(loop.time() - clicked, 3), "202", [])
            ]
            for _ in range(200):
                status, live = await run.request("GET", "/api/v1/live")
                item = next(
                    (i for i in live["items"] if i["linkedid"] == accepted["linkedid"]), None
                )
                people = [(e["extension"], e["state"]) for e in (item or {}).get("employees", [])]
                seen.append((round(loop.time() - clicked, 3), item and item["state"], people))
                if item is not None and item["employees"]:
                    break
                await asyncio.sleep(0.02)
            changes = [s for n, s in enumerate(seen) if n == 0 or s[1:] != seen[n - 1][1:]]
            state = run.daemon.originator.status(accepted["id"])
            assert item is not None, f"{len(seen)} polls, changes {changes}, now {state}"
            assert item["originate"] == {
                "id": accepted["id"],
                "state": "ringing_employee",
                "state_label": "Звонит ваш телефон",
                "callback_of": None,
            }
            # Their phone rings first, as the one who places the call (DESIGN section 5).
            assert [(e["extension"], e["state"]) for e in item["employees"]] == [("103", "placed")]
            assert item["state"] in ("ringing", "waiting")
            states = await run.follow(accepted["id"])
    finally:
        await pbx.close()
    assert states[-1]["state"] == "failed"
    assert states[-1]["reason"] == "no answer"
    assert states[-1]["reason_code"] == 3


async def test_the_employee_does_not_pick_up(tmp_path: Path) -> None:
    pbx = FakePbx([capture(LOST)], speed=0, click_to_call=CLICK_TO_CALL)
    pbx.unanswered_extensions = {"101"}
    port = await pbx.start()
    try:
        with capture_logs() as logs:
            async with running(tmp_path, port, {"PBXJOURNAL_ORIGINATE__TIMEOUT": "1s"}) as run:
                lost = await lost_call(run)
                status, accepted = await run.originate({"employee": "101", "call_id": lost["id"]})
                assert status == 202, accepted
                assert accepted["number"] == "+79267001122"  # the returned call's number
                states = await run.follow(accepted["id"])
    finally:
        await pbx.close()
    (sent,) = pbx.originates
    assert sent.timeout == 1.0
    final = states[-1]
    assert (final["state"], final["reason"], final["reason_code"]) == ("failed", "no answer", 3)
    assert final["state_label"] == "Не удалось"
    (line,) = [e for e in logs if e["event"] == "originate"]
    assert (line["result"], line["reason"]) == ("failed", "no answer")


async def test_the_pbx_refuses_the_originate(tmp_path: Path) -> None:
    """An AMI user without the originate permission: Asterisk answers Response: Error."""
    pbx = FakePbx([capture(LOST)], speed=0, click_to_call=CLICK_TO_CALL)
    pbx.originate_error = "Permission denied"
    port = await pbx.start()
    try:
        with capture_logs() as logs:
            async with running(tmp_path, port) as run:
                await lost_call(run)
                status, accepted = await run.originate({"employee": "101", "number": "89267001122"})
                assert status == 202
                assert accepted["state"] == "failed"
                assert accepted["reason"] == "Permission denied"
                status, again = await run.request("GET", accepted["url"])
                assert status == 200
                assert (again["state"], again["reason"]) == ("failed", "Permission denied")
    finally:
        await pbx.close()
    (line,) = [e for e in logs if e["event"] == "originate"]
    assert (line["result"], line["reason"]) == ("failed", "Permission denied")


async def test_the_ami_is_down(tmp_path: Path) -> None:
    pbx = FakePbx([], click_to_call=CLICK_TO_CALL)
    port = await pbx.start()
    await pbx.close()  # nobody listens there any more
    with capture_logs() as logs:
        async with running(tmp_path, port) as run:
            status, body = await run.originate({"employee": "101", "number": "89267001122"})
            assert status == 503
            assert body["error"]["code"] == "ami_unavailable"
    (line,) = [e for e in logs if e["event"] == "originate"]
    assert line["result"] == "ami_unavailable"
    assert line["number"] == "+7926***1122"


async def test_requests_the_api_refuses(tmp_path: Path) -> None:
    pbx = FakePbx([capture(LOST)], speed=0, click_to_call=CLICK_TO_CALL)
    port = await pbx.start()
    try:
        async with running(tmp_path, port) as run:
            lost = await lost_call(run)
            cases: list[tuple[dict[str, Any], int, str]] = [
                ({"employee": "101", "number": "12"}, 422, "invalid_number"),
                ({"employee": "101", "number": "not a number"}, 422, "invalid_number"),
                ({"employee": "101", "number": "+44 20 7946 0958"}, 422, "number_not_allowed"),
                ({"employee": "101", "number": "8 809 123-45-67"}, 422, "number_not_allowed"),
                ({"employee": "999", "number": "89267001122"}, 404, "employee_not_found"),
                ({"employee": "101", "call_id": 99999}, 404, "call_not_found"),
                ({"number": "89267001122"}, 400, "invalid_body"),
                ({"employee": "101"}, 400, "invalid_body"),
                ({"employee": "101", "number": "89267001122", "x": 1}, 400, "invalid_body"),
                ({"employee": "101", "call_id": "1"}, 400, "invalid_body"),
            ]
            for body, expected, code in cases:
                status, answer = await run.originate(body)
                assert (status, answer["error"]["code"]) == (expected, code), body
            status, answer = await run.originate(
                {"employee": "101", "number": "89267001122"}, auth=READER
            )
            assert status == 403
            assert answer["error"]["code"] == "missing_scope"
            assert "'originate'" in answer["error"]["message"]
            status, answer = await run.request("GET", "/api/v1/originate/0123456789abcdef")
            assert (status, answer["error"]["code"]) == (404, "originate_not_found")
            # Nothing was sent to the PBX for any of them.
            assert pbx.originates == []
            status, page = await run.request("GET", "/api/v1/calls")
            assert [c["id"] for c in page["items"]] == [lost["id"]]
    finally:
        await pbx.close()


async def test_an_allow_list_opens_international_numbers(tmp_path: Path) -> None:
    pbx = FakePbx([capture(LOST)], speed=0, click_to_call=CLICK_TO_CALL)
    port = await pbx.start()
    extra = {"PBXJOURNAL_ORIGINATE__ALLOW": r"\+44\d+", "PBXJOURNAL_ORIGINATE__EXTEN": "{e164}"}
    try:
        async with running(tmp_path, port, extra) as run:
            await lost_call(run)
            status, body = await run.originate({"employee": "101", "number": "+44 20 7946 0958"})
            assert status == 202, body
            status, body = await run.originate({"employee": "101", "number": "89267001122"})
            assert (status, body["error"]["code"]) == (422, "number_not_allowed")
    finally:
        await pbx.close()
    (sent,) = pbx.originates
    assert sent.exten == "+442079460958"


async def test_a_pbx_that_never_confirms_is_followed_not_retried(tmp_path: Path) -> None:
    """No answer to the Originate within ami.action_timeout: the phone may ring all the same,
    so the request is accepted and followed (a 503 would invite a second ring), and fails
    once the ring timeout and a grace have passed without a word."""
    pbx = FakePbx([capture(LOST)], speed=0, click_to_call=CLICK_TO_CALL)
    pbx.ignore_actions = {"originate"}
    port = await pbx.start()
    extra = {"PBXJOURNAL_AMI__ACTION_TIMEOUT": "0.3s", "PBXJOURNAL_ORIGINATE__TIMEOUT": "1s"}
    try:
        with capture_logs() as logs:
            async with running(tmp_path, port, extra) as run:
                await lost_call(run)
                run.daemon.originator.response_grace = 0.2
                status, accepted = await run.originate({"employee": "101", "number": "89267001122"})
                assert status == 202, accepted
                assert accepted["state"] == "ringing_employee"
                states = await run.follow(accepted["id"])
    finally:
        await pbx.close()
    assert (states[-1]["state"], states[-1]["reason"]) == (
        "failed",
        "no word from the PBX about it",
    )
    (line,) = [e for e in logs if e["event"] == "originate"]
    assert line["result"] == "failed"


async def test_a_withheld_number_is_called_back_but_never_shown_or_logged() -> None:
    """The journal keeps a withheld number for calling back (issue 15): the Originate dials it,
    the phone's screen and the log line do not show it."""
    pbx = FakePbx([], speed=0, click_to_call=CLICK_TO_CALL)
    pbx.originate_error = "Permission denied"  # failed at once: the log line is written now
    port = await pbx.start()
    settings = load_settings(None, environ={"PBXJOURNAL_LOG__NUMBERS": "full"})
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pbx.close)
        session = await open_session(AmiSettings(port=port))
        stack.push_async_callback(session.close)
        originator = Originator(settings, session.send_action, lambda: [])
        order = OriginateOrder(
            "101",
            "101",
            "Ivanova Anna",
            "+79267001122",
            "89267001122",
            "Номер скрыт",
            7,
            "1c",
            withheld=True,
        )
        with capture_logs() as logs:
            status = await originator.originate(order)
    assert (status.state.value, status.reason) == ("failed", "Permission denied")
    (sent,) = [a for a in pbx.actions_received if a.first("Action") == "Originate"]
    assert sent.first("Exten") == "89267001122"
    assert sent.first("CallerID") == '"Номер скрыт" <>'
    (line,) = [e for e in logs if e["event"] == "originate"]
    assert line["number"] == "withheld"
    assert "9267001122" not in repr(logs)


def test_a_call_back_seen_ending_by_a_restarted_daemon_still_links_the_call_it_returns() -> None:
    """The Originate's ``ChannelId`` names the call returned: a daemon that never sent it (the
    one started after a restart, its requests gone, the open conversation restored) still
    writes ``callback_of``; other conversations, and look-alike ids, are left alone."""
    from connector.assembly import Direction
    from pbxjournal.originate import callback_of_channel, channel_id_for
    from tests.calls import make_call

    settings = load_settings(None, environ={})
    restarted = Originator(settings, _never_sent, lambda: [])
    channel = channel_id_for("0123456789abcdef", 41)
    assert channel == "pbxjournal-0123456789abcdef-cb41"
    back = make_call(
        Direction.OUTGOING, "+79267001122", 1.8e9, answered=True, conversation_id=channel
    )
    assert restarted.tag(back).callback_of == 41
    # Merged into another conversation (a transfer): found among its linkedids.
    merged = dataclasses.replace(back, conversation_id="1764000000.7", linkedids=(channel,))
    assert restarted.tag(merged).callback_of == 41
    for other in (
        "1764000000.7",
        channel_id_for("0123456789abcdef", None),
        "pbxjournal-0123456789abcdef-cb0",
        "pbxjournal-0123456789abcdef-cb99999999999999999999",
        "pbxjournal-xyz-cb41",
        channel + "-x",
    ):
        call = dataclasses.replace(back, conversation_id=other, linkedids=())
        assert restarted.tag(call).callback_of is None, other
        assert callback_of_channel(other, ()) is None, other


async def _never_sent(_fields: object) -> list[Any]:
    raise AssertionError("nothing is sent")
