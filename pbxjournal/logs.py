"""Structured logs (structlog's production recipe): stdout only, JSON lines when stdout is not a
terminal (journald keeps them), a readable console format on a terminal, ISO UTC timestamps.

Phone numbers appear at info level in full or masked (``+7916***4567``) as ``log.numbers``
says; secrets never appear.

aiohttp logs through the standard library (``aiohttp.server`` and friends), and its exceptions
may quote the raw request (an ``Authorization`` header, a number in the URL). httpd answers
and logs those itself (:mod:`httpd.app`); as a second line of defence, records of aiohttp's
loggers lose their exception text and traceback here, whatever path logs them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog

__all__ = ["call_number_for_log", "configure_logging", "mask_number"]

#: What a log line shows instead of a number the caller withheld.
WITHHELD = "withheld"

#: aiohttp's loggers (aiohttp.log); a filter on a logger does not reach its children.
_AIOHTTP_LOGGERS = (
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
)

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def mask_number(number: str | None, mode: str = "masked") -> str | None:
    """``+79161234567`` → ``+7916***4567`` unless ``mode`` is ``full``."""
    if not number or mode == "full":
        return number
    if len(number) <= 6:
        return "*" * len(number)
    return f"{number[:-7]}***{number[-4:]}"


def call_number_for_log(call: Mapping[str, Any], mode: str = "masked") -> str | None:
    """The number of a call object as a log line may show it: never a withheld one (the
    journal keeps it for calling back; logs are read by people who must not see it), even
    with ``log.numbers = "full"``."""
    if call.get("number_withheld"):
        return WITHHELD
    number = call.get("number")
    return mask_number(number if isinstance(number, str) else None, mode)


class _NoExceptionText(logging.Filter):
    """Keep the record, drop what may quote a request: exception text, traceback, stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


_FILTER = _NoExceptionText()


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    for name in _AIOHTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    out = stream if stream is not None else sys.stdout
    renderer: structlog.typing.Processor
    if fmt == "json" or (fmt == "auto" and not out.isatty()):
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    else:
        renderer = structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        # Not cached: a SIGHUP that changes the level must reach loggers already in use
        # (and tests can still capture logs after a reconfiguration).
        cache_logger_on_first_use=False,
    )
