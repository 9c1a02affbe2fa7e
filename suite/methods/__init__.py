"""Compression methods as plug-ins: base.py (the interface), one file per method, registered in
suite/registry.py (the built-ins and $BPB_PLUGINS load on the registry's first read); build(cfg)
makes the model."""
from __future__ import annotations

from ..params import Params
from ..registry import METHODS
from .base import KLParams, Method, Segment, make_layout

register = METHODS.register

__all__ = ["METHODS", "KLParams", "Method", "Params", "Segment", "build", "make_layout", "register"]


def build(cfg) -> Method:
    """The model a TrialConfig asks for (on CPU; the caller moves it)."""
    return METHODS[cfg.method](cfg)
