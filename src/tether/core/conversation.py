"""History-linear transport of a conversation across steps.

The run side keeps the conversation the framework hands it, and for each step computes
a reference (the longest already-stored prefix) plus the items after it. References are
content hashes, computed without I/O, so the run stays deterministic; the step writes
the new segment. A model step's input therefore holds only what changed since the last
step, whatever the conversation's length.
"""

from __future__ import annotations

import asyncio
import json
from bisect import bisect_right, insort
from collections.abc import Sequence
from typing import Any

from tether.core.contract import TranscriptRef
from tether.core.store import BlobStore, canonical_json, digest, segment_bytes


class _Lane:
    """One conversation's record: own copies of its items, and heads of its prefixes."""

    def __init__(self, offset: int = 0, head: str | None = None) -> None:
        self.offset = offset  # items before ``items``, stored under ``head``
        self.items: list[Any] = []
        # Heads of prefixes of ``items`` (absolute lengths, sorted); a head of an earlier
        # conversation is dropped when the conversation changes under it.
        self.lengths: list[int] = [offset] if head is not None else []
        self.heads: dict[int, str] = {offset: head} if head is not None else {}

    def base(self, items: Sequence[Any]) -> tuple[int, int, str | None]:
        """``(common, base_len, base)``: how many leading items (counting the offset)
        ``items`` share with the last conversation, the longest of those with a head, and
        that head (absolute lengths)."""
        common = self.offset + _common_prefix(self.items, items)
        at = bisect_right(self.lengths, common) - 1
        base_len = self.lengths[at] if at >= 0 else 0
        return common, base_len, self.heads.get(base_len)


class Transcript:
    """Run-side record of what the store holds (one per run; in workflow memory).

    Each step costs what its new items cost, not what the conversation costs: the common
    prefix with the previous step's conversation is found by comparing values (C-level
    equality, stopping at the first difference) against this record's own copies, and only
    the new items are serialized and hashed. The copies are taken once per item, so a
    framework that mutates an item after handing it over cannot change what was stored.

    Conversations are kept in two lanes: the loop's own (handed over with ``prefixed=True``)
    and any other (a nested agent's), so one interleaving with the other costs nothing. A
    run's continued segment may hold only the *tail* of its loop's conversation: the items
    before it stay in the store, as a chain head of known length (:meth:`adopt_prefix`); the
    loop's references chain from it and their lengths count it, so a step's worker reads
    the whole conversation while the run holds the tail.
    """

    def __init__(self) -> None:
        self._lanes = {True: _Lane(), False: _Lane()}
        self.prefix_head: str | None = None
        """The chain head of the items before the loop's conversation (see adopt_prefix)."""
        self._last = self._lanes[False]
        self._segments: dict[str, tuple[str | None, list[Any]]] = {}
        self._seeded: tuple[str, int, str] | None = None

    @property
    def prefix_length(self) -> int:
        """How many items precede the loop's conversation (0 when the run holds it whole)."""
        return self._lanes[True].offset

    def carry(self) -> dict[str, Any] | None:
        """The last conversation handed over, as a reference for a run's next segment: its
        chain ``head`` in the store, ``length`` and content ``digest`` (see :meth:`seed`)."""
        lane = self._last
        if not lane.items or lane.offset:
            return None
        length = len(lane.items)
        head = lane.heads.get(length)
        if head is None:
            return None
        return {"head": head, "length": length, "digest": digest(canonical_json(lane.items))}

    def split(self, items: Sequence[Any], *, prefixed: bool = False) -> dict[str, Any]:
        """``items`` as the longest prefix the store holds (its chain ``base``, or None, of
        ``length`` items) and the ``delta`` after it, without recording anything: what a
        run's next segment loads (``Carried.conversation``)."""
        lane = self._lanes[prefixed]
        _, base_len, base = lane.base(items)
        return {
            "base": base,
            "length": base_len,
            "delta": json.loads(canonical_json(list(items[base_len - lane.offset :]))),
        }

    def adopt(self, head: str, items: list[Any]) -> None:
        """Start from ``items``, stored in the store under chain ``head`` (loaded by a run's
        continued segment): the next conversation that begins with them sends only the rest,
        in either lane."""
        mine = json.loads(canonical_json(items))  # one copy: lanes replace, never mutate
        for lane in self._lanes.values():
            lane.items = mine
            lane.lengths, lane.heads = [len(items)], {len(items): head}

    def adopt_prefix(self, head: str, length: int) -> None:
        """Hold the loop's conversation's tail only: its first ``length`` items are stored
        under chain ``head``. Conversations handed over with ``prefixed=True`` follow them."""
        self._lanes[True] = _Lane(length, head)
        self.prefix_head = head

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
        self.adopt(head, json.loads(encoded))

    def reference(
        self, items: Sequence[Any], *, prefixed: bool = False, frozen: bool = False
    ) -> TranscriptRef:
        """The (base, delta) form of ``items`` against what earlier steps stored.
        ``prefixed``: ``items`` are the loop's own conversation, which follows the stored
        prefix if the run holds its tail only (see :meth:`adopt_prefix`). ``frozen``: the
        caller never changes these items (JSON it made): the record keeps them, not copies,
        and the next call's prefix check passes over the same objects by identity (list
        equality compares identity first) instead of comparing their values."""
        lane = self._lanes[prefixed]
        if self._seeded is not None and not lane.offset:
            self._adopt_seed(items)
        common, base_len, base = lane.base(items)
        # Heads past the common prefix belong to the conversation before this one.
        cut = bisect_right(lane.lengths, common)
        for length in lane.lengths[cut:]:
            del lane.heads[length]
        del lane.lengths[cut:]
        encoded = canonical_json(list(items[base_len - lane.offset :]))
        delta: list[Any] = json.loads(encoded)  # the copies kept (and sent) for these items
        head = digest(segment_bytes(base, encoded)) if delta or base is None else base
        length = lane.offset + len(items)
        if length not in lane.heads:
            insort(lane.lengths, length)
        lane.heads[length] = head
        self._segments.setdefault(head, (base, delta))
        kept = list(items[base_len - lane.offset :]) if frozen else delta
        lane.items = lane.items[: base_len - lane.offset] + kept
        self._last = lane
        return TranscriptRef(base=base, delta=delta, head=head, length=length)

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
    """Step side: the conversation from ``ref.start`` on (the whole of it when 0). Its new
    segment is written by :class:`SegmentWrite`, while the step works."""
    if ref.start > 0:
        return await items_from(store, ref, ref.start)
    items = await store.load_chain(ref.base) + list(ref.delta)
    store.remember(ref.head, items)
    return items


class SegmentWrite:
    """Step side: the write of a step's new transcript segment (``ref.delta`` after
    ``ref.base``), started when the step reads its inputs and awaited before its result is
    recorded (:meth:`stored`). The model request does not wait for it: with a remote store
    the write takes a network round trip, and with a local one a file write (0.5 ms)."""

    def __init__(self, store: BlobStore, ref: TranscriptRef) -> None:
        self._store = store
        self._task: asyncio.Future[str] | None = None
        self._data = b""
        if ref.head != ref.base:
            # Encoded now, before the step's handler gets the items (and may change them).
            self._data = segment_bytes(ref.base, canonical_json(list(ref.delta)))
            self._start()

    def _start(self) -> None:
        task = asyncio.ensure_future(self._store.put_segment(self._data))
        task.add_done_callback(_retrieved)  # a step that failed first never awaits it
        self._task = task

    async def stored(self) -> None:
        """Wait until the segment is in the store; a failed write is tried again (the caller
        retries :class:`~tether.errors.StoreUnavailableError` while the step may)."""
        task = self._task
        if task is None:
            return
        if task.done() and (task.cancelled() or task.exception() is not None):
            self._start()
            task = self._task
            assert task is not None
        await asyncio.shield(task)


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def items_from(store: BlobStore, ref: TranscriptRef, start: int) -> list[Any]:
    """The conversation ``ref`` stands for, from position ``start`` on, reading only the
    stored segments that hold those items."""
    base_len = ref.length - len(ref.delta)
    earlier = await store.load_chain_from(ref.base, base_len, start)
    return earlier + list(ref.delta[max(0, start - base_len) :])


def _common_prefix(mine: Sequence[Any], theirs: Sequence[Any]) -> int:
    """How many leading items two conversations share (by value)."""
    n = min(len(mine), len(theirs))
    if list(mine[:n]) == list(theirs[:n]):  # the usual case: the conversation only grew
        return n
    for i in range(n):
        if mine[i] != theirs[i]:
            return i
    return n
