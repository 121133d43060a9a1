"""The registry of stream factories that source packages fill.

The core (`ingest/`) never imports `receivers/` or `direct/`: they sit above it
and import it. So that `ssc.socket_text_stream(...)` still works with nothing
but `from ingest import StreamingContext`, each source package has a `plugin`
module that registers its factories here when imported, and the registry
imports the source packages it lacks the first time a factory is looked up.

Which modules it imports: those of the Python entry points in group
`ingest.sources` (declared in pyproject.toml; other distributions can add
sources the same way), plus `BUILTIN_SOURCE_MODULES`, which ship in this
distribution and are loaded even when its installed metadata predates the
entry points (an editable install made before they were declared). A look-up
loads the built-in modules first and reads the entry points only for a name
they do not provide, so a job using built-in sources never scans the installed
distributions. The plugin modules are light: they register factories that
import their stream's implementation when first called.

A factory is called as `factory(ssc, *args, **kwargs)` and returns a DStream.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from ingest.errors import ConfigError

if TYPE_CHECKING:
    from ingest.dstream import DStream

log = logging.getLogger("ingest.sources")

ENTRY_POINT_GROUP = "ingest.sources"

BUILTIN_SOURCE_MODULES: tuple[str, ...] = ("receivers.plugin", "direct.plugin")
"""The source packages of this distribution; tests check that pyproject.toml
declares exactly these as entry points of `ENTRY_POINT_GROUP`."""

StreamFactory = Callable[..., "DStream[Any]"]


class ReceiverLike(Protocol):
    """What the core needs to know of a receiver (`receivers.Receiver`): a name
    and a start/stop lifecycle. The receiver package checks the real type."""

    name: str

    def on_start(self) -> None: ...

    def on_stop(self) -> None: ...


_factories: dict[str, StreamFactory] = {}
_lock = threading.Lock()  # guards _factories; never held while importing
# Serializes loading. Separate from _lock: a plugin imported by another thread
# registers (takes _lock) while holding its module's import lock, which this
# thread may be waiting for.
_load_lock = threading.RLock()  # re-entrant: a plugin may look up another factory while it loads
_loaded: set[str] = set()
_failed: dict[str, str] = {}


def register_stream_factory(name: str, factory: StreamFactory) -> None:
    """Make `factory(ssc, ...)` the stream factory called `name`.

    Registering the same function again is a no-op (a module imported twice);
    another factory under a taken name is refused, so two packages cannot
    silently replace each other's sources."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_stream_factory: the name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise ConfigError(f"register_stream_factory({name!r}): the factory must be callable, got "
                          f"{type(factory).__name__}")
    with _lock:
        old = _factories.get(name)
        if old is not None and old is not factory and _qualname(old) != _qualname(factory):
            raise ConfigError(f"stream factory {name!r} is already registered by {_qualname(old)}; "
                              f"{_qualname(factory)} cannot take its name: register it under another one")
        _factories[name] = factory


def stream_factory(name: str) -> StreamFactory:
    """The factory registered as `name`, loading the source packages first if
    it is not registered yet. Raises `ConfigError` when no package provides it."""
    with _lock:
        factory = _factories.get(name)
    # The built-in sources first: they cost no scan of the installed distributions'
    # entry points, which only a name none of them provides needs.
    for modules in (BUILTIN_SOURCE_MODULES, None):
        if factory is not None:
            break
        load_source_packages(modules)
        with _lock:
            factory = _factories.get(name)
    if factory is None:
        failed = "".join(f"; {module} failed to import: {why}" for module, why in sorted(_failed.items()))
        raise ConfigError(
            f"no stream factory named {name!r} is registered (known: {sorted(_factories) or 'none'}; source "
            f"modules loaded: {sorted(_loaded) or 'none'}{failed}). Install the package that provides it, or "
            "import its plugin module (which calls ingest.sources.register_stream_factory) before using it")
    return factory


def registered_stream_factories() -> dict[str, StreamFactory]:
    """Every factory registered so far, after loading the source packages."""
    load_source_packages()
    with _lock:
        return dict(_factories)


def source_modules() -> tuple[str, ...]:
    """The modules to import: the entry points' (in name order), then the built-in
    ones not among them."""
    # Imported here: importlib.metadata costs ~25 ms to import and scanning every
    # installed distribution more, which a job using only built-in sources skips.
    from importlib import metadata

    try:
        points = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    except Exception as exc:  # noqa: BLE001 - broken metadata of some distribution must not hide the built-ins
        log.warning("reading the %s entry points failed (%s: %s); using the built-in sources only",
                    ENTRY_POINT_GROUP, type(exc).__name__, exc)
        points = []
    modules = [ep.value.split(":", 1)[0].strip() for ep in points]
    return tuple(dict.fromkeys([*modules, *BUILTIN_SOURCE_MODULES]))


def load_source_packages(modules: Iterable[str] | None = None) -> list[str]:
    """Import each source module (default: `source_modules()`) not imported yet;
    returns those newly loaded. A module that fails to import is logged and
    remembered (named by `stream_factory`'s error), not raised: one broken
    third-party source must not take the others down."""
    newly = []
    with _load_lock:
        for module in (source_modules() if modules is None else tuple(modules)):
            if module in _loaded or module in _failed:
                continue
            try:
                importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001 - reported when a factory it should provide is missing
                _failed[module] = f"{type(exc).__name__}: {exc}"
                log.warning("source module %s failed to import: %s: %s", module, type(exc).__name__, exc)
                continue
            _loaded.add(module)
            newly.append(module)
    return newly


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


__all__ = [
    "BUILTIN_SOURCE_MODULES", "ENTRY_POINT_GROUP", "ReceiverLike", "StreamFactory",
    "load_source_packages", "register_stream_factory", "registered_stream_factories", "source_modules",
    "stream_factory",
]
