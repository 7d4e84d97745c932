"""The one data converter Tether owns.

Every adapter's step inputs and results are Tether dataclasses holding JSON, so OpenAI
Agents and Pydantic AI runs share one client and one worker (the native plugins each
install a converter of their own, and they conflict). Adapters that need more register
payload converters through :func:`register_payload_converter`; large payloads go to the
blob store through Temporal's external storage, so history holds references.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import sys
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    ExternalStorage,
    JSONPlainPayloadConverter,
    PayloadConverter,
)
from temporalio.exceptions import FailureError

from tether.core.codec import EncryptionCodec, Keyring
from tether.core.store import BlobStore, StoreDriver

_extra: list[EncodingPayloadConverter] = []

EXTERNAL_THRESHOLD = 128 * 1024
"""Payloads at least this large are kept in the store; history holds a reference."""


def register_payload_converter(converter: EncodingPayloadConverter) -> None:
    """Add an encoding converter ahead of Tether's JSON one (for an adapter's own types)."""
    if any(c.encoding == converter.encoding for c in _extra):
        raise ValueError(f"a payload converter for encoding {converter.encoding!r} is registered")
    _extra.append(converter)


_JSON = PydanticJSONPlainPayloadConverter()
"""Shared by every payload converter: the engine SDK builds a new data converter (hence a new
payload converter) for each payload it stores externally, and a converter of its own would
rebuild the pydantic validator of a step's input type at every step (5 ms each)."""


def warm_up(*types: type) -> None:
    """Build the JSON converter's validators of ``types`` now (a worker's warm-up thread).

    The converter builds a type's pydantic validator the first time it decodes one: 45 ms
    for a run's input, paid by the first task of the first run on each new worker (and so by
    a run resumed there after a crash). Decoding ``null`` as each type builds and caches it;
    the validation error that follows is expected.
    """
    empty = Payload(metadata={"encoding": _JSON.encoding.encode()}, data=b"null")
    for type_ in types:
        with contextlib.suppress(Exception):
            _JSON.from_payload(empty, type_)


class TetherPayloadConverter(CompositePayloadConverter):
    """Temporal's default converters with pydantic JSON in place of plain JSON."""

    def __init__(self) -> None:
        converters = [
            _JSON if isinstance(c, JSONPlainPayloadConverter) else c
            for c in DefaultPayloadConverter.default_encoding_payload_converters
        ]
        super().__init__(*_extra, *converters)


_FRAME = re.compile(r'^(\s*)File "([^"]+)", line (\d+), in (.*)$', re.MULTILINE)


@functools.lru_cache(maxsize=4096)
def module_of(path: str) -> str:
    """A source file as the module it is (``agents.run``), found on ``sys.path``; else its
    path relative to the working directory, else its file name. Never an absolute path."""
    if path.startswith("<"):  # <frozen ...>, <string>
        return path
    file = Path(path)
    if not file.is_absolute():
        return path
    best: Path | None = None
    for entry in sys.path:
        root = Path(entry or os.getcwd())
        if not root.is_absolute():
            root = Path.cwd() / root
        if file.is_relative_to(root) and (best is None or len(root.parts) > len(best.parts)):
            best = root
    if best is None:
        return file.name
    parts = list(file.relative_to(best).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or file.name


def short_paths(stack_trace: str) -> str:
    """A Python stack trace with each frame's file named by module and line
    (``agents.run:123, in run``), not by the worker's absolute path."""
    return _FRAME.sub(
        lambda m: f"{m.group(1)}{module_of(m.group(2))}:{m.group(3)}, in {m.group(4)}",
        stack_trace,
    )


class ShortPathFailureConverter(DefaultFailureConverter):
    """Temporal's failure converter, with stack traces naming modules and lines: what the
    Temporal UI and `tether runs show` display carries no worker's file system layout."""

    def _error_to_failure(
        self, error: FailureError, payload_converter: PayloadConverter, failure: Failure
    ) -> None:
        had_proto = error.failure is not None
        super()._error_to_failure(error, payload_converter, failure)
        if not had_proto and failure.stack_trace:
            failure.stack_trace = short_paths(failure.stack_trace)


class ShortPathEncodedFailureConverter(
    ShortPathFailureConverter, DefaultFailureConverterWithEncodedAttributes
):
    """:class:`ShortPathFailureConverter`, messages and stack traces then encoded (and so
    encrypted with the payloads)."""

    def __init__(self) -> None:
        DefaultFailureConverter.__init__(self, encode_common_attributes=True)


def data_converter(store: BlobStore | None, keyring: Keyring | None = None) -> DataConverter:
    """The converter for clients and workers; ``store=None`` keeps every payload inline.

    With ``keyring``, every payload is encrypted (:class:`EncryptionCodec`), failure
    messages and stack traces too (they move into an encoded payload), and large payloads
    are encrypted before they reach the store.
    """
    base = dataclasses.replace(
        DataConverter.default,
        payload_converter_class=TetherPayloadConverter,
        failure_converter_class=ShortPathFailureConverter,
    )
    if keyring is not None:
        base = dataclasses.replace(
            base,
            payload_codec=EncryptionCodec(keyring),
            failure_converter_class=ShortPathEncodedFailureConverter,
        )
    if store is None:
        return base
    return dataclasses.replace(
        base,
        external_storage=ExternalStorage(
            drivers=[StoreDriver(store)], payload_size_threshold=EXTERNAL_THRESHOLD
        ),
    )
