"""Deploy safety: would the agent code in this process break recorded runs when they resume?

A resumed run is rebuilt by replaying its history through the agent's loop. Temporal's own
replayer only notices a change of *commands* (another step kind, another order); a step
asked for with another input (a new tool in the model's tool list, another system prompt,
arguments built another way) passes it, and the resumed run then gets results recorded for
another request. :func:`check_history` replays a recorded history with the agents
registered in this process and names the first step whose request differs, with a diff.

Used by ``tether replay-check`` (``tether.cli.deploy``); histories come from the engine
(:func:`engine_histories`) or from files exported with ``temporal workflow show -o json``
(:func:`history_from_file`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.service import RPCError

from tether.core.contract import RunRequest
from tether.core.replay import ReplayDifference, first_difference, replay_check
from tether.core.run import WORKFLOW_NAME
from tether.errors import ConfigurationError

Verdict = Literal["ok", "breaks", "unchecked"]

DIFF_LINES = 40
"""Longest diff a report shows (lines); the rest is cut with a note."""


@dataclass
class RunCheck:
    """The verdict on one recorded run."""

    run_id: str
    verdict: Verdict
    agent: str | None = None
    source: str | None = None
    """The recorded ``MODULE:OBJECT`` of the agent (``RunRequest.source``)."""
    compared: int = 0
    """Recorded step requests compared with their replayed ones."""
    step: int | None = None
    """The number of the first step that breaks (as in ``tether runs show``)."""
    step_name: str | None = None
    """Its summary (``model: weather``, ``tool: get_weather_alerts``), else its type."""
    path: str | None = None
    """Where its request first differs, as a JSON path (``$.payload.system``)."""
    reason: str = ""
    """One line: what breaks, or why the run could not be checked."""
    diff: str = ""
    """A unified diff of the recorded and the replayed request (JSON, cut short)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "verdict": self.verdict,
            "agent": self.agent,
            "source": self.source,
            "compared": self.compared,
            "step": self.step,
            "step_name": self.step_name,
            "path": self.path,
            "reason": self.reason,
            "diff": self.diff,
        }


@dataclass
class HistoryItem:
    """A history to check, or why it could not be read."""

    run_id: str
    history: WorkflowHistory | None = None
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def history_from_file(path: Path | str) -> WorkflowHistory:
    """A history exported with ``temporal workflow show -w ID -o json`` (or the UI's
    download, or ``WorkflowHistory.to_json``); the file name (without ``.json``) is its id."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read history file {str(path)!r}: {exc.strerror or exc}. Fix: check the path"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"history file {str(path)!r} is not JSON ({exc.msg}, line {exc.lineno}). Fix: "
            "export it with `temporal workflow show -w RUN_ID -o json > FILE`"
        ) from None
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list) or not events:
        raise ConfigurationError(
            f"history file {str(path)!r} holds no history events (no 'events' list). Fix: "
            "export it with `temporal workflow show -w RUN_ID -o json > FILE`"
        )
    try:
        return WorkflowHistory.from_json(path.name.removesuffix(".json"), data)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError(
            f"history file {str(path)!r} is not a Temporal history ({first}). Fix: export it "
            "with `temporal workflow show -w RUN_ID -o json > FILE`"
        ) from None


async def engine_histories(
    client: Client,
    *,
    ids: Sequence[str] = (),
    query: str | None = None,
    limit: int = 100,
) -> AsyncIterator[HistoryItem]:
    """The histories of the runs ``ids`` names, else of the runs ``query`` (a visibility
    query, ANDed with the run workflow's type) lists, newest first, at most ``limit``."""
    for run_id in ids:
        try:
            history = await client.get_workflow_handle(run_id).fetch_history()
        except RPCError as exc:
            text = exc.message.splitlines()[0] if exc.message else exc.status.name
            yield HistoryItem(run_id, error=f"its history could not be fetched: {text}")
            continue
        yield HistoryItem(run_id, history)
    if ids:
        return
    listing = f"WorkflowType = '{WORKFLOW_NAME}'" + (f" AND {query}" if query else "")
    async for wf in client.list_workflows(listing, limit=limit):
        handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
        try:
            history = await handle.fetch_history()
        except RPCError as exc:
            text = exc.message.splitlines()[0] if exc.message else exc.status.name
            yield HistoryItem(wf.id, error=f"its history could not be fetched: {text}")
            continue
        yield HistoryItem(wf.id, history)


async def recorded_request(history: WorkflowHistory, data_converter: DataConverter) -> RunRequest:
    """The run's input as it was started (raises ValueError when the history is not one
    of a Tether run, or its input cannot be read)."""
    if not history.events:
        raise ValueError("the history is empty")
    first = history.events[0]
    if first.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        raise ValueError("the history does not begin with the run's start")
    started = first.workflow_execution_started_event_attributes
    if started.workflow_type.name != WORKFLOW_NAME:
        raise ValueError(
            f"it is a {started.workflow_type.name!r} workflow, not a Tether run ({WORKFLOW_NAME})"
        )
    try:
        [request] = await data_converter.decode(list(started.input.payloads), [RunRequest])
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(
            f"its input could not be read ({type(exc).__name__}: {first_line}); encrypted runs "
            "need TETHER_ENCRYPTION_KEY, large inputs the workers' TETHER_STORE"
        ) from None
    if not isinstance(request, RunRequest):
        raise ValueError("its input is not a RunRequest")
    return request


async def check_history(
    run_id: str, history: WorkflowHistory, *, data_converter: DataConverter
) -> RunCheck:
    """Replay ``history`` with the agents registered in this process: ``ok``, or the first
    step whose request would differ (``breaks``). Register the run's agent first."""
    request = await recorded_request(history, data_converter)
    check = RunCheck(run_id=run_id, verdict="ok", agent=request.agent, source=request.source)
    report = await replay_check(history, data_converter=data_converter)
    check.compared = report.compared
    steps = [d for d in report.differences if d.kind != "replay_failure"]
    failure = next((d for d in report.differences if d.kind == "replay_failure"), None)
    summaries = _summaries(history, data_converter)
    if steps:
        first = min(steps, key=lambda d: d.index)
        check.verdict = "breaks"
        check.step = first.step if first.step is not None else first.index
        check.step_name = summaries.get(first.index) or first.name
        where = f"step {check.step} ({check.step_name})"
        if first.kind == "missing":
            check.reason = f"{where} is not asked for any more when the run is replayed"
        else:
            path, diff = describe_input_change(first)
            check.path, check.diff = path, diff
            check.reason = f"{where} would be asked for with another input: {path} differs"
        if failure is not None:
            check.reason += f" (and Temporal's replay fails: {failure.replayed[:200]})"
    elif failure is not None:
        check.verdict = "breaks"
        check.reason = _replay_failure_line(failure.replayed)
    return check


def _replay_failure_line(text: str) -> str:
    first = text.splitlines()[0] if text else "unknown"
    if "AgentNotRegistered" in text or "is not registered" in text:
        return f"the run's agent is not loaded: {first}"
    return f"Temporal's replay fails (the run's steps change kind or order): {first[:400]}"


def _summaries(history: WorkflowHistory, data_converter: DataConverter) -> dict[int, str]:
    """Each scheduled step's summary (1-based, in schedule order), where recorded."""
    found: dict[int, str] = {}
    index = 0
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        index += 1
        if event.HasField("user_metadata") and event.user_metadata.HasField("summary"):
            try:
                value = data_converter.payload_converter.from_payload(
                    event.user_metadata.summary, str
                )
            except Exception:
                continue
            if isinstance(value, str):
                found[index] = value
    return found


def readable(request: Any) -> Any:
    """A step request as a person reads it: values shared by reference (``attachments``)
    put where the payload names them, the bookkeeping fields left out."""
    if not isinstance(request, dict):
        return request
    attachments = request.get("attachments") or {}

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value in attachments:
            return resolve(attachments[value])
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    shown = {k: v for k, v in request.items() if k not in ("attachments", "shared_refs")}
    shown["payload"] = resolve(shown.get("payload"))
    return shown


def describe_input_change(difference: ReplayDifference) -> tuple[str, str]:
    """(the JSON path where the two requests first differ, a short unified diff)."""
    old, new = readable(difference.recorded_request), readable(difference.replayed_request)
    found = first_difference(old, new)
    path = found[0] if found is not None else difference.path
    return path, unified_diff(old, new)


def unified_diff(old: Any, new: Any, *, limit: int = DIFF_LINES) -> str:
    """A unified diff of two JSON values (indented, keys sorted), at most ``limit`` lines."""
    a = json.dumps(old, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    b = json.dumps(new, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    lines = list(difflib.unified_diff(a, b, "recorded", "replayed", n=2, lineterm=""))
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more diff lines)"]
    return "\n".join(lines)


def visibility_query(
    *,
    status: str | None,
    since: datetime | None,
    agent: str | None,
    indexed: bool,
) -> str:
    """The visibility query of ``--status`` (a Temporal execution status), ``--since`` and
    ``--agent`` (only with Tether's search attributes registered)."""
    parts: list[str] = []
    if status is not None:
        parts.append(f"ExecutionStatus = '{status}'")
    if since is not None:
        parts.append(f"StartTime >= '{since.isoformat()}'")
    if agent is not None and indexed:
        parts.append(f"TetherAgent = '{agent}'")
    return " AND ".join(parts)


async def offline_converter(state_dir: Path | str | None = None) -> DataConverter:
    """The data converter a worker of this host would use (its store and encryption key),
    without reaching an engine: for histories read from files."""
    import os

    from tether.core import codec, sealed
    from tether.core.codec import Keyring
    from tether.core.converter import data_converter
    from tether.core.devserver import private_dir
    from tether.core.store import default_home, open_store

    home = Path(state_dir) if state_dir is not None else default_home()
    keyring = Keyring.from_env()
    codec.configure(keyring)
    sealed.use_home(home)
    if not os.environ.get("TETHER_STORE"):
        private_dir(home)
    store = await open_store(None, default=home / "store")
    if keyring is not None:
        store.encrypt_with(keyring)
    return data_converter(store, keyring)
