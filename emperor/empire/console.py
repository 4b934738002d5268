"""Moved to ``emperor/empire/operator.py`` (issue 9); this name stays for imports written before."""

from emperor.empire.operator import BootError, Operator

Console = Operator

__all__ = ["BootError", "Console", "Operator"]
