"""Pruning protocols as plug-ins: base.py (interface and registry), one file per protocol.

Importing this package (or suite.methods, which imports it) registers the built-in protocols, then
imports the modules named in $BPB_PLUGINS (suite/plugins.py): a user's protocol file is named there
like a method's, and is registered in the CLIs and in every Ray worker alike.
"""
from __future__ import annotations

from .. import plugins
from . import finetune, gradual, iterative, natural, oneshot  # noqa: F401  (registration side effect; listed by each protocol's `order`)
from .base import PROTOCOLS, Protocol, register

__all__ = ["PROTOCOLS", "Protocol", "register"]

plugins.load()  # last: a plug-in may import both registries
