"""Pruning protocols as plug-ins: base.py (the interface), one file per protocol, registered in
suite/registry.py (the built-ins and $BPB_PLUGINS load on the registry's first read)."""
from __future__ import annotations

from ..params import Params
from ..registry import PROTOCOLS
from .base import Protocol

register = PROTOCOLS.register

__all__ = ["PROTOCOLS", "Params", "Protocol", "register"]
