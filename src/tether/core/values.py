"""Values that cross a boundary with their type: run context / deps, tool results."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError, to_jsonable_python

from tether.errors import StepInputError

_PLAIN = (str, int, float, bool, type(None), dict, list)


def pack(value: object, *, what: str) -> dict[str, Any]:
    """``{"type", "data"}`` JSON for ``value``; a clear error if it cannot cross."""
    try:
        data = to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise StepInputError(
            f"{what} of type {type(value).__qualname__} cannot be serialized: {exc}. "
            "Fix: use a pydantic model, a dataclass or plain JSON values "
            "(objects such as clients or connections belong in the worker, not the input)."
        ) from None
    kind = (
        None
        if isinstance(value, _PLAIN)
        else f"{type(value).__module__}:{type(value).__qualname__}"
    )
    return {"type": kind, "data": data}


def unpack(packed: dict[str, Any]) -> object:
    """Rebuild a value from :func:`pack` (the type is imported on the worker)."""
    kind = packed.get("type")
    if kind is None:
        return packed.get("data")
    module, _, qualname = kind.partition(":")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return TypeAdapter(target).validate_python(packed.get("data"))
