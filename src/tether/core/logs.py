"""What a worker logs: one line per run start, finish and failure, one per failed step attempt.

Through the standard :mod:`logging` module, loggers ``tether.run`` and ``tether.step``; each
record carries its fields (``run_id``, ``agent``, ``step``, ...) in ``record.tether`` and, for
plain text handlers, as ``key=value`` pairs in its message. Lines of a run come from the
worker that executes it, never again when a worker replays the run's history.

Temporal's own logs (Python loggers ``temporalio.*`` and its Rust core, forwarded here to the
logger ``temporalio.core``) never reach standard output: :func:`configure` (what the CLI's
``--log-level`` calls) shows them on standard error from WARNING only at ``debug``, else only
their errors.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

import temporalio.runtime
from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError, is_cancelled_exception
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

RUN_LOG = logging.getLogger("tether.run")
STEP_LOG = logging.getLogger("tether.step")
CORE_LOG = logging.getLogger("temporalio.core")
"""Where the Temporal core's own log lines go (its console output is switched off)."""

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c in text for c in ' ="\n'):
        return json.dumps(text)
    return text


def log(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """One structured line: ``event key=value ...`` (the fields also in ``record.tether``)."""
    if not logger.isEnabledFor(level):
        return
    shown = " ".join(f"{k}={_value(v)}" for k, v in fields.items() if v is not None)
    logger.log(level, "%s %s", event, shown, extra={"tether": {"event": event, **fields}})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "tether", None)
        if isinstance(fields, Mapping):
            data.update(fields)
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Log to ``stream`` (standard error): Tether's lines from ``level`` on, other libraries'
    warnings, Temporal's own warnings only at ``debug`` (else its errors only)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("tether").setLevel(level.upper())
    logging.getLogger("temporalio").setLevel(logging.WARNING if level == "debug" else logging.ERROR)
    use_temporal_runtime()


_forwarding: temporalio.runtime.Runtime | None = None


def use_temporal_runtime() -> temporalio.runtime.Runtime:
    """The Temporal runtime of Tether's clients and workers, its core's log lines sent to
    the Python logger ``temporalio.core`` instead of the console. Also made the process's
    default, unless it already has one (a runtime the application configured is kept)."""
    global _forwarding
    if _forwarding is not None:
        return _forwarding
    telemetry = temporalio.runtime.TelemetryConfig(
        logging=temporalio.runtime.LoggingConfig(
            filter=temporalio.runtime.TelemetryFilter(core_level="WARN", other_level="ERROR"),
            forwarding=temporalio.runtime.LogForwardingConfig(logger=CORE_LOG),
        )
    )
    _forwarding = temporalio.runtime.Runtime(telemetry=telemetry)
    ref = getattr(temporalio.runtime, "_runtime_ref", None)
    if ref is None or getattr(ref, "_default_runtime", None) is None:
        temporalio.runtime.Runtime.set_default(_forwarding, error_if_already_set=False)
    return _forwarding


class RunLogInterceptor(Interceptor):
    """Logs each Tether run's start, finish and failure on the worker that executes it."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _RunInbound


class _RunInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        from tether.core.run import WORKFLOW_NAME

        info = workflow.info()
        if info.workflow_type != WORKFLOW_NAME or not RUN_LOG.isEnabledFor(logging.WARNING):
            return await super().execute_workflow(input)
        request = input.args[0] if input.args else None
        base = {"run_id": info.workflow_id, "agent": getattr(request, "agent", None)}
        if not workflow.unsafe.is_replaying():
            log(
                RUN_LOG,
                logging.INFO,
                "run started",
                **base,
                adapter=getattr(request, "adapter", None),
                task_queue=info.task_queue,
            )
        try:
            result = await super().execute_workflow(input)
        except BaseException as exc:
            if not workflow.unsafe.is_replaying():
                _log_end(exc, base)
            raise
        _task_failures.pop(info.workflow_id, None)
        if not workflow.unsafe.is_replaying():
            took = (workflow.now() - info.start_time).total_seconds()
            log(
                RUN_LOG,
                logging.INFO,
                "run finished",
                **base,
                steps=getattr(result, "steps", None),
                tokens=(getattr(result, "usage", None) or {}).get("total_tokens"),
                cost=(getattr(result, "ledger", None) or {}).get("cost"),
                seconds=round(took, 3),
            )
        return result


def _log_end(exc: BaseException, base: dict[str, Any]) -> None:
    if isinstance(exc, workflow.ContinueAsNewError):  # temporalio raises a subclass
        log(RUN_LOG, logging.INFO, "run continued as new", **base)
    elif is_cancelled_exception(exc):
        log(RUN_LOG, logging.INFO, "run cancelled", **base)
    elif isinstance(exc, FailureError):
        error_type = exc.type if isinstance(exc, ApplicationError) else type(exc).__name__
        log(RUN_LOG, logging.WARNING, "run failed", **base, error_type=error_type, error=str(exc))
    else:
        # Not a run failure: the run task fails and the engine retries it (on this worker or
        # another), e.g. a worker that does not host the agent, or a bug in the loop. Logged
        # the first time and every 10th time after in this process, with the count.
        key = str(base["run_id"])
        times = _task_failures.get(key, 0) + 1
        if len(_task_failures) > 10_000:
            _task_failures.clear()
        _task_failures[key] = times
        if times == 1 or times % 10 == 0:
            log(
                RUN_LOG,
                logging.WARNING,
                "run task failed, to be retried",
                **base,
                times=times,
                error_type=type(exc).__name__,
                error=str(exc).splitlines()[0] if str(exc) else "",
            )


_task_failures: dict[str, int] = {}
"""How often each run's task failed on this worker (for the log's pace)."""
