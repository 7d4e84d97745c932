"""Encryption at rest: one keyring encrypts the run history, the blob store and secrets.

Keys have ids so they can rotate: everything is encrypted with the *current* key (the
first one listed) and names its key id, and decrypts with whichever known key that id
names. The keyring comes from one setting: ``TETHER_ENCRYPTION_KEY`` (``ID:BASE64KEY``,
comma-separated, current first) or ``TETHER_ENCRYPTION_KEY_FILE`` (a file holding the same,
one key a line). ``tether keygen`` prints a new key. AES-256-GCM, from ``cryptography``.

Three layers use it:

* :class:`EncryptionCodec`, a Temporal ``PayloadCodec``: every payload in the history
  (inputs, results, signals, memo, failure details) is ciphertext; large payloads kept in
  the store are encrypted before they are stored.
* :meth:`Keyring.seal_blob` / :meth:`Keyring.open_blob`: the blob store encrypts every
  blob (conversation segments, tool schemas, run context) with the blob's name as
  associated data, so a blob cannot be passed off under another name.
* :mod:`tether.core.sealed`: secret values (``SecretStr`` fields, ``extra_headers``)
  sealed one by one, so they stay sealed even where the history is shown decoded.

With a keyring, data that is not encrypted is refused (fail closed) unless
``TETHER_ENCRYPTION_ACCEPT_PLAINTEXT`` is set while older runs finish. See docs/security.md.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter, PayloadCodec

from tether.errors import ConfigurationError, DecryptionError

KEY_ENV = "TETHER_ENCRYPTION_KEY"
KEY_FILE_ENV = "TETHER_ENCRYPTION_KEY_FILE"
PLAINTEXT_ENV = "TETHER_ENCRYPTION_ACCEPT_PLAINTEXT"
"""Set to 1 while runs written before encryption was switched on finish (see Keyring)."""

ENCODING = b"binary/encrypted"
"""The ``encoding`` of an encrypted payload (the name Temporal's samples use)."""
KEY_ID_METADATA = "encryption-key-id"
"""Payload metadata naming the key a payload was encrypted with."""
CIPHER_METADATA = "encryption-cipher"
CIPHER = b"AES256-GCM"

BLOB_MAGIC = b"TETHERE1"
"""First bytes of an encrypted blob: magic, key id length (1 byte), key id, nonce, ciphertext."""

_NONCE = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _config_error(source: str, cause: str) -> ConfigurationError:
    return ConfigurationError(
        f"the encryption key in {source} cannot be used: {cause}. Fix: write it as "
        "ID:BASE64KEY (32 random bytes, base64; `tether keygen` prints one), several "
        "separated by commas or lines with the current key first (docs/security.md)"
    )


@dataclass(frozen=True)
class Keyring:
    """AES-256-GCM keys by id: ``current`` encrypts, any of ``keys`` decrypts.

    Data that is not encrypted is refused (fail closed: whoever lacks the key cannot start
    runs or plant blobs), unless ``accept_plaintext`` (``TETHER_ENCRYPTION_ACCEPT_PLAINTEXT``)
    lets history and blobs written before encryption was switched on be read meanwhile.
    """

    keys: Mapping[str, bytes]
    current: str
    accept_plaintext: bool = False

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError(f"the current key id {self.current!r} is not in the keyring")
        for key_id, key in self.keys.items():
            if not _KEY_ID.match(key_id):
                raise ValueError(f"key id {key_id!r} must be 1-64 of A-Z a-z 0-9 . _ -")
            if len(key) != 32:
                raise ValueError(f"key {key_id!r} must be 32 bytes (AES-256), not {len(key)}")

    def __repr__(self) -> str:  # never print key material
        return (
            f"Keyring(current={self.current!r}, ids={list(self.keys)!r}, "
            f"accept_plaintext={self.accept_plaintext})"
        )

    @property
    def ids(self) -> list[str]:
        return list(self.keys)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def parse(
        cls, text: str, *, source: str = "the key", accept_plaintext: bool = False
    ) -> Keyring:
        """Keys written as ``ID:BASE64KEY``, separated by commas or lines, current first.

        Lines starting with ``#`` are comments. Errors name ``source``, never the key.
        """
        keys: dict[str, bytes] = {}
        for raw in re.split(r"[,\n]", text):
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            key_id, sep, encoded = entry.partition(":")
            key_id, encoded = key_id.strip(), encoded.strip()
            if not sep or not key_id or not encoded:
                raise _config_error(source, "an entry is not of the form ID:BASE64KEY")
            if not _KEY_ID.match(key_id):
                raise _config_error(source, f"key id {key_id!r} is not 1-64 of A-Z a-z 0-9 . _ -")
            if key_id in keys:
                raise _config_error(source, f"key id {key_id!r} is listed twice")
            try:
                key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=False)
                if not key:
                    raise binascii.Error("empty")
            except (binascii.Error, ValueError):
                raise _config_error(source, f"key {key_id!r} is not valid base64") from None
            if len(key) != 32:
                raise _config_error(source, f"key {key_id!r} is {len(key)} bytes, AES-256 needs 32")
            keys[key_id] = key
        if not keys:
            raise _config_error(source, "it holds no key")
        return cls(keys=keys, current=next(iter(keys)), accept_plaintext=accept_plaintext)

    @classmethod
    def from_file(cls, path: str | Path, *, accept_plaintext: bool = False) -> Keyring:
        """The keyring in ``path`` (refused when other users may read it)."""
        path = Path(path).expanduser()
        try:
            mode = path.stat().st_mode
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the encryption key file {path}: {exc.strerror or exc}. Fix: "
                f"point {KEY_FILE_ENV} at a readable file (docs/security.md)"
            ) from None
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"the encryption key file {path} can be read by other users (mode "
                f"{stat.S_IMODE(mode):o}). Fix: chmod 600 {path}"
            )
        return cls.parse(text, source=str(path), accept_plaintext=accept_plaintext)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring | None:
        """The keyring ``TETHER_ENCRYPTION_KEY`` or ``TETHER_ENCRYPTION_KEY_FILE`` names;
        None when neither is set (encryption off)."""
        env = os.environ if environ is None else environ
        inline = env.get(KEY_ENV, "").strip()
        path = env.get(KEY_FILE_ENV, "").strip()
        if inline and path:
            raise ConfigurationError(
                f"both {KEY_ENV} and {KEY_FILE_ENV} are set. Fix: set only one of them"
            )
        plaintext = env.get(PLAINTEXT_ENV, "").strip().lower() in ("1", "true", "yes", "on")
        if inline:
            return cls.parse(inline, source=KEY_ENV, accept_plaintext=plaintext)
        if path:
            return cls.from_file(path, accept_plaintext=plaintext)
        return None

    @classmethod
    def generate(cls, key_id: str | None = None) -> Keyring:
        """A keyring of one new random key."""
        key_id = key_id or f"k{secrets.token_hex(4)}"
        return cls(keys={key_id: AESGCM.generate_key(bit_length=256)}, current=key_id)

    def export(self) -> str:
        """The keyring as ``TETHER_ENCRYPTION_KEY`` takes it (this holds the keys)."""
        return ",".join(
            f"{key_id}:{base64.b64encode(key).decode()}" for key_id, key in self.keys.items()
        )

    def rotated(self, new: Keyring) -> Keyring:
        """``new``'s current key encrypting, every key of both still decrypting."""
        keys = {**new.keys, **{k: v for k, v in self.keys.items() if k not in new.keys}}
        plaintext = self.accept_plaintext or new.accept_plaintext
        return Keyring(keys=keys, current=new.current, accept_plaintext=plaintext)

    def merged(self, other: Keyring) -> Keyring:
        """This keyring's current key encrypting; ``other``'s keys decrypt too."""
        keys = {**self.keys, **{k: v for k, v in other.keys.items() if k not in self.keys}}
        return Keyring(keys=keys, current=self.current, accept_plaintext=self.accept_plaintext)

    # -- bytes -----------------------------------------------------------------------------

    def encrypt(
        self, data: bytes, aad: bytes | None = None, *, nonce: bytes | None = None
    ) -> tuple[str, bytes]:
        """``(key id, nonce + ciphertext)`` of ``data`` under the current key.

        ``nonce`` is for deterministic callers (a synthetic nonce in a workflow); it must
        never repeat under one key for different data.
        """
        nonce = nonce if nonce is not None else os.urandom(_NONCE)
        if len(nonce) != _NONCE:
            raise ValueError(f"an AES-GCM nonce is {_NONCE} bytes")
        return self.current, nonce + _aead(self.keys[self.current]).encrypt(nonce, data, aad)

    def decrypt(self, key_id: str, blob: bytes, aad: bytes | None = None, *, what: str) -> bytes:
        """The plaintext of ``blob``; :class:`DecryptionError` naming ``what`` and the fix."""
        key = self.keys.get(key_id)
        if key is None:
            raise DecryptionError(
                f"{what} was encrypted with key id {key_id!r}, which this process does not "
                f"hold (it holds {', '.join(self.keys)}). Fix: add that key to {KEY_ENV} "
                "after the current one (old keys keep decrypting; docs/security.md)"
            )
        try:
            return _aead(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise DecryptionError(
                f"{what} does not decrypt with key {key_id!r}: it was changed, truncated or "
                "moved, or the key under that id is not the one it was written with. Fix: "
                "check the key's value, and what else writes there"
            ) from None

    def seal_blob(self, data: bytes, name: str) -> bytes:
        """A self-describing encrypted blob, bound to ``name`` (its store key)."""
        key_id, blob = self.encrypt(data, name.encode())
        kid = key_id.encode()
        return BLOB_MAGIC + bytes([len(kid)]) + kid + blob

    def open_blob(self, data: bytes, name: str) -> bytes:
        """The plaintext of a :meth:`seal_blob` blob (a plaintext blob is returned as it is
        with ``accept_plaintext``, else refused)."""
        if not data.startswith(BLOB_MAGIC):
            if self.accept_plaintext:
                return data
            raise DecryptionError(_plaintext_refused(f"blob {name}"))
        at = len(BLOB_MAGIC)
        size = data[at]
        key_id = data[at + 1 : at + 1 + size].decode("ascii", "replace")
        return self.decrypt(key_id, data[at + 1 + size :], name.encode(), what=f"blob {name}")


@functools.lru_cache(maxsize=64)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(key)


def is_encrypted_blob(data: bytes) -> bool:
    return data.startswith(BLOB_MAGIC)


def _plaintext_refused(what: str) -> str:
    return (
        f"{what} is not encrypted, and encryption is on: it was written by a process "
        f"without {KEY_ENV} (or before encryption was switched on). Fix: give that client "
        f"or worker the key; for runs and blobs from before the switch, set "
        f"{PLAINTEXT_ENV}=1 until they have finished (docs/security.md)"
    )


class EncryptionCodec(PayloadCodec):
    """Temporal payload codec: AES-256-GCM under the keyring's current key, key id in the
    payload's metadata; decodes with any key the keyring holds.

    A payload that is not encrypted is refused unless the keyring accepts plaintext
    (``TETHER_ENCRYPTION_ACCEPT_PLAINTEXT``, while runs from before the switch finish).
    """

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(p) for p in payloads]

    def encode_one(self, payload: Payload) -> Payload:
        key_id, blob = self.keyring.encrypt(payload.SerializeToString())
        return Payload(
            metadata={
                "encoding": ENCODING,
                KEY_ID_METADATA: key_id.encode(),
                CIPHER_METADATA: CIPHER,
            },
            data=blob,
        )

    def decode_one(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            if self.keyring.accept_plaintext:
                return payload
            raise DecryptionError(_plaintext_refused("a payload"))
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode("ascii", "replace")
        plain = self.keyring.decrypt(key_id, payload.data, what="a payload")
        out = Payload()
        out.ParseFromString(plain)
        return out


class _Chain(PayloadCodec):
    """Two codecs in turn: ``inner`` encodes first, ``outer`` last (decoding reverses)."""

    def __init__(self, inner: PayloadCodec, outer: PayloadCodec) -> None:
        self.inner, self.outer = inner, outer

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return await self.outer.encode(await self.inner.encode(payloads))

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return await self.inner.decode(await self.outer.decode(payloads))


def with_encryption(existing: PayloadCodec | None, keyring: Keyring) -> PayloadCodec:
    """``existing`` (a user's codec: compression, their own encryption) followed by
    Tether's encryption; Tether's alone when there is none or it is Tether's already."""
    if existing is None:
        return EncryptionCodec(keyring)
    if isinstance(existing, EncryptionCodec) or (
        isinstance(existing, _Chain) and isinstance(existing.outer, EncryptionCodec)
    ):
        return existing
    return _Chain(existing, EncryptionCodec(keyring))


async def failure_message(converter: DataConverter, failure: Failure) -> str:
    """A raw failure's message, decrypted when encryption moved it into the failure's
    encoded attributes (the raw message is then ``"Encoded failure"``)."""
    if not failure.HasField("encoded_attributes") or converter.payload_codec is None:
        return failure.message
    try:
        [payload] = await converter.payload_codec.decode([failure.encoded_attributes])
        attrs = converter.payload_converter.from_payloads([payload])[0]
    except Exception:
        return failure.message
    return (
        str(attrs.get("message", failure.message)) if isinstance(attrs, dict) else failure.message
    )


_active: Keyring | None = None
_configured = False


def configure(keyring: Keyring | None) -> None:
    """Make ``keyring`` this process's encryption keyring (None: encryption off), what the
    store, secrets and codecs built without one use. Tether's runtime and plugin call this."""
    global _active, _configured
    _active, _configured = keyring, True


def active_keyring() -> Keyring | None:
    """This process's encryption keyring: the one :func:`configure` set, else the
    environment's (read once), else None."""
    global _active, _configured
    if not _configured:
        _active, _configured = Keyring.from_env(), True
    return _active
