"""The OpenAPI 3.1 document of the API, written once, here; served at ``/openapi.json``.

A test compares it with the running application's routes (every route documented, nothing
documented that is not routed), and schemathesis generates requests from it and validates
every response against it. Keep the schemas as strict as the code: ``required`` lists what
the handlers always send, types say when ``null`` is possible.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

__all__ = ["document"]

INT64_MAX = 2**63 - 1
_NULLABLE_STRING = {"type": ["string", "null"]}
_TIME = {"type": "string", "description": "ISO 8601 with the PBX's UTC offset"}
_NULLABLE_TIME = {"type": ["string", "null"], "description": "ISO 8601, or null"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(
    properties: dict[str, Any], *, required: list[str] | None = None, closed: bool = False
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_ERRORS = {
    "400": _error("Invalid parameter or body: the message names it"),
    "401": _error("No or wrong credentials"),
    "403": _error(
        "missing_scope: the client's [[http.clients]] scopes lack the one this endpoint needs "
        "(read, write, originate, metrics); csrf_failed: a web session's write without its "
        "X-CSRF-Token"
    ),
    "503": _error("database_unavailable: the journal database cannot be reached; retry"),
}
_NOT_FOUND = {"404": _error("Not found (the code says what)")}
_BODY_ERRORS = {
    "413": _error("Body too large"),
    "422": _error("A value that cannot be applied (invalid_number)"),
}


def _param(
    name: str, where: str, schema: dict[str, Any], description: str, **extra: Any
) -> dict[str, Any]:
    return {"name": name, "in": where, "schema": schema, "description": description, **extra}


def _path_id(name: str, what: str) -> dict[str, Any]:
    return _param(
        name,
        "path",
        {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
        f"{what} id",
        required=True,
    )


def _path_text(name: str, description: str) -> dict[str, Any]:
    return _param(
        name,
        "path",
        {"type": "string", "minLength": 1, "maxLength": 64},
        description,
        required=True,
    )


_AUDIO = {"schema": {"type": "string", "format": "binary"}}
_AUDIO_TYPES = {
    t: _AUDIO
    for t in (
        "audio/wav",
        "audio/mpeg",
        "audio/ogg",
        "audio/gsm",
        "audio/L16",
        "application/octet-stream",
    )
}

_SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {
            "error": _object(
                {
                    "code": {"type": "string", "description": "stable, machine-readable"},
                    "message": {"type": "string", "description": "for people; names the problem"},
                }
            )
        }
    ),
    "Customer": {
        "type": ["object", "null"],
        "description": "null when the number is not registered",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "contact": {
                "type": ["object", "null"],
                "properties": {"id": {"type": "string"}, "name": _NULLABLE_STRING},
                "required": ["id", "name"],
            },
        },
        "required": ["id", "name", "contact"],
    },
    "Call": _object(
        {
            "id": {"type": "integer"},
            "pbx": {"type": "string"},
            "linkedid": {"type": "string"},
            "started_at": _TIME,
            "answered_at": _NULLABLE_TIME,
            "ended_at": _TIME,
            "approximate_end": {"type": "boolean"},
            "direction": {"enum": ["incoming", "outgoing", "internal"]},
            "status": {"enum": ["answered", "reached", "no_answer", "lost", "cancelled"]},
            "status_label": {"type": "string"},
            "number": {"type": ["string", "null"], "description": "normalised (E.164)"},
            "number_raw": _NULLABLE_STRING,
            "number_withheld": {
                "type": "boolean",
                "description": "the caller withheld the number: kept for calling back, "
                "not to be shown (1C shows 'Номер скрыт')",
            },
            "did": _NULLABLE_STRING,
            "callback_of": {
                "type": ["integer", "null"],
                "description": "the id of the call this one returns: set on the call a "
                "click-to-call (POST /api/v1/originate with call_id) became",
            },
            "customer": _ref("Customer"),
            "unregistered": {"type": "boolean"},
            "employees": {
                "type": "array",
                "items": _object(
                    {
                        "id": {"type": "string"},
                        "extension": {"type": "string"},
                        "name": {"type": "string"},
                        "role": {"enum": ["placed", "answered", "rang"]},
                        "on_mobile": {
                            "type": "boolean",
                            "description": "reached on their mobile, not a desk phone",
                        },
                    }
                ),
            },
            "ring_seconds": {"type": "number"},
            "talk_seconds": {"type": "number"},
            "first_contact": {"type": "boolean"},
            "attention": {"type": "boolean"},
            "comment": _NULLABLE_STRING,
            "recordings": {"type": "array", "items": _ref("RecordingPart")},
            "version": {"type": "integer"},
        }
    ),
    "RecordingPart": _object(
        {
            "id": {"type": "integer"},
            "part": {"type": "integer"},
            "offset_seconds": {"type": "number", "description": "from the call's start"},
            "duration_seconds": {"type": ["number", "null"]},
            "url": {"type": "string"},
        }
    ),
    "CallDetail": {
        "allOf": [
            _ref("Call"),
            _object(
                {
                    "recording_url": {
                        "type": ["string", "null"],
                        "description": "the merged download, when there is a recording",
                    },
                    "timeline": _object(
                        {
                            "participants": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "extension": {"type": "string"},
                                        "name": {"type": "string"},
                                        "role": {"enum": ["placed", "answered", "rang"]},
                                        "rang_at": _NULLABLE_TIME,
                                        "answered_at": _NULLABLE_TIME,
                                        "talk_seconds": {"type": "number"},
                                        "on_mobile": {"type": "boolean"},
                                    }
                                ),
                            },
                            "legs": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "extension": {"type": "string"},
                                        "name": {"type": "string"},
                                        "connected_at": _TIME,
                                        "disconnected_at": _TIME,
                                        "seconds": {"type": "number"},
                                        "on_mobile": {"type": "boolean"},
                                    }
                                ),
                            },
                            "transfers": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "kind": {"enum": ["blind", "attended", "blonde", "pickup"]},
                                        "at": _TIME,
                                        "by": _NULLABLE_STRING,
                                        "target": _NULLABLE_STRING,
                                    }
                                ),
                            },
                            "recordings": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "id": {"type": "integer"},
                                        "part": {"type": "integer"},
                                        "started_at": _TIME,
                                        "offset_seconds": {"type": "number"},
                                        "duration_seconds": {"type": ["number", "null"]},
                                        "size": {"type": "integer"},
                                        "available": {
                                            "type": "boolean",
                                            "description": "the file is on the server now",
                                        },
                                        "url": {"type": "string"},
                                    }
                                ),
                            },
                        }
                    ),
                }
            ),
        ]
    },
    "CallPage": _object(
        {
            "items": {"type": "array", "items": _ref("Call")},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as cursor for the next page; null on the last page",
            },
        }
    ),
    "Changes": _object(
        {
            "items": {"type": "array", "items": _ref("Call")},
            "last_version": {
                "type": "integer",
                "description": "poll again with since=last_version",
            },
            "journal_id": {
                "type": "string",
                "format": "uuid",
                "description": "the journal's identity; keep it with last_version",
            },
        }
    ),
    "JournalChanged": {
        "allOf": [
            _ref("Error"),
            _object(
                {
                    "journal_id": {"type": "string", "format": "uuid"},
                    "last_version": {"type": "integer", "minimum": 0},
                }
            ),
        ],
        "description": (
            "journal_changed: since is ahead of this journal, or journal_id is another "
            "journal's; read again from since=0 and keep this journal_id"
        ),
    },
    "CommentInput": _object({"text": {"type": ["string", "null"], "maxLength": 4000}}, closed=True),
    "CommentResult": _object(
        {
            "id": {"type": "integer"},
            "comment": _NULLABLE_STRING,
            "version": {"type": "integer"},
        }
    ),
    "ContactInput": _object(
        {
            "id": {"type": "string", "minLength": 1, "maxLength": 64},
            "name": {"type": "string", "minLength": 1, "maxLength": 500},
            "numbers": {
                "type": "array",
                "maxItems": 100,
                "items": {"type": "string", "maxLength": 64},
            },
        },
        required=["id", "name"],
        closed=True,
    ),
    "CustomerRecord": _object(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "numbers": {"type": "array", "items": {"type": "string"}},
            "contacts": {
                "type": "array",
                "items": _object(
                    {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "numbers": {"type": "array", "items": {"type": "string"}},
                    }
                ),
            },
        }
    ),
    "CustomerInput": _object(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 500},
            "numbers": {
                "type": "array",
                "maxItems": 100,
                "items": {"type": "string", "maxLength": 64},
            },
            "contacts": {"type": "array", "maxItems": 500, "items": _ref("ContactInput")},
        },
        required=["name"],
        closed=True,
    ),
    "CustomerImportItem": {
        "allOf": [
            _ref("CustomerInput"),
            {
                "type": "object",
                "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 64}},
                "required": ["id"],
            },
        ]
    },
    "DirectoryChange": _object(
        {
            "changed_calls": {
                "type": "integer",
                "description": "journal rows whose customer (or search text) changed",
            },
            "last_version": {
                "type": "integer",
                "description": (
                    "the version of the last row changed or, when none changed, the "
                    "journal's current version"
                ),
            },
        }
    ),
    "NumberOwner": _object(
        {
            "number": {"type": "string", "description": "normalised"},
            "registered": {"type": "boolean"},
            "customer": _ref("Customer"),
        }
    ),
    "NumberInput": _object(
        {
            "customer_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "contact_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 64},
        },
        required=["customer_id"],
        closed=True,
    ),
    "Employee": _object(
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
            "mobile": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the employee's external numbers (mobiles), normalised (E.164)",
            },
        }
    ),
    "EmployeeSaved": {
        "allOf": [
            _ref("Employee"),
            _object(
                {
                    "moved_from": {
                        "type": "array",
                        "description": (
                            "employees an extension was taken from; they are kept, even "
                            "with no extension left (DELETE them if they are gone)"
                        ),
                        "items": _object(
                            {
                                "id": {"type": "string"},
                                "extensions": {"type": "array", "items": {"type": "string"}},
                                "extensions_left": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                },
                            }
                        ),
                    }
                }
            ),
        ]
    },
    "NumberBound": {
        "allOf": [
            _ref("NumberOwner"),
            _ref("DirectoryChange"),
            _object(
                {
                    "moved_from": {
                        "type": ["object", "null"],
                        "description": (
                            "the owner the number was taken from; null when it was unbound "
                            "or already bound so"
                        ),
                        "properties": {
                            "customer_id": {"type": "string"},
                            "contact_id": _NULLABLE_STRING,
                        },
                        "required": ["customer_id", "contact_id"],
                    }
                }
            ),
        ]
    },
    "ApiIndex": _object(
        {
            "name": {"const": "pbxjournal"},
            "version": {"type": "string", "description": "pbxjournal's version"},
            "openapi": {"type": "string", "description": "where this document is"},
            "docs": {"type": "object", "additionalProperties": {"type": "string"}},
            "endpoints": {
                "type": "array",
                "items": {"type": "string"},
                "description": "METHOD /path of every endpoint",
            },
        }
    ),
    "EmployeeInput": _object(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 500},
            "extensions": {
                "type": "array",
                "maxItems": 50,
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
            },
            "mobile": {
                "type": "array",
                "maxItems": 10,
                "description": (
                    "external numbers (mobiles) in any written form; absent: the stored ones "
                    "stay, []: none"
                ),
                "items": {"type": "string", "minLength": 1, "maxLength": 64},
            },
        },
        required=["name"],
        closed=True,
    ),
    "LiveCall": _object(
        {
            "linkedid": {"type": "string"},
            "started_at": _TIME,
            "answered_at": _NULLABLE_TIME,
            "direction": {"enum": ["incoming", "outgoing", "internal"]},
            "state": {"enum": ["ringing", "talking", "waiting"]},
            "number": _NULLABLE_STRING,
            "number_raw": _NULLABLE_STRING,
            "customer": _ref("Customer"),
            "originate": {
                "type": ["object", "null"],
                "description": "the click-to-call that placed this conversation, or null",
                "properties": {
                    "id": {"type": "string"},
                    "state": _ref("OriginateStateName"),
                    "state_label": {"type": "string"},
                    "callback_of": {"type": ["integer", "null"]},
                },
                "required": ["id", "state", "state_label", "callback_of"],
            },
            "employees": {
                "type": "array",
                "items": _object(
                    {
                        "id": {"type": "string"},
                        "extension": {"type": "string"},
                        "name": {"type": "string"},
                        "state": {"enum": ["placed", "talking", "ringing", "talked", "rang"]},
                        "since": _NULLABLE_TIME,
                    }
                ),
            },
        }
    ),
    "OriginateStateName": {
        "enum": ["ringing_employee", "dialling_customer", "talking", "finished", "failed"]
    },
    "OriginateInput": _object(
        {
            "employee": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "id or extension of the employee whose phone rings first "
                "(a web journal session: its own, by default)",
            },
            "number": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "the customer's number in any written form (default: the "
                "number of call_id)",
            },
            "call_id": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": INT64_MAX,
                "description": "the journal call being returned (callback_of of the new call)",
            },
        },
        required=[],
        closed=True,
    ),
    "Originate": _object(
        {
            "id": {"type": "string"},
            "state": _ref("OriginateStateName"),
            "state_label": {"type": "string", "description": "for people, in Russian"},
            "reason": {
                "type": ["string", "null"],
                "description": "why it failed, in the PBX's words (Permission denied, no "
                "answer, busy, ...)",
            },
            "reason_code": {
                "type": ["integer", "null"],
                "description": "OriginateResponse's Reason: 4 answered, 3 no answer, 5 busy, "
                "8 congestion, 1 hung up, 0 the channel could not be rung",
            },
            "employee": _object(
                {
                    "id": {"type": "string"},
                    "extension": {"type": "string"},
                    "name": {"type": "string"},
                }
            ),
            "number": {"type": "string", "description": "E.164"},
            "callback_of": {"type": ["integer", "null"]},
            "linkedid": _NULLABLE_STRING,
            "call_id": {
                "type": ["integer", "null"],
                "description": "the journal row of the conversation, once written",
            },
            "created_at": _TIME,
            "updated_at": _TIME,
            "url": {"type": "string"},
        }
    ),
    "Health": _object(
        {
            "status": {"enum": ["ok", "unavailable"]},
            "database": _object({"writable": {"type": "boolean"}, "error": _NULLABLE_STRING}),
            "ami": {
                "type": ["object", "null"],
                "properties": {"connected": {"type": "boolean"}},
                "required": ["connected"],
                "description": "null on a front end without an AMI connection",
            },
        }
    ),
}

_KINDS = ["incoming", "outgoing", "missed", "lost"]
#: 2026-11-28, 2026-11-28T09:00, 2026-11-28T09:00:00+03:00, 2026-11-28T06:00:00Z
_WHEN = {
    "type": "string",
    "maxLength": 40,
    "pattern": r"^\d{4}-\d{2}-\d{2}([T ][0-9:.]+(Z|[+-][0-9:]+)?)?$",
}


def _calls_parameters() -> list[dict[str, Any]]:
    boolean = {"type": "boolean"}
    return [
        _param(
            "from",
            "query",
            _WHEN,
            "Calls started at or after: ISO date or datetime (PBX local time unless offset)",
        ),
        _param(
            "to",
            "query",
            _WHEN,
            "Calls started before; a date includes that whole day",
        ),
        _param(
            "kind",
            "query",
            {"type": "array", "items": {"enum": _KINDS}},
            "Any of (repeatable, or a comma list); missed = no_answer + lost",
            style="form",
            explode=True,
        ),
        _param("first_contact", "query", boolean, "Only first contacts (true) or the others"),
        _param("unregistered", "query", boolean, "Only calls from unregistered numbers"),
        _param("attention", "query", boolean, "Only calls that need attention"),
        _param(
            "internal",
            "query",
            {"enum": ["hide", "show", "only"], "default": "hide"},
            "Internal calls",
        ),
        _param(
            "employee",
            "query",
            {"type": "string", "minLength": 1, "maxLength": 64},
            "My calls: employee id or extension (placed, answered or was rung)",
        ),
        _param(
            "q",
            "query",
            {"type": "string", "maxLength": 200},
            "Search: customer, contact or employee name, extension, number in any form",
        ),
        _param(
            "limit",
            "query",
            {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
            "Page size",
        ),
        _param(
            "cursor",
            "query",
            {"type": "string", "maxLength": 200},
            "next_cursor of the previous page, as it came (anything else: 400 invalid_cursor)",
        ),
    ]


def _index_path() -> dict[str, Any]:
    return {
        "get": {
            "summary": "What this API is: name, version, where its description is, endpoints",
            "responses": {"200": _json(_ref("ApiIndex"), "The index"), **_ERRORS},
        }
    }


def _build() -> dict[str, Any]:
    recording_responses = {
        "200": {"description": "The part", "content": _AUDIO_TYPES},
        "206": {"description": "The requested byte range", "content": _AUDIO_TYPES},
        **_ERRORS,
        "404": _error("recording_not_found, or recording_missing: the file is not there"),
        "416": {"description": "Range not satisfiable"},
    }
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness and readiness: database writable, AMI connected",
                "security": [],
                "responses": {
                    "200": _json(_ref("Health"), "Healthy"),
                    "503": _json(_ref("Health"), "Not ready (the body says what)"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_ERRORS},
            }
        },
        "/api/v1": _index_path(),
        "/api/v1/": _index_path(),
        "/api/v1/calls": {
            "get": {
                "summary": "A journal page, newest first",
                "parameters": _calls_parameters(),
                "responses": {"200": _json(_ref("CallPage"), "A page"), **_ERRORS},
            }
        },
        "/api/v1/calls/{call_id}": {
            "get": {
                "summary": "One call with its timeline",
                "parameters": [_path_id("call_id", "Call")],
                "responses": {
                    "200": _json(_ref("CallDetail"), "The call"),
                    **_ERRORS,
                    **_NOT_FOUND,
                },
            }
        },
        "/api/v1/calls/{call_id}/comment": {
            "put": {
                "summary": (
                    "Set a call's comment (empty text removes it); the same text again, or "
                    "removing no comment, changes nothing and keeps the version"
                ),
                "parameters": [_path_id("call_id", "Call")],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CommentInput")}},
                },
                "responses": {
                    "200": _json(_ref("CommentResult"), "Saved; the call has a new version"),
                    **_ERRORS,
                    **_NOT_FOUND,
                    "413": _BODY_ERRORS["413"],
                },
            },
            "delete": {
                "summary": (
                    "Remove a call's comment; removing no comment changes nothing and keeps "
                    "the version"
                ),
                "parameters": [_path_id("call_id", "Call")],
                "responses": {
                    "200": _json(_ref("CommentResult"), "Removed (comment: null)"),
                    **_ERRORS,
                    **_NOT_FOUND,
                },
            },
        },
        "/api/v1/calls/{call_id}/recording": {
            "get": {
                "summary": "The whole conversation, parts merged, as a download",
                "parameters": [
                    _path_id("call_id", "Call"),
                    _param("format", "query", {"enum": ["mp3", "wav"], "default": "mp3"}, "Format"),
                ],
                "responses": {
                    "200": {
                        "description": "The merged recording (Content-Disposition: attachment)",
                        "content": {"audio/mpeg": _AUDIO, "audio/wav": _AUDIO},
                    },
                    "206": {
                        "description": "A byte range of it",
                        "content": {"audio/mpeg": _AUDIO, "audio/wav": _AUDIO},
                    },
                    **_ERRORS,
                    "404": _error("call_not_found, no_recording or recording_missing"),
                    "416": {"description": "Range not satisfiable"},
                    "422": _error("recording_unreadable: a part cannot be decoded"),
                    "429": _error("busy: too many merges at once; retry"),
                },
            }
        },
        "/api/v1/recordings/{recording_id}": {
            "get": {
                "summary": "One recording part, with HTTP Range support",
                "parameters": [_path_id("recording_id", "Recording")],
                "responses": recording_responses,
            }
        },
        "/api/v1/changes": {
            "get": {
                "summary": "Calls changed since a version, ascending; long-poll with wait",
                "parameters": [
                    _param(
                        "since",
                        "query",
                        {"type": "integer", "minimum": 0, "maximum": INT64_MAX, "default": 0},
                        "last_version of the previous answer",
                    ),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 500},
                        "Most items per answer",
                    ),
                    _param(
                        "wait",
                        "query",
                        {"type": "number", "minimum": 0, "maximum": 60, "default": 0},
                        "Seconds to wait for a change when there is none yet",
                    ),
                    _param(
                        "journal_id",
                        "query",
                        {"type": "string", "format": "uuid"},
                        "journal_id of the previous answer: a 409 if this is another journal",
                    ),
                ],
                "responses": {
                    "200": _json(_ref("Changes"), "Changes"),
                    **_ERRORS,
                    "409": _json(
                        _ref("JournalChanged"),
                        "journal_changed: read the journal again from since=0",
                    ),
                },
            }
        },
        "/api/v1/customers": {
            "get": {
                "summary": "Type-ahead: customers whose name, id or a contact's name contains q",
                "parameters": [
                    _param(
                        "q",
                        "query",
                        {"type": "string", "maxLength": 200},
                        "Text to find, case- and ё-insensitive; empty finds nothing",
                    ),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                        "At most this many, by name",
                    ),
                ],
                "responses": {
                    "200": _json(
                        _object(
                            {
                                "items": {
                                    "type": "array",
                                    "items": _object(
                                        {"id": {"type": "string"}, "name": {"type": "string"}}
                                    ),
                                }
                            }
                        ),
                        "The customers found",
                    ),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/customers/{customer_id}": {
            "get": {
                "summary": "One customer with its numbers and contact persons",
                "parameters": [_path_text("customer_id", "1C's customer id")],
                "responses": {
                    "200": _json(_ref("CustomerRecord"), "The customer"),
                    **_ERRORS,
                    "404": _error("customer_not_found"),
                },
            },
            "put": {
                "summary": "Create or replace a customer with its numbers and contact persons",
                "parameters": [_path_text("customer_id", "1C's customer id")],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CustomerInput")}},
                },
                "responses": {
                    "200": _json(
                        {"allOf": [_ref("DirectoryChange"), _object({"id": {"type": "string"}})]},
                        "Saved",
                    ),
                    **_ERRORS,
                    **_BODY_ERRORS,
                },
            },
            "delete": {
                "summary": "Remove a customer and unbind its numbers",
                "parameters": [_path_text("customer_id", "1C's customer id")],
                "responses": {
                    "200": _json(
                        {
                            "allOf": [
                                _ref("DirectoryChange"),
                                _object({"id": {"type": "string"}, "deleted": {"type": "boolean"}}),
                            ]
                        },
                        "Done (deleted: false when there was no such customer)",
                    ),
                    **_ERRORS,
                },
            },
        },
        "/api/v1/customers:import": {
            "post": {
                "summary": "Bulk upsert of customers (idempotent, one transaction)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "maxItems": 20000,
                                "items": _ref("CustomerImportItem"),
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "allOf": [
                                _ref("DirectoryChange"),
                                _object({"imported": {"type": "integer"}}),
                            ]
                        },
                        "Imported",
                    ),
                    **_ERRORS,
                    **_BODY_ERRORS,
                },
            }
        },
        "/api/v1/numbers/{number}": {
            "get": {
                "summary": "Who a number belongs to",
                "parameters": [_path_text("number", "A phone number in any written form")],
                "responses": {
                    "200": _json(_ref("NumberOwner"), "The owner, or registered: false"),
                    **_ERRORS,
                    "422": _BODY_ERRORS["422"],
                },
            },
            "put": {
                "summary": "Bind a number to a customer or one of its contact persons",
                "parameters": [_path_text("number", "A phone number in any written form")],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NumberInput")}},
                },
                "responses": {
                    "200": _json(_ref("NumberBound"), "Bound"),
                    **_ERRORS,
                    "404": _error("customer_not_found or contact_not_found"),
                    **_BODY_ERRORS,
                },
            },
            "delete": {
                "summary": "Unbind a number",
                "parameters": [_path_text("number", "A phone number in any written form")],
                "responses": {
                    "200": _json(
                        {
                            "allOf": [
                                _ref("DirectoryChange"),
                                _object(
                                    {"number": {"type": "string"}, "unbound": {"type": "boolean"}}
                                ),
                            ]
                        },
                        "Done (unbound: false when it was not bound)",
                    ),
                    **_ERRORS,
                    "422": _BODY_ERRORS["422"],
                },
            },
        },
        "/api/v1/employees": {
            "get": {
                "summary": "The employee directory",
                "responses": {
                    "200": _json(
                        _object({"items": {"type": "array", "items": _ref("Employee")}}),
                        "Employees",
                    ),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/employees/{employee_id}": {
            "put": {
                "summary": "Create or replace an employee (name, extensions, mobiles)",
                "parameters": [_path_text("employee_id", "Employee id")],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("EmployeeInput")}},
                },
                "responses": {
                    "200": _json(_ref("EmployeeSaved"), "Saved"),
                    **_ERRORS,
                    "409": _error(
                        "mobile_taken: a mobile is another employee's mobile or a customer's "
                        "number (nothing saved)"
                    ),
                    "413": _BODY_ERRORS["413"],
                    "422": _error("invalid_number: a mobile is not a phone number"),
                },
            },
            "delete": {
                "summary": "Remove an employee and free their extensions",
                "parameters": [_path_text("employee_id", "Employee id")],
                "responses": {
                    "200": _json(
                        _object({"id": {"type": "string"}, "deleted": {"type": "boolean"}}),
                        "Done (deleted: false when there was no such employee)",
                    ),
                    **_ERRORS,
                },
            },
        },
        "/api/v1/originate": {
            "post": {
                "summary": "Click-to-call: ring the employee's phone, then dial the customer",
                "description": "Needs the originate scope. The AMI Originate is sent at once; "
                "follow it at the returned url.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("OriginateInput")}},
                },
                "responses": {
                    "202": _json(_ref("Originate"), "Sent to the PBX (or refused by it: failed)"),
                    **_ERRORS,
                    "404": _error("employee_not_found, call_not_found"),
                    "413": _BODY_ERRORS["413"],
                    "422": _error(
                        "invalid_number (not a phone number), number_not_allowed (outside "
                        "originate.allow: international, premium-rate), employee_has_no_phone"
                    ),
                    "503": _error(
                        "ami_unavailable: the AMI session is down, nothing was sent (retry); "
                        "originate_unavailable: no daemon behind this server; "
                        "database_unavailable"
                    ),
                },
            }
        },
        "/api/v1/originate/{originate_id}": {
            "get": {
                "summary": "Where a click-to-call is",
                "parameters": [_path_text("originate_id", "The id POST /api/v1/originate gave")],
                "responses": {
                    "200": _json(_ref("Originate"), "Its state"),
                    **_ERRORS,
                    "404": _error("originate_not_found (unknown, or ended over an hour ago)"),
                },
            }
        },
        "/api/v1/live": {
            "get": {
                "summary": "Calls in progress now",
                "responses": {
                    "200": _json(
                        _object(
                            {
                                "available": {
                                    "type": "boolean",
                                    "description": "false on a front end without a PBX",
                                },
                                "items": {"type": "array", "items": _ref("LiveCall")},
                            }
                        ),
                        "Calls in progress",
                    ),
                    **_ERRORS,
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pbxjournal",
            "version": "1",
            "description": (
                "The company call journal of an Asterisk PBX, for 1C:Enterprise. "
                'Errors are {"error": {"code", "message"}}.'
            ),
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


@cache
def _document() -> dict[str, Any]:
    return _build()


def document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change it)."""
    return copy.deepcopy(_document())
