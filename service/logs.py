"""Structured JSON logs for Graft's own loggers (``graft.*``): one object per line on stderr."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from service.settings import Settings


def configure_logging(settings: Settings) -> None:
    logger = logging.getLogger("graft")
    if any(getattr(h, "_graft", False) for h in logger.handlers):
        logger.setLevel(settings.log_level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "process": "pid",
            },
        )
    )
    handler._graft = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(settings.log_level)
    logger.propagate = False
