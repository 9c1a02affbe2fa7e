"""The method registry: name -> Method subclass. A method file registers itself with @register."""
from __future__ import annotations

from .base import Method

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` available as `method: <cls.name>` in configs and grids."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} is registered twice ({METHODS[cls.name].__qualname__}, {cls.__qualname__})")
    METHODS[cls.name] = cls
    # listed (errors, --help, docs/fields.md) in the methods' own `order`, whatever order their files are imported in
    ordered = sorted(METHODS.values(), key=lambda c: (c.order, c.name))
    METHODS.clear()
    METHODS.update({c.name: c for c in ordered})
    return cls
