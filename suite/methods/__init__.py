"""Compression methods as plug-ins: base.py (interface), registry.py, one file per method.

Importing this package registers the built-in methods, then imports the modules named in
$BPB_PLUGINS (comma-separated module names on the Python path), so a user's own method file is
registered in the CLIs and in every Ray worker on the machine alike; build(cfg) makes the model.
"""
from __future__ import annotations

import importlib
import os

from . import bbb, l0, sgd, sparse_vd  # noqa: F401  (registration side effect; listed by each method's `order`)
from .base import KLParams, Method, Params, Segment, make_layout
from .registry import METHODS, register

for _module in filter(None, (m.strip() for m in os.environ.get("BPB_PLUGINS", "").split(","))):
    importlib.import_module(_module)

__all__ = ["METHODS", "KLParams", "Method", "Params", "Segment", "build", "make_layout", "register"]


def build(cfg) -> Method:
    """The model a TrialConfig asks for (on CPU; the caller moves it)."""
    return METHODS[cfg.method](cfg)
