"""How the Agents SDK's stream events cross a run's event log, and back.

The run (deterministic) publishes the SDK's run item and agent-updated events as
``openai_agents.stream`` events; the model step publishes the SDK's raw response events as
``model.delta``/``model.event`` (``raw``). A reader turns both back into the SDK's own
``StreamEvent`` types, with the caller's agent objects (found by name).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

from agents import Agent
from agents.items import RunItem
from agents.stream_events import (
    AgentUpdatedStreamEvent,
    RawResponsesStreamEvent,
    RunItemStreamEvent,
    StreamEvent,
)
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_jsonable_python

STREAM_EVENT = "openai_agents.stream"
_ALLOWED = ("openai.", "agents.")


@functools.cache
def _raw() -> TypeAdapter[ResponseStreamEvent]:
    """Built at the first raw event, not at import: a worker whose runs stream no raw
    events never pays for it (a tenth of a second of a worker's start)."""
    return TypeAdapter(ResponseStreamEvent)


def _path(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode_value(value: Any) -> Any:
    if isinstance(value, Agent):
        return {"__agent__": value.name}
    if isinstance(value, BaseModel):
        return {"__model__": _path(value), "data": value.model_dump(mode="json")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__dataclass__": _path(value), "data": to_jsonable_python(value)}
    return to_jsonable_python(value, fallback=repr)


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    if not module.startswith(_ALLOWED):
        raise ValueError(f"not a type of the SDK: {path}")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _decode_value(value: Any, agents: dict[str, Agent[Any]]) -> Any:
    if not isinstance(value, dict):
        return value
    if "__agent__" in value:
        return agents.get(value["__agent__"]) or Agent(name=value["__agent__"])
    if "__model__" in value:
        return _load(value["__model__"]).model_validate(value["data"])
    if "__dataclass__" in value:
        try:
            return _load(value["__dataclass__"])(**value["data"])
        except (TypeError, ValueError, AttributeError, ImportError):
            return value["data"]
    return value


def encode_item(item: RunItem) -> dict[str, Any]:
    """A run item as JSON: its class, and each of its fields (agents by name)."""
    fields = {
        f.name: _encode_value(getattr(item, f.name))
        for f in dataclasses.fields(item)
        if f.init and not f.name.startswith("_") and f.name != "type"
    }
    return {"class": _path(item), "fields": fields}


def decode_item(data: dict[str, Any], agents: dict[str, Agent[Any]]) -> RunItem:
    cls = _load(data["class"])
    fields = {k: _decode_value(v, agents) for k, v in data["fields"].items()}
    item: RunItem = cls(**fields)
    return item


def encode_event(event: StreamEvent) -> dict[str, Any] | None:
    """The log's form of a run-side stream event (None for raw events: the step has them)."""
    if isinstance(event, RunItemStreamEvent):
        return {"kind": event.type, "name": event.name, "item": encode_item(event.item)}
    if isinstance(event, AgentUpdatedStreamEvent):
        return {"kind": event.type, "agent": event.new_agent.name}
    return None


def decode_event(data: dict[str, Any], agents: dict[str, Agent[Any]]) -> StreamEvent:
    if data["kind"] == "agent_updated_stream_event":
        name = data["agent"]
        return AgentUpdatedStreamEvent(new_agent=agents.get(name) or Agent(name=name))
    return RunItemStreamEvent(name=data["name"], item=decode_item(data["item"], agents))


def decode_raw(raw: dict[str, Any]) -> RawResponsesStreamEvent:
    return RawResponsesStreamEvent(data=_raw().validate_python(raw))
