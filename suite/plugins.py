"""$BPB_PLUGINS: comma-separated module names on the Python path, imported once the method and the
protocol registries are complete, so a user's file may register methods and protocols alike and
import either package first. suite.protocols calls load() last, and suite.methods imports
suite.protocols last, so importing either loads them: in the CLIs and in every Ray worker alike."""
from __future__ import annotations

import importlib
import os


def load() -> None:
    for module in filter(None, (m.strip() for m in os.environ.get("BPB_PLUGINS", "").split(","))):
        importlib.import_module(module)
