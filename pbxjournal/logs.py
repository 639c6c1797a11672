"""Structured logs (structlog's production recipe): stdout only, JSON lines when stdout is not a
terminal (journald keeps them), a readable console format on a terminal, ISO UTC timestamps.

Phone numbers appear at info level in full or masked (``+7916***4567``) as ``log.numbers``
says; secrets never appear.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging", "mask_number"]

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


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
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
