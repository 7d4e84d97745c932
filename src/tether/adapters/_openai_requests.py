"""Provider requests without the OpenAI client re-walking the whole conversation.

Before each request the ``openai`` client transforms its parameters against their typed
schema (``openai._utils._transform``): every conversation item is checked against every
member of a union of some thirty item types, in Python. That walk is the largest part of a
model step's CPU and grows with the conversation (1.2 s for a 400-item Responses input,
0.3 s for 400 chat messages, on this project's 2-core machine), while for the plain JSON
items a model step holds it changes nothing: the conversation's item types declare no key
aliases or formats.

Inside :func:`plain_conversation`, the client's transform leaves the conversation field
(``input`` of ``responses.create``, ``messages`` of ``chat.completions.create``) as it is
when that field is plain JSON (a string, or a list of dicts). Any other field whose value
is plain JSON and whose declared type renames no key anywhere (no ``PropertyInfo`` alias:
the only change the transform makes to plain JSON) is left as it is too: the tool list was
walked against a union of some ten tool types at every request (1.4 ms per Responses
request with one tool, more with each tool). The rest is transformed as usual. Outside
the block, and for anything else (say a Pydantic model among the items), the client
behaves exactly as before. The hook replaces the module-level
``async_maybe_transform`` name the two resource modules call; if a future client moves it,
the hook is not installed and requests take the client's usual path
(:func:`fast_path_installed` says which, and a test pins it for the installed version).

The client then encodes the request body with the standard library's ``json`` and a custom
encoder class: 10 ms for a 2 MB body (1,000 tool calls with 2 KB results) on a quiet 2-core
machine, 20-27 ms per request in a loaded worker, and the body grows with every call. Inside
:func:`plain_conversation`, when ``orjson`` is installed (it comes with the adapters'
extras), the body is encoded with it instead: 0.7 ms for the same body, the same bytes but
for floats in exponent form (``1e-7`` for the client's ``1e-07``, the same value). Dates and
Pydantic models still go through the client's own conversions, and anything ``orjson``
refuses (an integer beyond 64 bits, a non-string key, a dataclass, a string with a lone
surrogate) is encoded by the client as before. One difference: a NaN or an infinity is
sent as ``null`` where the client raises.

The OpenAI Agents SDK copies the conversation twice more before a request
(``agents.util._json._to_dump_compatible``: a recursive walk turning tuples and other
iterables into lists, once as it takes the input and once as it builds the request), 50 ms
per model call at 2,000 items. Inside :func:`plain_conversation`, a list of plain dicts that
the SDK will not edit in place (no ``provider_data``, no placeholder id) is handed on as a
new list of the same items instead; anything else is copied as before.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, Literal

_ACTIVE: ContextVar[bool] = ContextVar("tether_plain_conversation", default=False)
_FIELDS = ("input", "messages")
_MODULES = ("openai.resources.responses.responses", "openai.resources.chat.completions.completions")
_DUMP_MODULES = ("agents.items", "agents.models.openai_responses")
_BODY_MODULES = ("openai._base_client",)
_SDK_PLACEHOLDER_ID = "__fake_id__"  # agents.models.fake_id.FAKE_RESPONSES_ID
Transform = Callable[[object, object], Awaitable[object]]


def _plain(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and all(type(item) is dict for item in value)


def _json(value: Any) -> bool:
    """Whether ``value`` is plain JSON (what the transform can only rename keys of)."""
    kind = type(value)
    if kind in (str, int, float, bool) or value is None:
        return True
    if kind is list:
        return all(_json(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _json(v) for k, v in value.items())
    return False


def _renames_keys(annotation: object) -> bool:
    """Whether the client's transform may rename a key of a value of this declared type: a
    ``PropertyInfo`` alias anywhere in it. Unsure (an unreadable type) counts as yes."""
    try:
        return _find_alias(annotation, set())
    except Exception:
        return True


def _find_alias(annotation: object, seen: set[int]) -> bool:
    from typing import get_args, get_origin

    from openai._utils._transform import PropertyInfo
    from typing_extensions import get_type_hints, is_typeddict

    if id(annotation) in seen:
        return False  # a recursive type: its other branches decide
    seen.add(id(annotation))
    origin = get_origin(annotation)
    if origin is Literal:
        return False
    args = get_args(annotation)
    if origin is Annotated:
        meta = args[1:]
        if any(isinstance(m, PropertyInfo) and m.alias is not None for m in meta):
            return True
        return _find_alias(args[0], seen)
    if is_typeddict(annotation):
        hints = get_type_hints(annotation, include_extras=True)
        return any(_find_alias(h, seen) for h in hints.values())
    return any(_find_alias(a, seen) for a in args)


def _fields(expected_type: object) -> Mapping[str, bool]:
    """For each top-level field of a request's parameters, whether the transform can only
    send a plain JSON value of it unchanged (its declared type renames no key). Worked out
    once per parameters type: hashing a declared type (a union of typed dicts) costs more
    than a request's walk of most fields."""
    from typing_extensions import get_type_hints, is_typeddict

    try:
        known = _sendable.get(expected_type)
        if known is None:
            hints = (
                get_type_hints(expected_type, include_extras=True)
                if is_typeddict(expected_type)
                else {}
            )
            known = {key: not _renames_keys(hint) for key, hint in hints.items()}
            _sendable[expected_type] = known
        return known
    except Exception:
        return {}


_sendable: dict[object, Mapping[str, bool]] = {}


def _as_is(key: str, value: Any, fields: Mapping[str, bool]) -> bool:
    """Whether the transform would send this field unchanged."""
    if key in _FIELDS:
        return _plain(value)  # the conversation: plain items, item types without aliases
    return fields.get(key, False) and _json(value)


def _hooked(original: Transform) -> Transform:
    async def transform(data: object, expected_type: object) -> object:
        if not _ACTIVE.get() or not isinstance(data, Mapping):
            return await original(data, expected_type)
        fields = _fields(expected_type)
        kept = {k: v for k, v in data.items() if _as_is(k, v, fields)}
        if not kept:
            return await original(data, expected_type)
        rest = {k: v for k, v in data.items() if k not in kept}
        out = await original(rest, expected_type)
        if not isinstance(out, dict):  # not the client's usual shape: take its usual path
            return await original(data, expected_type)
        return {**out, **kept}

    transform.__tether_hook__ = True  # type: ignore[attr-defined]
    return transform


def _hook(modules: tuple[str, ...], name: str, wrap: Callable[[Any], Any]) -> bool:
    """Replace the module-level function ``name`` of each module by ``wrap(original)``;
    False (nothing replaced) when a module or the function is not there."""
    try:
        found = [importlib.import_module(module) for module in modules]
    except ImportError:
        return False
    originals = [getattr(module, name, None) for module in found]
    if not all(callable(original) for original in originals):
        return False
    for module, original in zip(found, originals, strict=True):
        if not getattr(original, "__tether_hook__", False):
            setattr(module, name, wrap(original))
    return True


@functools.cache
def install() -> bool:
    """Hook the client's request transform and body encoding (once per process); whether
    the transform is hooked."""
    _hook(_BODY_MODULES, "openapi_dumps", _body_hooked)
    return _hook(_MODULES, "async_maybe_transform", _hooked)


def _body_default(value: Any) -> Any:
    """What the client's JSON encoder does with the values JSON has no type for."""
    import pydantic
    from openai._compat import model_dump

    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, pydantic.BaseModel):
        return model_dump(value, exclude_unset=True, mode="json", by_alias=True)
    raise TypeError(f"{type(value).__name__} is left to the client's encoder")


def _body_hooked(original: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    try:
        import orjson
    except ImportError:
        return original
    # Dates and dataclasses reach _body_default (as the client's encoder sees them) instead
    # of orjson's own formats.
    options = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

    def dumps(obj: Any) -> bytes:
        if _ACTIVE.get():
            try:
                return orjson.dumps(obj, default=_body_default, option=options)
            except TypeError:  # orjson.JSONEncodeError: the client's encoder decides
                pass
        return original(obj)

    dumps.__tether_hook__ = True  # type: ignore[attr-defined]
    return dumps


def _untouched(value: Any) -> bool:
    """Plain dict items the SDK neither converts nor edits in place (it deletes
    ``provider_data`` and placeholder ids from the items it sends)."""
    return isinstance(value, list) and all(
        type(item) is dict and "provider_data" not in item and item.get("id") != _SDK_PLACEHOLDER_ID
        for item in value
    )


def _dump_hooked(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def dump(obj: Any) -> Any:
        if _ACTIVE.get() and _untouched(obj):
            return list(obj)
        return original(obj)

    dump.__tether_hook__ = True  # type: ignore[attr-defined]
    return dump


@functools.cache
def install_sdk() -> bool:
    """Hook the OpenAI Agents SDK's input copy (once per process); whether it is hooked."""
    return _hook(_DUMP_MODULES, "_to_dump_compatible", _dump_hooked)


def fast_path_installed() -> bool:
    """Whether requests made inside :func:`plain_conversation` skip the conversation walk."""
    return install()


@contextlib.contextmanager
def plain_conversation() -> Iterator[None]:
    """Requests made in this block send a plain-JSON conversation as it is."""
    install()
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


_SAMPLES: dict[str, tuple[str, str, dict[str, Any]]] = {
    # A response holding the item kinds a model step most often gets back.
    "responses": (
        "openai.types.responses",
        "Response",
        {
            "id": "resp_warm",
            "object": "response",
            "created_at": 0,
            "model": "warm",
            "status": "completed",
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "text": {"format": {"type": "text"}},
            "metadata": {},
            "reasoning": {"effort": "medium", "summary": "auto"},
            "temperature": 1.0,
            "top_p": 1.0,
            "output": [
                {"type": "reasoning", "id": "rs_warm", "summary": []},
                {
                    "type": "message",
                    "id": "msg_warm",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "", "annotations": []}],
                },
                {
                    "type": "function_call",
                    "id": "fc_warm",
                    "call_id": "call_warm",
                    "name": "warm",
                    "arguments": "{}",
                    "status": "completed",
                },
            ],
            "usage": {
                "input_tokens": 1,
                "output_tokens": 1,
                "total_tokens": 2,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        },
    ),
    "chat": (
        "openai.types.chat",
        "ChatCompletion",
        {
            "id": "chatcmpl_warm",
            "object": "chat.completion",
            "created": 0,
            "model": "warm",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "id": "call_warm",
                                "type": "function",
                                "function": {"name": "warm", "arguments": "{}"},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    ),
}


def sample_response(api: str) -> dict[str, Any]:
    """A sample reply of ``api`` ("responses" or "chat"), as the provider sends it."""
    return _SAMPLES[api][2]


_PARAMS = {
    "responses": (
        "openai.types.responses.response_create_params",
        ("ResponseCreateParamsStreaming", "ResponseCreateParamsNonStreaming"),
    ),
    "chat": (
        "openai.types.chat.completion_create_params",
        ("CompletionCreateParamsStreaming", "CompletionCreateParamsNonStreaming"),
    ),
}


def warm_up(api: str) -> None:
    """Load what the OpenAI client loads at its first request and first response of ``api``
    ("responses" or "chat"), so that a worker's first model step does not pay it.

    The client imports the API's resource module at its first call, and builds the
    validators of a response's item types (Pydantic schemas, some of them deferred) when it
    first reads one: 0.3 s on a quiet 2-core machine, paid by the first model step of every
    new worker, which is the step a run resumed after a crash waits for. Reading a sample
    response here (in the worker's warm-up thread, see ``Adapter.warm_up``) builds them.
    """
    install()  # imports both resource modules
    module, name, sample = _SAMPLES[api]
    model = getattr(importlib.import_module(module), name)
    model.construct(**sample)
    # Which request fields the hook may send as they are (30 ms for the Responses API).
    module, names = _PARAMS[api]
    for name in names:
        _fields(getattr(importlib.import_module(module), name))
