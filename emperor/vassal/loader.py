"""Import the application named by the config (``module``, ``wsgi-file``, ``asgi``, ``callable``).

An application of the wrong kind (an ASGI app given to ``module``, a WSGI app given to
``asgi``) is refused here, at load, with a message naming the right key: served through the
wrong interface it would boot, say "ready" and then fail every request.

The process environment (``env``), ``chdir`` and ``pythonpath`` are applied first, in the
master, so workers inherit them whether the app is imported before the fork or after it
(``lazy-apps``).
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from emperor.config import Config

WSGIApp = Callable[..., Any]


class AppKeys(Protocol):
    """The keys that name the application: a vassal's config (emperor/config_view.py), or the
    ``_FileCfg`` a ``module = path/app.py`` becomes."""

    module: str | None
    wsgi_file: str | None
    callable: str
    asgi: str | None


class AppLoadError(Exception):
    """The application could not be imported; the message carries the traceback's last lines."""


def prepare_process(cfg: Config) -> None:
    """Check the ASGI keys, then apply ``env``, ``chdir`` and ``pythonpath`` (in that order, as uWSGI)."""
    check_asgi_config(cfg)
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


def check_asgi_config(cfg: Config) -> None:
    """Combinations an ASGI vassal refuses, with the reason (before anything is imported)."""
    if not cfg.asgi:
        return
    where = cfg.where("asgi")
    if cfg.module or cfg.wsgi_file:
        other = "module" if cfg.module else "wsgi-file"
        raise AppLoadError(f"{where}: asgi and {other} are both set: a vassal serves one application, "
                           "either ASGI (asgi =) or WSGI (module = / wsgi-file =)")
    if cfg.threads > 1:
        raise AppLoadError(f"{cfg.where('threads')}: threads = {cfg.threads} is not supported with asgi: "
                           "an ASGI worker serves many requests at once on its event loop; set "
                           "asgi-concurrency (requests in flight per worker) and processes instead")
    if cfg.asgi_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise AppLoadError(f"{cfg.where('asgi-loop')}: asgi-loop = uvloop but uvloop is not installed "
                           "(pip install emperor[asgi]), or use asgi-loop = auto")


def describe(cfg: AppKeys) -> str:
    if getattr(cfg, "asgi", None):
        return f"asgi {cfg.asgi}"
    if cfg.wsgi_file:
        return f"wsgi-file {cfg.wsgi_file}"
    return f"module {cfg.module}" if cfg.module else "no application"


def load(cfg: AppKeys) -> WSGIApp:
    """Import the application and check that it is of the kind its key says (WSGI or ASGI)."""
    if getattr(cfg, "asgi", None):
        target = _FileCfg(None, "", cfg.asgi, cfg.callable)
        target.asgi = cfg.asgi  # so that errors say "asgi ...", not "module ..."
        app = _import(target)
        if kind(app) == "wsgi":
            raise AppLoadError(f"asgi {cfg.asgi} is a WSGI application ({_signature(app)}): load it "
                               f"with `module = {cfg.asgi}` instead of asgi")
        return app
    app = _import(cfg)
    if kind(app) == "asgi":
        given = cfg.module or cfg.wsgi_file
        raise AppLoadError(f"{describe(cfg)} is an ASGI application ({_signature(app)}): load it with "
                           f"`asgi = {given}` instead of {'module' if cfg.module else 'wsgi-file'}")
    return app


def kind(app: Any) -> str | None:
    """``"asgi"`` or ``"wsgi"`` when the callable's signature says so clearly, else None.

    ASGI 3: a coroutine function (or an object whose ``__call__`` is one) taking
    (scope, receive, send). WSGI: a plain callable taking (environ, start_response). Anything
    else (``*args`` wrappers, partials of unknown shape) is not judged: the app is loaded as
    its key says.
    """
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else _dunder_call(app)
    if call is None or inspect.isclass(app):
        return None
    try:
        params = list(inspect.signature(app).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    required = [p for p in positional if p.default is p.empty]
    is_async = inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(app)
    if is_async and len(required) <= 3 <= len(positional):
        return "asgi"
    if not is_async and len(required) == 2 and not inspect.isgeneratorfunction(call) \
            and not inspect.isasyncgenfunction(call):
        return "wsgi"
    return None


def _signature(app: Any) -> str:
    try:
        sig = str(inspect.signature(app))
    except (TypeError, ValueError):
        sig = "(...)"
    is_async = inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(_dunder_call(app))
    return f"{'async ' if is_async else ''}def __call__{sig}"


def _dunder_call(app: Any) -> Any:
    """The ``__call__`` defined by the app's class (what ``app(...)`` runs), or None."""
    return vars(type(app)).get("__call__") or next(
        (vars(k)["__call__"] for k in type(app).__mro__ if "__call__" in vars(k)), None)


def _import(cfg: AppKeys) -> WSGIApp:
    if not cfg.module and not cfg.wsgi_file:
        raise AppLoadError("no application configured: set module, wsgi-file or asgi")
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
            modname, _, attr = (cfg.module or "").partition(":")  # set: checked above
            if modname.endswith(".py"):
                return _import(_FileCfg(modname, attr or cfg.callable))
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
    """``module = path/app.py[:callable]`` is the same as ``wsgi-file``; ``asgi`` imports like ``module``."""

    def __init__(self, path: str | None, attr: str, module: str | None = None, callable: str = "") -> None:
        self.wsgi_file, self.callable, self.module = path, attr or callable, module
        self.asgi: str | None = None


def failing_app(message: str) -> WSGIApp:
    """need-app = false: answer 500 and say why, instead of refusing to start."""
    body = f"application not loaded: {message.splitlines()[0]}\n".encode()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain"),
                                                     ("Content-Length", str(len(body)))])
        return [body]

    return app
