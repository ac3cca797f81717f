"""Structured JSON logs on stderr. Log events carry ids, codes and timings, never patient data:
callers pass only whitelisted fields through `extra={"fields": {...}}`."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from utimesh.kit import tracing

_configured = False


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update(tracing.current_ids())  # empty unless inside a traced call
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            event.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # Type and location only: exception messages may quote request content.
            event["exc_type"] = record.exc_info[0].__name__
            tb = record.exc_info[2]
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                event["exc_at"] = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        return json.dumps(event, separators=(",", ":"))


def configure_logging(service: str, level: str = "INFO") -> None:
    """Install the JSON handler on the root logger once per process."""
    global _configured
    root = logging.getLogger()
    if _configured:
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # gRPC's core logs every call a client abandoned (deadline, cancel) at ERROR; under load that
    # floods the log with events that are the caller's business. The status still reaches it.
    logging.getLogger("grpc._cython.cygrpc").setLevel(logging.CRITICAL)
    _configured = True
