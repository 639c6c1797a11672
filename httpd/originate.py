"""``POST /api/v1/originate`` and ``GET /api/v1/originate/{id}``: click-to-call (issue 17).

The request names the employee whose phone rings first (their id or extension; a person
signed in to the web journal rings their own phone and may leave it out), the number in any
written form, and optionally the journal call being returned (``call_id``; without
``number``, that call's number is dialled). The number is read the way the journal reads
numbers (:func:`storage.numbers.normalize_number` in ``pbx.default_region``) and must be a
valid phone number that ``originate.allow`` permits (by default: of the PBX's own region and
not premium-rate), else 422. The daemon sends the AMI ``Originate``
(:mod:`pbxjournal.originate`) and the answer is ``202 Accepted`` with the request's status
and its URL; a PBX that cannot be asked (the AMI down, no daemon behind this server) is a
503.
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from aiohttp import web

from config import Settings
from httpd.errors import ApiError, json_response
from httpd.keys import CLIENT, JOURNAL, ORIGINATOR, SETTINGS
from httpd.params import Query, bad, expect_object, object_field, read_json
from httpd.protocols import OriginateOrder, OriginateStatus, OriginateUnavailable
from httpd.web.session import SESSION
from storage.journal import format_time
from storage.numbers import normalize_number, possible_number

__all__ = ["check_number", "dial_string", "render_status", "routes"]

routes = web.RouteTableDef()

_BODY_LIMIT = 4096
_ID_RE = re.compile(r"[0-9a-f]{16}")
#: Number types never called unless ``originate.allow`` says so.
_COSTLY = frozenset({phonenumbers.PhoneNumberType.PREMIUM_RATE})


def check_number(
    text: str, settings: Settings, *, shown: str | None = None
) -> tuple[str, phonenumbers.PhoneNumber]:
    """The E.164 form of ``text`` and its parse, or a 422 naming what is wrong. ``shown``
    replaces the number in the messages (a returned call's number may be withheld)."""
    region = settings.pbx.default_region
    parsed = possible_number(text, region)
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        what = shown or repr(text[:40])
        raise ApiError(422, "invalid_number", f"number: not a phone number: {what}")
    e164 = normalize_number(text, region)
    assert e164 is not None
    what = shown or e164
    allow = settings.originate.allow_re
    if allow is not None:
        if not allow.fullmatch(e164):
            raise ApiError(
                422, "number_not_allowed", f"number: {what} is not allowed by originate.allow"
            )
        return e164, parsed
    if phonenumbers.region_code_for_number(parsed) != region:
        raise ApiError(
            422,
            "number_not_allowed",
            f"number: {what} is outside {region}; international calls need originate.allow",
        )
    if phonenumbers.number_type(parsed) in _COSTLY:
        raise ApiError(
            422,
            "number_not_allowed",
            f"number: {what} is a premium-rate number; it needs originate.allow",
        )
    return e164, parsed


def dial_string(parsed: phonenumbers.PhoneNumber, template: str) -> str:
    """``originate.exten`` filled in: {national}, {e164}, {digits}."""
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return template.format(
        national="".join(ch for ch in national if ch.isdigit()),
        e164=e164,
        digits=e164.lstrip("+"),
    )


def render_status(status: OriginateStatus, settings: Settings) -> dict[str, Any]:
    tz = settings.pbx.tz
    order = status.order
    return {
        "id": status.id,
        "state": status.state.value,
        "state_label": status.state.label,
        "reason": status.reason,
        "reason_code": status.reason_code,
        "employee": {
            "id": order.employee_id,
            "extension": order.extension,
            "name": order.employee_name,
        },
        "number": order.number,
        "callback_of": order.callback_of,
        "linkedid": status.linkedid,
        "call_id": status.call_id,
        "created_at": format_time(status.created_at, tz),
        "updated_at": format_time(status.updated_at, tz),
        "url": f"/api/v1/originate/{status.id}",
    }


async def _employee(request: web.Request, wanted: str | None) -> tuple[str, str, str]:
    """(id, extension, name) of the employee to ring."""
    session = request.get(SESSION)
    if session is not None:
        own = session.account.employee
        if wanted is None:
            wanted = own
        elif wanted != own and not session.account.admin:
            raise ApiError(403, "forbidden", "a web journal user rings only their own phone")
    if wanted is None:
        raise bad("invalid_body", "body.employee: is required (an employee's id or extension)")
    records = await request.app[JOURNAL].employees()
    found = next((r for r in records if r.id == wanted), None)
    extension = wanted
    if found is None:
        found = next((r for r in records if wanted in r.extensions), None)
    elif found.extensions:
        extension = found.extensions[0]
    if found is None:
        raise ApiError(404, "employee_not_found", f"no employee with id or extension {wanted!r}")
    if extension not in found.extensions:
        raise ApiError(422, "employee_has_no_phone", f"employee {found.id!r} has no extension")
    return found.id, extension, found.name


@routes.post("/api/v1/originate")
async def post_originate(request: web.Request) -> web.Response:
    Query(request).done()
    settings = request.app[SETTINGS]
    body = expect_object(
        await read_json(request, limit=_BODY_LIMIT), "body", ("employee", "number", "call_id")
    )
    wanted = object_field(body, "employee", "body", required=False, max_length=64)
    number_text = object_field(body, "number", "body", required=False, max_length=64)
    call_id = body.get("call_id")
    if call_id is not None and (
        isinstance(call_id, bool) or not isinstance(call_id, int) or not 0 < call_id < 2**63
    ):
        raise bad("invalid_body", "body.call_id: expected a call's id (a positive integer)")
    originator = request.app[ORIGINATOR]
    employee_id, extension, name = await _employee(request, wanted)
    journal = request.app[JOURNAL]
    shown = None
    withheld = False
    if call_id is not None:
        entry = await journal.get(call_id)
        if entry is None:
            raise ApiError(404, "call_not_found", f"no call {call_id}")
        if number_text is None:
            number_text = entry.number or entry.number_raw
            if not number_text:
                raise ApiError(422, "invalid_number", f"call {call_id} has no number to call")
            # Never quoted back: a withheld number is kept for calling back, not shown.
            shown = f"the number of call {call_id}"
            withheld = entry.call.number_withheld
    if number_text is None:
        raise bad("invalid_body", "body.number: is required (or call_id of a call to return)")
    e164, parsed = check_number(number_text, settings, shown=shown)
    if originator is None:
        raise ApiError(
            503,
            "originate_unavailable",
            "this server has no PBX connection (a front end without the daemon)",
        )
    owner = await journal.lookup_number(e164)
    display = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    if withheld:
        display = "Номер скрыт"
    if owner is not None:
        display = owner.contact_name or owner.customer_name or display
    order = OriginateOrder(
        employee_id=employee_id,
        extension=extension,
        employee_name=name,
        number=e164,
        exten=dial_string(parsed, settings.originate.exten),
        display=display,
        callback_of=call_id,
        client=request.get(CLIENT, "?"),
        withheld=withheld,
    )
    try:
        status = await originator.originate(order)
    except OriginateUnavailable as exc:
        raise ApiError(
            503,
            "ami_unavailable",
            f"the PBX cannot be asked now: {exc}",
            headers={"Retry-After": "5"},
        ) from None
    url = f"/api/v1/originate/{status.id}"
    return json_response(render_status(status, settings), status=202, headers={"Location": url})


@routes.get("/api/v1/originate/{originate_id}")
async def get_originate(request: web.Request) -> web.Response:
    Query(request).done()
    originate_id = request.match_info["originate_id"]
    originator = request.app[ORIGINATOR]
    status = None
    if originator is not None and _ID_RE.fullmatch(originate_id):
        status = originator.status(originate_id)
    if status is None:
        raise ApiError(
            404,
            "originate_not_found",
            "no such click-to-call here (they are kept for an hour after they end)",
        )
    return json_response(render_status(status, request.app[SETTINGS]))
