"""Secrets are not payload: secret values cross to workers sealed, never in clear.

The rule (docs/security.md):

* A *secret* is a ``pydantic.SecretStr`` / ``SecretBytes`` value, a field annotated
  ``Annotated[T, tether.Secret]`` (pydantic models and dataclasses) in the run context /
  deps, and the ``extra_headers`` and ``extra_query`` of model settings (run options and
  every model step's input).
* A secret is sealed on its own (AES-256-GCM) where it is packed, before anything is written,
  and unsealed only on a worker, just before the framework uses it. History, the blob store,
  the events, and the codec server's decoded view hold the sealed form only.
* The sealing key is the encryption key when encryption is on (``TETHER_ENCRYPTION_KEY``);
  otherwise a key of this host, made on first use in ``$TETHER_HOME/secrets.key`` (0600).
  A worker on another host needs the same key: set ``TETHER_ENCRYPTION_KEY`` everywhere.
* Provider credentials (API keys, clients) live in the agent's model object on the worker
  and are never serialized.

Sealing inside a workflow derives its nonce from the key, the run and the plaintext (a
synthetic nonce), so a replay produces the same bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr
from temporalio import workflow

from tether.core import codec
from tether.core.codec import Keyring
from tether.errors import DecryptionError

SEALED = "$tether_sealed"
"""The key of a sealed value: ``{"$tether_sealed": "KEYID:BASE64", "kind": ...}``."""
SEALED_KEYS = frozenset({"extra_headers", "extra_query"})
"""Keys whose values are sealed wherever they appear in run options and step inputs."""
LOCAL_KEY_NAME = "secrets.key"


class _SecretMarker:
    """Marks a field secret: ``token: Annotated[str, tether.Secret]``."""

    def __repr__(self) -> str:
        return "tether.Secret"


Secret = _SecretMarker()
"""Annotate a run-context field with it (``Annotated[str, tether.Secret]``) to seal it."""

_local: dict[Path, Keyring] = {}
_home: Path | None = None


def use_home(home: Path | None) -> None:
    """Keep this host's secrets key in ``home`` (a runtime's state directory)."""
    global _home
    _home = home


def local_key(home: Path | None = None, *, create: bool = True) -> Keyring | None:
    """This host's secrets key in ``home`` (default ``$TETHER_HOME``), made on first use
    (None when it does not exist and ``create`` is false)."""
    from tether.core.store import default_home

    home = (home or _home or default_home()).expanduser().absolute()
    cached = _local.get(home)
    if cached is not None:
        return cached
    path = home / LOCAL_KEY_NAME
    if not path.exists():
        if not create:
            return None
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = Keyring.generate(f"local-{os.urandom(4).hex()}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as out:
                out.write(fresh.export() + "\n")
    ring = Keyring.from_file(path)
    _local[home] = ring
    return ring


def sealing_keyring() -> Keyring:
    """The keyring secrets are sealed with: the encryption keyring (when on), this host's
    local key decrypting too; else the local key."""
    active = codec.active_keyring()
    if active is None:
        local = local_key()
        assert local is not None
        return local
    # With encryption on, no host key is made; one made earlier still unseals what it sealed.
    older = local_key(create=False)
    return active.merged(older) if older is not None else active


def seal(plain: bytes, kind: str) -> dict[str, str]:
    """``plain`` sealed under the current key; ``kind`` (``str``, ``bytes``, ``json``)
    says what :func:`unseal` gives back."""
    ring = sealing_keyring()
    nonce = None
    if workflow.in_workflow():
        # Deterministic (a replay writes the same bytes) and synthetic: keyed by the key
        # itself, so equal nonces only ever come with equal plaintexts (as in AES-GCM-SIV),
        # and the run's own random stream is left alone.
        material = b"\0".join([workflow.info().run_id.encode(), kind.encode(), plain])
        nonce = hmac.new(ring.keys[ring.current], material, hashlib.sha256).digest()[:12]
    key_id, blob = ring.encrypt(plain, kind.encode(), nonce=nonce)
    return {SEALED: f"{key_id}:{base64.b64encode(blob).decode()}", "kind": kind}


def is_sealed(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get(SEALED), str)


def unseal(value: Mapping[str, Any]) -> Any:
    """The value :func:`seal` sealed (a ``str``, ``bytes`` or JSON value)."""
    key_id, _, encoded = str(value[SEALED]).partition(":")
    kind = str(value.get("kind", "json"))
    try:
        plain = sealing_keyring().decrypt(
            key_id, base64.b64decode(encoded), kind.encode(), what="a sealed secret"
        )
    except DecryptionError as exc:
        if key_id.startswith("local-"):
            raise DecryptionError(
                f"a secret was sealed with the local secrets key {key_id!r} of another host "
                "(no encryption key was set where the run was started). Fix: set the same "
                "TETHER_ENCRYPTION_KEY on the clients and workers (docs/security.md)"
            ) from None
        raise exc from None
    if kind == "bytes":
        return plain
    if kind == "str":
        return plain.decode()
    return json.loads(plain)


def seal_secrets(value: object, data: Any) -> Any:
    """``data`` (the JSON form of ``value``) with the secrets of ``value`` sealed.

    ``SecretStr`` / ``SecretBytes`` (which plain JSON would mask as ``**********``) and
    fields annotated :data:`Secret`, in pydantic models, dataclasses, mappings and lists.
    """
    if isinstance(value, SecretStr):
        return seal(value.get_secret_value().encode(), "str")
    if isinstance(value, SecretBytes):
        return seal(value.get_secret_value(), "bytes")
    if isinstance(value, BaseModel) and isinstance(data, dict):
        out = dict(data)
        for name, info in type(value).model_fields.items():
            key = name if name in data else info.alias
            if key is None or key not in data:
                continue
            if any(m is Secret for m in info.metadata):
                out[key] = _seal_field(data[key])
            else:
                out[key] = seal_secrets(getattr(value, name, None), data[key])
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and isinstance(data, dict):
        try:
            hints = typing.get_type_hints(type(value), include_extras=True)
        except Exception:
            hints = {}
        out = dict(data)
        for f in dataclasses.fields(value):
            if f.name not in data:
                continue
            if any(m is Secret for m in getattr(hints.get(f.name), "__metadata__", ())):
                out[f.name] = _seal_field(data[f.name])
            else:
                out[f.name] = seal_secrets(getattr(value, f.name, None), data[f.name])
        return out
    if isinstance(value, Mapping) and isinstance(data, dict):
        return {k: seal_secrets(value[k], v) if k in value else v for k, v in data.items()}
    if isinstance(value, list | tuple) and isinstance(data, list) and len(value) == len(data):
        return [seal_secrets(v, d) for v, d in zip(value, data, strict=True)]
    return data


def _seal_field(data: Any) -> Any:
    if data is None or is_sealed(data):
        return data
    return seal_secrets_json(data)


def seal_secrets_json(data: Any) -> dict[str, str]:
    """A JSON value sealed whole (a field marked :data:`Secret`)."""
    return seal(json.dumps(data, separators=(",", ":")).encode(), "json")


def seal_keys(data: Any, keys: frozenset[str] = SEALED_KEYS) -> Any:
    """``data`` with the values under ``keys`` (``extra_headers``...) sealed, at any depth;
    ``data`` itself when there is nothing to seal."""
    if isinstance(data, dict):
        if is_sealed(data):
            return data
        out: dict[str, Any] | None = None
        for k, v in data.items():
            new = (
                seal_secrets_json(v) if k in keys and v and not is_sealed(v) else seal_keys(v, keys)
            )
            if new is not v:
                out = dict(data) if out is None else out
                out[k] = new
        return data if out is None else out
    if isinstance(data, list):
        items = [seal_keys(v, keys) for v in data]
        return data if all(a is b for a, b in zip(items, data, strict=True)) else items
    return data


def unseal_tree(data: Any) -> Any:
    """``data`` with every sealed value replaced by its plaintext (on a worker, just before
    use); ``data`` itself when nothing in it is sealed."""
    if isinstance(data, dict):
        if is_sealed(data):
            return unseal(data)
        out: dict[str, Any] | None = None
        for k, v in data.items():
            new = unseal_tree(v)
            if new is not v:
                out = dict(data) if out is None else out
                out[k] = new
        return data if out is None else out
    if isinstance(data, list):
        items = [unseal_tree(v) for v in data]
        return data if all(a is b for a, b in zip(items, data, strict=True)) else items
    return data
