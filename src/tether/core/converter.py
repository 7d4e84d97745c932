"""The one data converter Tether owns.

Every adapter's step inputs and results are Tether dataclasses holding JSON, so OpenAI
Agents and Pydantic AI runs share one client and one worker (the native plugins each
install a converter of their own, and they conflict). Adapters that need more register
payload converters through :func:`register_payload_converter`; large payloads go to the
blob store through Temporal's external storage, so history holds references.
"""

from __future__ import annotations

import dataclasses

from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    ExternalStorage,
    JSONPlainPayloadConverter,
)

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


class TetherPayloadConverter(CompositePayloadConverter):
    """Temporal's default converters with pydantic JSON in place of plain JSON."""

    def __init__(self) -> None:
        converters = [
            PydanticJSONPlainPayloadConverter() if isinstance(c, JSONPlainPayloadConverter) else c
            for c in DefaultPayloadConverter.default_encoding_payload_converters
        ]
        super().__init__(*_extra, *converters)


def data_converter(store: BlobStore | None, keyring: Keyring | None = None) -> DataConverter:
    """The converter for clients and workers; ``store=None`` keeps every payload inline.

    With ``keyring``, every payload is encrypted (:class:`EncryptionCodec`), failure
    messages and stack traces too (they move into an encoded payload), and large payloads
    are encrypted before they reach the store.
    """
    base = dataclasses.replace(
        DataConverter.default, payload_converter_class=TetherPayloadConverter
    )
    if keyring is not None:
        base = dataclasses.replace(
            base,
            payload_codec=EncryptionCodec(keyring),
            failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
        )
    if store is None:
        return base
    return dataclasses.replace(
        base,
        external_storage=ExternalStorage(
            drivers=[StoreDriver(store)], payload_size_threshold=EXTERNAL_THRESHOLD
        ),
    )
