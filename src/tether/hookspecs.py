"""The pluggy contract between Tether's core and its adapters.

Plugins register through the ``tether`` entry-point group (built-in adapters too). An
entry-point module must import cheaply without its framework installed, so
``tether plugins`` can say what is missing instead of failing.
"""

from __future__ import annotations

import pluggy

from tether.core.contract import Adapter

hookspec = pluggy.HookspecMarker("tether")
hookimpl = pluggy.HookimplMarker("tether")


@hookspec
def tether_adapter() -> Adapter | None:
    """Return this plugin's adapter, or None when its framework is not installed.

    Called once per plugin manager. Import the framework inside the hook, not at module
    import. A plugin that cannot load should raise :class:`tether.errors.AdapterUnavailable`
    with the install command, which ``tether plugins`` shows.
    """
