"""What a failed run tells the person at the terminal: its reason once, no stack trace.

Dagster's console logger prints every error event with its full stack trace (a failed
resource set-up prints it twice: once for the resource, once for the run). For
``make demo`` the reason is what matters; :func:`failure_reasons` reads it from the
run's events, and :data:`quiet_console_logger` prints the run log without the error
details. ``--traceback`` (or ``TG_DEBUG=true``) keeps Dagster's own console logger.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from dagster import (
    DagsterEvent,
    ExecuteInProcessResult,
    Field,
    InitLoggerContext,
    logger,
)

STACK_TRACE_MARKER = "Stack Trace:"
LOG_FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


def without_error_details(message: str) -> str:
    """``message`` up to the error Dagster appends to an event's log line (the part after
    the first blank line, when it carries a stack trace)."""
    head, separator, tail = message.partition("\n\n")
    return head if separator and STACK_TRACE_MARKER in tail else message


class _WithoutErrorDetails(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.msg, record.args = without_error_details(record.getMessage()), None
        return super().format(record)


@logger(
    {"log_level": Field(str, is_required=False, default_value="INFO")},
    description="Dagster's console log without stack traces (make demo; --traceback shows them).",
)
def quiet_console_logger(init_context: InitLoggerContext) -> logging.Logger:
    """A console logger that prints each event's line but not the error it carries."""
    quiet = logging.Logger("tensorguard", level=init_context.logger_config["log_level"])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_WithoutErrorDetails(LOG_FORMAT, DATE_FORMAT))
    quiet.addHandler(handler)
    return quiet


def _error_text(error: Any) -> str:
    """The innermost cause of a serialised error: its message, prefixed with the class
    name unless it is a :class:`dagster.Failure` (whose description is the reason)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = str(error.message).strip()
    prefix, separator, rest = message.partition(": ")
    if separator and prefix.rsplit(".", 1)[-1] == error.cls_name:
        message = rest
    return message if error.cls_name == "Failure" else f"{error.cls_name}: {message}"


def _event_reason(event: DagsterEvent) -> str | None:
    """``where: why`` for a failed step or a failed resource set-up, else None."""
    if event.is_step_failure:
        data = event.step_failure_data
        user = data.user_failure_data
        if user is not None and user.description:
            return f"step {event.step_key}: {user.description.strip()}"
        if data.error is not None:
            return f"step {event.step_key}: {_error_text(data.error)}"
        return None
    if event.is_resource_init_failure:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            where = f" for step {event.step_key}" if event.step_key else ""
            return f"resource set-up{where}: {_error_text(error)}"
    return None


def failure_reasons(result: ExecuteInProcessResult) -> list[str]:
    """Each distinct reason the run failed (a failed step or resource set-up), in order."""
    reasons: list[str] = []
    for event in result.all_events:
        reason = _event_reason(event)
        if reason is not None and reason not in reasons:
            reasons.append(reason)
    return reasons
