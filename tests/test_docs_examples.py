"""Every ``curl`` example of docs/api.md works as pasted, so the reference cannot rot.

Each command line of the page's ``sh`` blocks is run by bash with the page's own ``API`` and
``AUTH`` (``API`` pointed at a real server on a free port, over a fresh copy of the journal
seeded from the captures) and the real ``curl``. The answer must be a 2xx; when the example is
the only one of its block and the page shows its JSON answer, the answer has the fields shown.

The page's ids stand for rows of a real journal (call 42, recording 77, version 5512): the
test puts in the ids of the seeded journal's blind-transfer call, whose first part is long
enough for the page's byte range, and waits a fraction of a second where the page long-polls
for 25. The click-to-call examples run against an app whose 1C client has the ``originate``
scope and whose originator speaks AMI to the fake PBX (capture 18 answering ``Originate``);
the page's request id stands for one that app made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from httpd.keys import ORIGINATOR
from httpd.protocols import OriginateOrder
from tests.http_support import Api, Maker, originating_api

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "api.md"

# Replaces `curl` inside the example: the status goes to stderr after a marker, errors too.
_PRELUDE = """curl() { command curl -sS -w '%{stderr}\\nHTTP_STATUS=%{http_code}\\n' "$@"; }
"""


@dataclass(frozen=True)
class Example:
    line: int
    command: str
    #: The JSON answer shown right after the block, when the block holds only this command.
    answer: Any


def _blocks(text: str) -> list[tuple[int, str, str, str]]:
    """(line, language, body, the text up to the next block) of every fenced block."""
    matches = list(re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL))
    found = []
    for index, match in enumerate(matches):
        after = text[match.end() : matches[index + 1].start()] if index + 1 < len(matches) else ""
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, match.group(1), match.group(2), after))
    return found


def _variables(text: str) -> dict[str, str]:
    """``AUTH`` as the page sets it (the first ``sh`` block that sets it)."""
    for _line, language, body, _after in _blocks(text):
        if language == "sh" and "AUTH=" in body:
            (value,) = re.findall(r"^AUTH='([^']*)'", body, re.MULTILINE)
            return {"AUTH": value}
    raise AssertionError("docs/api.md sets no AUTH")


def _complete(command: str) -> bool:
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:  # a quote still open: the command goes on on the next line
        return False
    return True


def _commands(body: str, first_line: int) -> list[tuple[int, str]]:
    """The ``curl`` commands of a block, each with its line; one may span several lines."""
    found = []
    start, buffer = 0, ""
    for n, text in enumerate(body.splitlines()):
        if not buffer:
            if not text.startswith("curl "):
                continue
            start, buffer = first_line + n, text
        else:
            buffer += "\n" + text
        if _complete(buffer):
            found.append((start, buffer))
            buffer = ""
    assert not buffer, f"docs/api.md:{start}: a command never ends"
    return found


def examples(text: str) -> list[Example]:
    blocks = _blocks(text)
    found = []
    for index, (line, language, body, after) in enumerate(blocks):
        if language != "sh":
            continue
        commands = _commands(body, line + 1)
        answer = None
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        shown = following is not None and following[1] == "json" and not after.strip()
        if len(commands) == 1 and following is not None and shown:
            answer = json.loads(following[2])
        found.extend(Example(at, command, answer) for at, command in commands)
    return found


def test_the_page_has_examples_of_every_kind() -> None:
    found = examples(PAGE.read_text("utf-8"))
    assert len(found) >= 25
    # The search examples encode their values: raw Cyrillic in a URL is refused (400).
    assert not any(re.search(r"\?[^\"' ]*[^\x00-\x7f]", e.command) for e in found)
    assert any("--data-urlencode 'q=ромашка'" in e.command for e in found)


@dataclass
class Answer:
    status: int
    body: bytes


async def run(command: str, api: Api, cwd: Path, auth: str) -> Answer:
    environment = dict(os.environ, API=api.url("").rstrip("/"), AUTH=auth)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        _PRELUDE + command,
        cwd=cwd,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    statuses = re.findall(rb"HTTP_STATUS=(\d+)", stderr)
    assert process.returncode == 0 and statuses, (command, stderr.decode(errors="replace"))
    return Answer(int(statuses[-1]), stdout)


def _json_of(answer: Answer) -> Any:
    body = answer.body
    if body.startswith(b"HTTP/"):  # curl -i
        body = body.split(b"\r\n\r\n", 1)[1]
    return json.loads(body)


def _keys(value: Any) -> set[str]:
    return {k for k in value if k != "..."} if isinstance(value, dict) else set()


async def _real_ids(api: Api) -> dict[str, str]:
    (listed,) = await api.calls(q="79057778899")  # the blind transfer: two recorded parts
    call = await api.get(f"/api/v1/calls/{listed['id']}")
    first = call["timeline"]["recordings"][0]
    assert first["size"] > 80044, "the page's Range example needs a longer part"
    last = await api.journal.last_version()
    return {
        "/calls/42": f"/calls/{call['id']}",
        "/recordings/77": f"/recordings/{first['id']}",
        "since=5512&wait=25": f"since={last}&wait=0.2",
    }


@pytest.fixture(scope="module")
def curl() -> str:
    found = shutil.which("curl")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is needed to run the examples of docs/api.md")
        pytest.skip("no curl")
    return found


TEXT = PAGE.read_text("utf-8")


#: The page's click-to-call request id.
ORIGINATE_ID = "5f0c2b7d9e1a4c3b"


async def _originating_api(make_api: Maker, stack: contextlib.AsyncExitStack) -> tuple[Api, str]:
    """An app whose 1C client may originate, over a real AMI session to the fake PBX, and
    the id of a click-to-call it made."""
    api = await originating_api(make_api, stack)
    originator = api.app[ORIGINATOR]
    assert originator is not None
    order = OriginateOrder(
        "101", "101", "Ivanova Anna", "+79267001122", "89267001122", "", None, "t"
    )
    made = await originator.originate(order)
    return api, made.id


@pytest.mark.parametrize("example", examples(TEXT), ids=lambda e: f"api.md:{e.line}")
async def test_the_example_works_as_pasted(
    example: Example, make_api: Maker, tmp_path: Path, curl: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        await _run_example(example, make_api, tmp_path, stack)


async def _run_example(
    example: Example, make_api: Maker, tmp_path: Path, stack: contextlib.AsyncExitStack
) -> None:
    originating = "/api/v1/originate" in example.command
    made = ""
    if originating:
        api, made = await _originating_api(make_api, stack)
    else:
        api = await make_api()
    command = example.command
    replacements = await _real_ids(api)
    if originating:
        (listed,) = await api.calls(q="79057778899")
        replacements['"call_id": 42'] = f'"call_id": {listed["id"]}'
        replacements[ORIGINATE_ID] = made
    for placeholder, real in replacements.items():
        command = command.replace(placeholder, real)
    answer = await run(command, api, tmp_path, _variables(TEXT)["AUTH"])
    assert 200 <= answer.status < 300, (example.line, command, answer.body[:300])
    if example.answer is not None:
        shown = _keys(example.answer)
        got = _keys(_json_of(answer))
        if "..." in example.answer:
            assert shown <= got, (example.line, shown - got)
        else:
            assert shown == got, (example.line, shown ^ got)
