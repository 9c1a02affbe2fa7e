"""The one registry of plug-ins: methods and protocols, filled before anything reads it.

A method or protocol file registers its class with @METHODS.register / @PROTOCOLS.register (re-exported
as `register` by suite.methods and suite.protocols). The first read of either registry imports the
built-in files and then the modules named in $BPB_PLUGINS (comma-separated, on the Python path), so
whichever module a program imports first, every reader sees every plug-in: in the CLIs and in every
Ray worker alike. Readers ask the registry each time, so a class registered later (a test, a
notebook) is seen too. This module imports no other module of the suite: the plug-in files import
it, never the other way round, so registration creates no import circle.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

BUILTIN = ("suite.methods.sgd", "suite.methods.bbb", "suite.methods.sparse_vd", "suite.methods.l0",
           "suite.methods.bc_gnj", "suite.methods.bc_ghs",
           "suite.protocols.oneshot", "suite.protocols.finetune", "suite.protocols.natural",
           "suite.protocols.gradual", "suite.protocols.gradual_train",
           "suite.protocols.iterative")


class Registry(Mapping[str, Any]):
    """name -> class, listed in the classes' own `order` (errors, --help, docs) whatever order their
    files are imported in."""

    def __init__(self, kind: str):
        self.kind, self._classes = kind, {}

    def register(self, cls):
        """Class decorator: make `cls` available as `<kind>: <cls.name>` in configs and grids."""
        old = self._classes.get(cls.name)
        if old is not None and old is not cls:
            raise ValueError(f"{self.kind} {cls.name!r} is registered twice ({old.__qualname__}, {cls.__qualname__})")
        self._classes[cls.name] = cls
        self._classes = {c.name: c for c in sorted(self._classes.values(), key=lambda c: (c.order, c.name))}
        return cls

    def unregister(self, name: str) -> None:
        """Remove a class registered at run time (a test's plug-in)."""
        self._classes.pop(name, None)

    def __getitem__(self, name: str):
        load()
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        load()
        return iter(list(self._classes))

    def __len__(self) -> int:
        load()
        return len(self._classes)


METHODS = Registry("method")
PROTOCOLS = Registry("protocol")
_loaded = False


def plugin_modules() -> list[str]:
    """The modules named in $BPB_PLUGINS."""
    return [m.strip() for m in os.environ.get("BPB_PLUGINS", "").split(",") if m.strip()]


def load() -> None:
    """Import the built-in plug-ins, then $BPB_PLUGINS, once. A plug-in file that reads a registry
    while it is imported sees the built-ins (they come first); a failed import is raised, and the
    next read tries again rather than working on with a registry that lacks it."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    try:
        for module in (*BUILTIN, *plugin_modules()):
            importlib.import_module(module)
    except BaseException:
        _loaded = False
        raise
