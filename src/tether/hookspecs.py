"""The pluggy contract between Tether's core and its adapters.

Plugins register through the ``tether`` entry-point group (built-in adapters too). An
entry-point module must import cheaply without its framework installed, so
``tether plugins`` can say what is missing instead of failing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from tether.core.contract import Adapter

if TYPE_CHECKING:
    from tether.conformance_tests.kit import ConformanceKit

hookspec = pluggy.HookspecMarker("tether")
hookimpl = pluggy.HookimplMarker("tether")


@hookspec
def tether_adapter() -> Adapter | None:
    """Return this plugin's adapter, or None when its framework is not installed.

    Called once per plugin manager. Import the framework inside the hook, not at module
    import. A plugin that cannot load should raise :class:`tether.errors.AdapterUnavailable`
    with the install command, which ``tether plugins`` shows.
    """


@hookspec
def tether_framework() -> str | None:
    """Return the top-level module of the framework this plugin adapts (e.g. ``"agents"``).

    Optional. A worker asks for the adapter only when that module is imported in its process
    (the agents it hosts import it), so hosting one framework's agent never imports another
    framework; listing (``tether plugins``) still asks every plugin. Must not import the
    framework. A plugin without this hook is always asked.
    """


@hookspec
def tether_conformance_kit() -> ConformanceKit | None:
    """Return the conformance kit of this plugin's adapter, or None (no kit).

    Called by the conformance suite only (``tether conformance``, ``pytest --tether-adapter``),
    never by workers. The kit builds the framework's agents for the suite's neutral
    scenarios; see :class:`tether.conformance_tests.kit.ConformanceKit`. Import the framework
    inside the hook.
    """
