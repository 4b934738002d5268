"""Import the WSGI application named by the config (``module``, ``wsgi-file``, ``callable``).

The process environment (``env``), ``chdir`` and ``pythonpath`` are applied first, in the
master, so workers inherit them whether the app is imported before the fork or after it
(``lazy-apps``).
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

WSGIApp = Callable[..., Any]


class AppLoadError(Exception):
    """The application could not be imported; the message carries the traceback's last lines."""


def prepare_process(cfg: Any) -> None:
    """Apply ``env``, ``chdir`` and ``pythonpath`` (in that order, as uWSGI does)."""
    for assignment in cfg.env:
        key, _, value = assignment.partition("=")
        os.environ[key.strip()] = value
    if cfg.chdir:
        try:
            os.chdir(cfg.chdir)
        except OSError as exc:
            raise AppLoadError(f"chdir {cfg.chdir}: {exc.strerror}") from None
        # `module = app` next to the chdir'ed directory must import, as users of uWSGI expect.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
    for pattern in reversed(cfg.pythonpath):
        for path in sorted(glob.glob(pattern)) or [pattern]:
            if path not in sys.path:
                sys.path.insert(0, path)


def describe(cfg: Any) -> str:
    if cfg.wsgi_file:
        return f"wsgi-file {cfg.wsgi_file}"
    return f"module {cfg.module}" if cfg.module else "no application"


def load(cfg: Any) -> WSGIApp:
    if not cfg.module and not cfg.wsgi_file:
        raise AppLoadError("no application configured: set module or wsgi-file")
    try:
        if cfg.wsgi_file:
            path = os.path.abspath(cfg.wsgi_file)
            name = "emperor_wsgi_file_" + "".join(c if c.isalnum() else "_" for c in path)
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise AppLoadError(f"wsgi-file {path}: not a loadable Python file")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            attr = cfg.callable
        else:
            modname, _, attr = cfg.module.partition(":")
            if modname.endswith(".py"):
                return load(_FileCfg(modname, attr or cfg.callable))
            mod = importlib.import_module(modname)
            attr = attr or cfg.callable
    except AppLoadError:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = "".join(traceback.format_exception(exc)[-6:]).rstrip()
        raise AppLoadError(f"cannot import {describe(cfg)}:\n{tb}") from None
    app: Any = mod
    for part in attr.split("."):
        app = getattr(app, part, None)
        if app is None:
            raise AppLoadError(f"{describe(cfg)} has no callable {attr!r}")
    if not callable(app):
        raise AppLoadError(f"{describe(cfg)}: {attr!r} is not callable")
    return app  # type: ignore[no-any-return]


class _FileCfg:
    """``module = path/app.py[:callable]`` is the same as ``wsgi-file``."""

    def __init__(self, path: str, attr: str) -> None:
        self.wsgi_file, self.callable, self.module = path, attr, None
