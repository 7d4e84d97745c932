"""Plugin manager factory: discovery through entry points, adapter lookup and listing."""

from __future__ import annotations

import os
import sys
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


def collect(pm: pluggy.PluginManager, *, only_loaded: bool = False) -> PluginReport:
    """Ask the plugins for their adapters.

    ``only_loaded`` skips plugins whose framework (:func:`~tether.hookspecs.tether_framework`)
    is not imported in this process: none of its agents can exist here, and importing a
    framework costs seconds of a worker's start.
    """
    report = PluginReport()
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        if only_loaded and not framework_loaded(plugin):
            continue
        _ask(plugin, name, report)
    return report


def framework_loaded(plugin: object) -> bool:
    """Whether ``plugin``'s framework module is imported (True when it names none)."""
    hook = getattr(plugin, "tether_framework", None)
    if hook is None:
        return True
    try:
        module = hook()
    except Exception:
        return True  # let the adapter hook say what is wrong
    return module is None or module in sys.modules


def _ask(plugin: object, name: str, report: PluginReport) -> None:
    hook = getattr(plugin, "tether_adapter", None)
    if hook is None:
        return
    key = id(plugin)
    if key not in _asked:
        try:
            _asked[key] = (plugin, hook(), None)
        except AdapterUnavailable as exc:
            _asked[key] = (plugin, None, str(exc))
        except Exception as exc:
            _asked[key] = (plugin, None, f"failed to load: {type(exc).__name__}: {exc}")
    _, adapter, why = _asked[key]
    if why is not None:
        report.unavailable[name] = why
    elif adapter is not None:
        report.adapters[adapter.name] = adapter


_asked: dict[int, tuple[object, Adapter | None, str | None]] = {}
"""Each plugin's answer, asked once per process (the plugin is kept so its id stays its own)."""
_extra: list[object] = []


def register_plugin(plugin: object) -> None:
    """Register a plugin object in this process (tests, embedded adapters)."""
    _extra.append(plugin)
    installed.cache_clear()
    _manager.cache_clear()


def plugin_manager() -> pluggy.PluginManager:
    """A new manager with the entry-point plugins and those of :func:`register_plugin`."""
    pm = make_plugin_manager()
    for plugin in _extra:
        if not pm.is_registered(plugin):
            pm.register(plugin)
    return pm


@cache
def _manager() -> pluggy.PluginManager:
    return plugin_manager()


@cache
def installed() -> PluginReport:
    """The adapters of this process (entry points + :func:`register_plugin`), loaded once.

    Loads every plugin's framework: for listing. Hosting an agent uses :func:`loaded`.
    """
    return collect(_manager())


def loaded() -> PluginReport:
    """The adapters whose framework this process has imported (and those naming none).

    What a worker hosts: a Pydantic AI agent's worker never imports the OpenAI Agents SDK.
    """
    return collect(_manager(), only_loaded=True)


def adapter_for(obj: object) -> Adapter:
    """The adapter that claims ``obj``: first among those whose framework is imported (an
    agent's framework is), then among all installed ones."""
    for adapter in loaded().adapters.values():
        if adapter.claims(obj):
            return adapter
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
