"""Values that cross a boundary with their type: run context / deps, tool results.

A value's type is recorded as an importable ``module:qualname``, so another process can
rebuild it. A type defined in a script run as ``python app.py`` lives in ``__main__``,
which means something else in every process: it is recorded under the script's importable
name (``app``) instead, and a type no other process can import is refused before the run
starts (unless the agent declares the type itself, e.g. Pydantic AI's ``deps_type``).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError, to_jsonable_python

from tether.core.sealed import seal_secrets, unseal_tree
from tether.errors import StepInputError

_PLAIN = (str, int, float, bool, type(None), dict, list)


def main_module_name() -> str | None:
    """The importable name of the program run as ``__main__`` (``python app.py`` -> ``app``,
    ``python -m pkg.app`` -> ``pkg.app``), or None (an interactive session, stdin)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name: str | None = getattr(spec, "name", None)
    if name and name != "__main__":
        return name.removesuffix(".__main__")
    file = getattr(main, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    for entry in sys.path:
        try:
            rel = path.relative_to(Path(entry or os.getcwd()).resolve())
        except (ValueError, OSError):
            continue
        parts = rel.with_suffix("").parts
        if parts and all(p.isidentifier() for p in parts):
            return ".".join(parts)
    return None


def type_name(tp: type) -> str:
    """``module:qualname`` of ``tp`` as another process can import it."""
    module = tp.__module__
    if module == "__main__":
        module = main_module_name() or module
    return f"{module}:{tp.__qualname__}"


def importable(name: str) -> bool:
    """Whether another process can import the type recorded as ``name``."""
    module, _, qualname = name.partition(":")
    return module != "__main__" and "<locals>" not in qualname


def object_source(*objects: object) -> str | None:
    """``MODULE:OBJECT`` naming the first of ``objects`` found at the top level of an
    imported module (what ``tether worker`` takes), or None."""
    main = main_module_name()
    for name, module in reversed(list(sys.modules.items())):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        if name == "__main__":
            if main is None:
                continue
            name = main
        for attr, value in list(namespace.items()):
            if any(value is obj for obj in objects) and not attr.startswith("_"):
                return f"{name}:{attr}"
    return None


def pack(value: object, *, what: str, declared: Any = None) -> dict[str, Any]:
    """``{"type", "data"}`` JSON for ``value``; a clear error if it cannot cross.

    ``declared`` is the type the receiving side rebuilds the value as (an agent's declared
    deps type); without it, the value's own type must be importable elsewhere.
    """
    try:
        data = to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise StepInputError(
            f"{what} of type {type(value).__qualname__} cannot be serialized: {exc}. "
            "Fix: use a pydantic model, a dataclass or plain JSON values "
            "(objects such as clients or connections belong in the worker, not the input)."
        ) from None
    data = seal_secrets(value, data)  # SecretStr & co. cross sealed, never in clear
    kind = None if isinstance(value, _PLAIN) else type_name(type(value))
    if kind is not None and declared is None and not importable(kind):
        where = (
            "inside a function"
            if "<locals>" in kind
            else "in a program that other processes cannot import"
        )
        raise StepInputError(
            f"{what} of type {type(value).__qualname__} is defined {where} ({kind}), so a "
            "worker cannot rebuild it. Fix: define the type at the top level of an importable "
            "module (e.g. app_types.py) and import it from there, or run your program as a "
            "module (python -m app)."
        )
    return {"type": kind, "data": data}


def unpack(packed: dict[str, Any], declared: Any = None) -> object:
    """Rebuild a value from :func:`pack`: as ``declared`` when given, else by its recorded
    type (imported here; the program running as ``__main__`` is used for its own name)."""
    data = unseal_tree(packed.get("data"))
    if declared is not None and declared not in (object, Any, type(None)):
        return TypeAdapter(declared).validate_python(data)
    kind = packed.get("type")
    if kind is None:
        return data
    module, _, qualname = kind.partition(":")
    target: Any = (
        sys.modules["__main__"]
        if module == main_module_name() and "__main__" in sys.modules
        else importlib.import_module(module)
    )
    for part in qualname.split("."):
        target = getattr(target, part)
    return TypeAdapter(target).validate_python(data)
