"""Compression methods as plug-ins: base.py (interface), registry.py, one file per method.

Importing this package registers the built-in methods, then (through suite.protocols, imported
last) the built-in protocols and the modules named in $BPB_PLUGINS (suite/plugins.py), so a user's
own method file is registered in the CLIs and in every Ray worker on the machine alike; build(cfg)
makes the model.
"""
from __future__ import annotations

from . import bbb, l0, sgd, sparse_vd  # noqa: F401  (registration side effect; listed by each method's `order`)
from .base import KLParams, Method, Params, Segment, make_layout
from .registry import METHODS, register

__all__ = ["METHODS", "KLParams", "Method", "Params", "Segment", "build", "make_layout", "register"]


def build(cfg) -> Method:
    """The model a TrialConfig asks for (on CPU; the caller moves it)."""
    return METHODS[cfg.method](cfg)


# last: the protocols build on this package, and they load $BPB_PLUGINS once both registries exist
from .. import protocols  # noqa: E402, F401
