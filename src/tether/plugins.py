"""Plugin manager factory: discovery through entry points, adapter lookup and listing."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points

import pluggy

from tether import hookspecs
from tether.core.contract import Adapter
from tether.errors import AdapterUnavailable, NoAdapterError

GROUP = "tether"


@dataclass
class PluginReport:
    """What loading the installed plugins found."""

    adapters: dict[str, Adapter] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Plugin name -> why it is not usable (framework missing, import error)."""


def make_plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A new manager with the ``tether`` hooks; ``TETHER_DISABLE_PLUGINS=1`` skips discovery."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if load_entrypoints and os.environ.get("TETHER_DISABLE_PLUGINS") != "1":
        for ep in entry_points(group=GROUP):
            if pm.has_plugin(ep.name):
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # a broken third-party plugin must not kill the worker
                warnings.warn(f"tether plugin {ep.name!r} failed to import: {exc}", stacklevel=2)
    pm.check_pending()
    return pm


def collect(pm: pluggy.PluginManager) -> PluginReport:
    """Ask every plugin for its adapter."""
    report = PluginReport()
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        hook = getattr(plugin, "tether_adapter", None)
        if hook is None:
            continue
        try:
            adapter = hook()
        except AdapterUnavailable as exc:
            report.unavailable[name] = str(exc)
            continue
        except Exception as exc:
            report.unavailable[name] = f"failed to load: {type(exc).__name__}: {exc}"
            continue
        if adapter is not None:
            report.adapters[adapter.name] = adapter
    return report


_extra: list[object] = []


def register_plugin(plugin: object) -> None:
    """Register a plugin object in this process (tests, embedded adapters)."""
    _extra.append(plugin)
    installed.cache_clear()


def plugin_manager() -> pluggy.PluginManager:
    """A new manager with the entry-point plugins and those of :func:`register_plugin`."""
    pm = make_plugin_manager()
    for plugin in _extra:
        if not pm.is_registered(plugin):
            pm.register(plugin)
    return pm


@cache
def installed() -> PluginReport:
    """The adapters of this process (entry points + :func:`register_plugin`), loaded once."""
    return collect(plugin_manager())


def adapter_for(obj: object) -> Adapter:
    """The adapter that claims ``obj``."""
    report = installed()
    for adapter in report.adapters.values():
        if adapter.claims(obj):
            return adapter
    raise NoAdapterError(obj, sorted(report.adapters), sorted(report.unavailable))


def adapter_named(name: str) -> Adapter:
    report = installed()
    try:
        return report.adapters[name]
    except KeyError:
        raise NoAdapterError(name, sorted(report.adapters), sorted(report.unavailable)) from None
