"""``home`` / ``virtualenv`` / ``venv`` / ``pyhome``: run a vassal with its own virtualenv's packages.

uWSGI embeds one interpreter and points it at the venv (``PYTHONHOME``), so a venv of any
other Python version fails with "No module named 'encodings'". emperor instead runs the
vassal with the venv's own ``bin/python``: the venv's packages, the venv's Python version.
The vassal runtime is pure Python plus the standard library (the C speed-up is skipped
when it was built for another version), so any CPython >= 3.11 can run it.

The emperor's package is loaded from its directory by a short bootstrap (``emperor/_boot.py``)
instead of putting the emperor's ``site-packages`` on ``sys.path``: only ``emperor``
itself becomes importable, and every other module, including the emperor's own
dependencies (psutil, setproctitle ...), comes from the venv or not at all.
"""

from __future__ import annotations

import os
import sys

import emperor

MIN_VERSION = (3, 11)  # pyproject.toml's requires-python

class VenvError(Exception):
    """``home`` does not name a usable virtualenv; the message says what is missing and the fix."""


def package_dir() -> str:
    return os.path.dirname(os.path.abspath(emperor.__file__))


def check(home: str) -> str:
    """The venv's ``bin/python`` (not resolved: through the venv path, so that its prefix is the venv)."""
    home = os.path.abspath(home)
    if not os.path.isdir(home):
        raise VenvError(f"{home} is not a directory")
    if not os.path.isfile(os.path.join(home, "pyvenv.cfg")):
        raise VenvError(f"{home} is not a virtualenv (no pyvenv.cfg): create it with "
                        f"python3 -m venv {home}")
    python = os.path.join(home, "bin", "python")
    if not os.access(python, os.X_OK):
        raise VenvError(f"{home} has no runnable bin/python (broken virtualenv?): recreate it")
    version = venv_version(home)
    if version is not None and version < MIN_VERSION:
        raise VenvError(f"{home}: {refusal(version)}")
    return python


def venv_version(home: str) -> tuple[int, ...] | None:
    """The Python version recorded in pyvenv.cfg (``version`` from venv, ``version_info`` from virtualenv)."""
    try:
        with open(os.path.join(home, "pyvenv.cfg"), encoding="utf-8", errors="replace") as f:
            lines = f.read(65536).splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("version", "version_info"):
            parts = value.strip().split(".")[:3]
            if all(p.isdigit() for p in parts[:2]):
                return tuple(int(p) for p in parts if p.isdigit())
    return None


def refusal(version: tuple[int, ...]) -> str:
    have = ".".join(map(str, version))
    need = ".".join(map(str, MIN_VERSION))
    mine = ".".join(map(str, sys.version_info[:3]))
    return (f"the virtualenv is Python {have}, the vassal runtime needs Python >= {need} (the emperor "
            f"runs {mine}): recreate it with python{need} or newer (python3 -m venv)")


def running_in(home: str) -> bool:
    return os.path.realpath(sys.prefix) == os.path.realpath(home)


def bootstrapped() -> bool:
    """True when this process imported emperor through ``_boot.py`` (it is not on sys.path)."""
    return "BOOTSTRAPPED" in vars(emperor)


def command(python: str) -> list[str]:
    """How to start ``emperor.vassal`` with ``python``: ``-m`` for our own interpreter, else _boot.py."""
    if python == sys.executable and not bootstrapped():
        return [python, "-m", "emperor.vassal"]
    return [python, os.path.join(package_dir(), "_boot.py")]


def self_command() -> list[str]:
    """Re-execute the running vassal the way it was started (a reload)."""
    return command(sys.executable)
