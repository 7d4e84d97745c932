"""History-linear transport of a conversation across steps.

The run side keeps the conversation the framework hands it, and for each step computes
a reference (the longest already-stored prefix) plus the items after it. References are
content hashes, computed without I/O, so the run stays deterministic; the step writes
the new segment. A model step's input therefore holds only what changed since the last
step, whatever the conversation's length.
"""

from __future__ import annotations

import json
from bisect import bisect_right, insort
from collections.abc import Sequence
from typing import Any

from tether.core.contract import TranscriptRef
from tether.core.store import BlobStore, canonical_json, digest, segment_bytes


class Transcript:
    """Run-side record of what the store holds (one per run; in workflow memory).

    Each step costs what its new items cost, not what the conversation costs: the common
    prefix with the previous step's conversation is found by comparing values (C-level
    equality, stopping at the first difference) against this record's own copies, and only
    the new items are serialized and hashed. The copies are taken once per item, so a
    framework that mutates an item after handing it over cannot change what was stored.
    """

    def __init__(self) -> None:
        self._items: list[Any] = []  # own copies of the last conversation handed over
        self._lengths: list[int] = []  # sorted lengths that have a head
        self._heads: dict[int, str] = {}
        self._segments: dict[str, tuple[str | None, list[Any]]] = {}
        self._seeded: tuple[str, int, str] | None = None

    def carry(self) -> dict[str, Any] | None:
        """The last conversation handed over, as a reference for a run's next segment: its
        chain ``head`` in the store, ``length`` and content ``digest`` (see :meth:`seed`)."""
        if not self._items:
            return None
        length = len(self._items)
        head = self._heads.get(length)
        if head is None:
            return None
        return {"head": head, "length": length, "digest": digest(canonical_json(self._items))}

    def split(self, items: Sequence[Any]) -> dict[str, Any]:
        """``items`` as the longest prefix the store holds (its chain ``base``, or None) and
        the ``delta`` after it, without recording anything: what a run's next segment loads
        (``Carried.conversation``)."""
        common = _common_prefix(self._items, items)
        base_len = self._lengths[bisect_right(self._lengths, common) - 1] if self._lengths else 0
        if base_len > common:
            base_len = 0
        base = self._heads.get(base_len)
        if base is None:
            base_len = 0
        return {
            "base": base,
            "length": base_len,
            "delta": json.loads(canonical_json(list(items[base_len:]))),
        }

    def adopt(self, head: str, items: list[Any]) -> None:
        """Start from ``items``, stored in the store under chain ``head`` (loaded by a run's
        continued segment): the next conversation that begins with them sends only the rest."""
        self._items = json.loads(canonical_json(items))
        insort(self._lengths, len(items))
        self._heads[len(items)] = head

    def seed(self, head: str, length: int, digest: str) -> None:
        """Start from a previous segment's last conversation (:meth:`carry`): the first
        conversation handed over that begins with the same ``length`` items (checked by
        ``digest``) is sent as the items after them, not whole."""
        self._seeded = (head, length, digest)

    def _adopt_seed(self, items: Sequence[Any]) -> None:
        head, length, expected = self._seeded or ("", 0, "")
        self._seeded = None
        if len(items) < length:
            return
        encoded = canonical_json(list(items[:length]))
        if digest(encoded) != expected:
            return  # the loop resumed with another conversation: sent whole, as usual
        self._items = json.loads(encoded)
        insort(self._lengths, length)
        self._heads[length] = head

    def reference(self, items: Sequence[Any]) -> TranscriptRef:
        """The (base, delta) form of ``items`` against what earlier steps stored."""
        if self._seeded is not None:
            self._adopt_seed(items)
        common = _common_prefix(self._items, items)
        base_len = self._lengths[bisect_right(self._lengths, common) - 1] if self._lengths else 0
        if base_len > common:  # no head at or below the common prefix
            base_len = 0
        base = self._heads.get(base_len)
        fresh = items[base_len:]
        encoded = canonical_json(list(fresh))
        delta: list[Any] = json.loads(encoded)  # the copies kept (and sent) for these items
        head = digest(segment_bytes(base, encoded)) if delta or base is None else base
        if len(items) not in self._heads:
            insort(self._lengths, len(items))
        self._heads[len(items)] = head
        self._segments.setdefault(head, (base, delta))
        self._items = self._items[:base_len] + delta
        return TranscriptRef(base=base, delta=delta, head=head, length=len(items))

    def segments_for(self, head: str | None) -> dict[str, Any]:
        """Every segment on the chain to ``head``, to re-send inline to a store that lacks it."""
        out: dict[str, Any] = {}
        ref = head
        while ref is not None and ref in self._segments:
            parent, items = self._segments[ref]
            out[ref] = {"parent": parent, "items": items}
            ref = parent
        return out


async def materialize(store: BlobStore, ref: TranscriptRef) -> list[Any]:
    """Step side: store the new segment and return the whole conversation."""
    prefix = await store.load_chain(ref.base)
    if ref.head != ref.base:
        await store.put_segment(ref.base, ref.delta)
    items = prefix + list(ref.delta)
    store.remember(ref.head, items)
    return items


def _common_prefix(mine: Sequence[Any], theirs: Sequence[Any]) -> int:
    """How many leading items two conversations share (by value)."""
    n = min(len(mine), len(theirs))
    if list(mine[:n]) == list(theirs[:n]):  # the usual case: the conversation only grew
        return n
    for i in range(n):
        if mine[i] != theirs[i]:
            return i
    return n
