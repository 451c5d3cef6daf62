"""Structured logs: one JSON object per line (``simclr serve --log-format json``)."""

from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...extra}``; exceptions go in ``"exc"``."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("method", "code", "seconds", "peer"):
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def use_json_logs() -> None:
    for handler in logging.getLogger().handlers or [logging.StreamHandler()]:
        handler.setFormatter(JsonFormatter())
        if handler not in logging.getLogger().handlers:
            logging.getLogger().addHandler(handler)
