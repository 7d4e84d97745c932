"""What a run shows outside itself: search attributes, memo and the Temporal UI's summary.

Three Keyword search attributes make runs findable in ``temporal workflow list`` and the
Temporal UI and let ``tether runs list`` filter cheaply: ``TetherAgent``,
``TetherAdapter`` and ``TetherPhase`` (``running``, ``waiting``, ``completed``, ``failed``,
``cancelled``; kept current by the run itself). Custom search attributes must be registered
on the server first: the embedded engine registers them at start; on a cluster run
``tether runs setup`` (or ``temporal operator search-attribute create``). Until they are,
runs are started without them (the memo carries agent and adapter) and a one-time hint says
how to register them.
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import Mapping
from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

AGENT = SearchAttributeKey.for_keyword("TetherAgent")
ADAPTER = SearchAttributeKey.for_keyword("TetherAdapter")
PHASE = SearchAttributeKey.for_keyword("TetherPhase")
KEYS = (AGENT, ADAPTER, PHASE)
NAMES = tuple(k.name for k in KEYS)

PHASES = ("running", "waiting", "completed", "failed", "cancelled")

log = logging.getLogger("tether")

_registered: dict[tuple[str, str], bool] = {}
_hinted: set[tuple[str, str]] = set()


def register_command(namespace: str, address: str | None = None) -> str:
    """The ``temporal`` CLI command that registers Tether's search attributes."""
    where = f" --address {address}" if address else ""
    names = " ".join(f"--name {n}" for n in NAMES)
    return (
        f"temporal operator search-attribute create{where} --namespace {namespace} "
        f"{names} --type Keyword"
    )


def dev_server_flags() -> list[str]:
    """``temporal server start-dev`` flags registering the attributes at start."""
    flags: list[str] = []
    for name in NAMES:
        flags += ["--search-attribute", f"{name}=Keyword"]
    return flags


async def registered(client: Any, *, refresh: bool = False) -> bool:
    """Whether the namespace of ``client`` has Tether's search attributes (checked once)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    key = (client.service_client.config.target_host, client.namespace)
    if key in _registered and not refresh:
        return _registered[key]
    try:
        resp = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace), retry=True
        )
        have = dict(resp.custom_attributes)
        ok = all(have.get(n) == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for n in NAMES)
    except Exception:
        # Temporal Cloud's API keys may not reach the operator service: treat as absent.
        ok = False
    if not ok and key[0].split(":")[0] in ("127.0.0.1", "localhost", "::1", "[::1]"):
        # A local dev server whose state predates them (`start-dev --search-attribute`
        # registers them only in a new database): register them now.
        try:
            await register(client)
            ok = True
        except Exception:
            ok = False
    _registered[key] = ok
    if not ok and key not in _hinted:
        _hinted.add(key)
        log.warning(
            "tether: hint: the search attributes TetherAgent, TetherAdapter and TetherPhase "
            f"are not registered in namespace {client.namespace!r}, so runs carry agent and "
            "adapter in their memo only and `tether runs list --status waiting/--agent` read "
            "each run. Fix: `tether runs setup` (or "
            f"`{register_command(client.namespace)}`)"
        )
    return ok


def forget(client: Any) -> None:
    """Drop the cached answer for ``client``'s namespace (after registering)."""
    _registered.pop((client.service_client.config.target_host, client.namespace), None)


async def register(client: Any) -> list[str]:
    """Register the missing attributes; returns the names added."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    resp = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace), retry=True
    )
    missing = [n for n in NAMES if n not in resp.custom_attributes]
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={n: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for n in missing},
            )
        )
    forget(client)
    return missing


def started_by(client: Any) -> str:
    identity = str(getattr(client, "identity", "") or "")
    if identity:
        return identity
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "unknown"


def start_options(
    client: Any, *, agent: str, adapter: str, with_attributes: bool
) -> dict[str, Any]:
    """Memo, search attributes and UI summary/details for starting a run of ``agent``."""
    who = started_by(client)
    memo: Mapping[str, Any] = {"agent": agent, "adapter": adapter, "started_by": who}
    options: dict[str, Any] = {
        "memo": dict(memo),
        "static_summary": f"{adapter}: {agent}",
        "static_details": (
            f"**agent** {agent}  \n**adapter** {adapter}  \n**started by** {who}  \n"
            f"Operate it: `tether runs show|follow|cancel|retry <id>`"
        ),
    }
    if with_attributes:
        options["search_attributes"] = TypedSearchAttributes(
            [
                SearchAttributePair(AGENT, agent),
                SearchAttributePair(ADAPTER, adapter),
                SearchAttributePair(PHASE, "running"),
            ]
        )
    return options
