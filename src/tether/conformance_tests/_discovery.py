"""Finding conformance kits among the installed ``tether`` plugins."""

from __future__ import annotations

from tether.conformance_tests.kit import ConformanceKit
from tether.errors import ConfigurationError


def kits() -> tuple[dict[str, ConformanceKit], dict[str, str]]:
    """Kits by adapter name, and plugins whose kit could not load (name -> why)."""
    from tether.plugins import plugin_manager

    pm = plugin_manager()
    found: dict[str, ConformanceKit] = {}
    broken: dict[str, str] = {}
    for plugin in pm.get_plugins():
        hook = getattr(plugin, "tether_conformance_kit", None)
        if hook is None:
            continue
        name = pm.get_name(plugin) or repr(plugin)
        try:
            kit = hook()
        except Exception as exc:
            broken[name] = f"{type(exc).__name__}: {exc}"
            continue
        if kit is not None:
            found[kit.adapter_name] = kit
    return found, broken


def find_kit(adapter: str) -> ConformanceKit:
    """The kit of ``adapter``; a clear error naming the installed kits otherwise."""
    found, broken = kits()
    if adapter in found:
        return found[adapter]
    have = ", ".join(sorted(found)) or "none"
    why = "".join(f"; {name}: {reason}" for name, reason in broken.items())
    raise ConfigurationError(
        f"no conformance kit for adapter {adapter!r} (kits installed: {have}{why}). Fix: "
        "implement the tether_conformance_kit hook in the adapter's plugin and install it "
        "(its `tether` entry point), or name one of the installed adapters."
    )


def load_plugins(spec: str | None) -> None:
    """Register extra plugin objects named ``module:attr[,module:attr]`` (tests, examples)."""
    if not spec:
        return
    from tether.cli import load_object
    from tether.plugins import register_plugin

    for item in spec.split(","):
        if item.strip():
            register_plugin(load_object(item.strip()))
