"""Params: the base of a plug-in's own settings, shared by methods and protocols.

A method or a protocol declares its settings as a frozen dataclass subclass: one field per setting,
each with a one-line docstring below it (it becomes --help and docs/fields.md's field table), and
check() for ranges. TrialConfig routes the flat keys of YAML, the CLI and MLflow params to the
method's and the protocol's Params, so a setting is named once, where it is used.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Params:
    """No settings. Subclasses add one field per setting with a one-line docstring below each."""

    def check(self, fail) -> None:
        """Range checks; fail(field, value, allowed) raises the ConfigError."""
