"""Pruning protocols as plug-ins: base.py (interface and registry), one file per protocol.

Importing this package registers the built-in protocols. A user's protocol file is named in
$BPB_PLUGINS like a method's: suite.methods imports those modules, and this package imports
suite.methods, so it is registered in the CLIs and in every Ray worker alike.
"""
from __future__ import annotations

from . import finetune, gradual, iterative, natural, oneshot  # noqa: F401  (registration side effect; listed by each protocol's `order`)
from .base import PROTOCOLS, Protocol, register

__all__ = ["PROTOCOLS", "Protocol", "register"]
