"""Generate docs/reference/options.md from the option table (``python -m emperor.reference``).

The page is derived, never edited by hand; tests/test_options.py fails when the committed
file differs from what this module produces. The typed config view emperor/config_view.py is
derived the same way (``python -m emperor.reference --config-view``; tests/test_config_view.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from emperor import validators as v
from emperor.options import ALL, BY_NAME, OPTIONS, UNSUPPORTED, Decision, Option, Scope

_TYPES: dict[Callable[[str], Any], str] = {
    v.boolean: "boolean", v.text: "string", v.nonempty: "string", v.seconds: "seconds",
    v.octal_mode: "octal mode", v.spaced: "string", v.log_date: "strftime format or boolean",
    v.env_assignment: "KEY=VALUE", v.python_callable_ref: "module[:callable]",
}
_GROUPS = {
    "config": "Loading configuration", "sockets": "Sockets and the uwsgi protocol",
    "app": "The application", "asgi": "ASGI applications", "processes": "Processes, recycling and reloads",
    "logging": "Logging, pidfiles and process titles", "emperor": "The emperor",
    "daemons": "Companion processes and cron", "cheaper": "Cheaper: an adaptive worker count",
    "compat": "uWSGI options emperor does not implement",
    "http": "HTTP listeners (docs/http.md)", "static": "Static files (docs/http.md)",
}

# uWSGI options seen in real deployments' ini files (issue 11's survey of 110 files, and the
# options those projects' documentation recommends). docs/configuration.md shows the decision
# for each; tests/test_options.py checks that every one has a decision.
REAL_FILE_OPTIONS = (
    "socket", "uwsgi-socket", "module", "wsgi-file", "callable", "chdir", "pythonpath", "env", "master",
    "processes", "workers", "threads", "enable-threads", "single-interpreter", "thunder-lock",
    "lazy-apps", "need-app", "harakiri", "harakiri-verbose", "harakiri-graceful-timeout",
    "max-requests", "max-requests-delta", "max-worker-lifetime", "min-worker-lifetime",
    "reload-on-rss", "reload-on-as", "evil-reload-on-rss", "reload-mercy", "worker-reload-mercy",
    "buffer-size", "listen", "socket-timeout", "limit-post", "post-buffering", "post-buffering-bufsize",
    "chmod-socket", "vacuum", "die-on-term", "pidfile", "logto", "daemonize", "disable-logging",
    "log-date", "logdate", "log-format", "logformat", "log-4xx", "log-5xx", "log-slow", "log-big",
    "log-zero", "log-x-forwarded-for", "log-maxsize", "log-reopen", "log-master", "logger", "req-logger",
    "memory-report", "disable-write-exception", "ignore-sigpipe", "ignore-write-errors",
    "auto-procname", "procname-prefix", "procname-prefix-spaced", "procname-master", "stats",
    "stats-http", "strict", "plugins", "py-autoreload", "offload-threads", "no-orphans", "max-fd",
    "touch-reload", "touch-chain-reload", "touch-workers-reload", "fs-reload", "attach-daemon",
    "attach-daemon2", "smart-attach-daemon", "cron", "unique-cron", "uid", "gid", "chown-socket",
    "umask", "home", "virtualenv", "venv", "pyhome", "http", "http-socket", "https", "static-map",
    "protocol", "http-timeout", "http-keepalive", "cheaper", "chroot", "cap", "unshare", "namespace",
    "jail", "emperor", "emperor-tyrant", "vassals-include", "vassal-set", "touch-logreopen",
    "chmod", "so-keepalive", "static-expires", "check-static", "logto2", "procname", "catch-exceptions",
    "evil-reload-on-rss", "min-worker-lifetime", "cpu-affinity", "reuse-port", "max-requests-delta",
)


def decision(name: str) -> tuple[str, str]:
    """(decision, reason) for a uWSGI option name, as the config builder applies it."""
    opt = BY_NAME.get(name)
    if opt is not None:
        if opt.uwsgi is Decision.IMPLEMENTED:
            alias = f"alias of `{opt.name}`; " if name != opt.name else ""
            return "implemented", alias + opt.help.split(". ")[0].rstrip(".") + "."
        return opt.uwsgi.value, opt.why + "."
    if name in UNSUPPORTED:
        why = UNSUPPORTED[name]
        return ("planned" if why.startswith("planned") else "refused"), why + "; refused until then."
    return "unknown", "warned about and ignored."


def render_decisions() -> str:
    """The decision table of docs/configuration.md (between its ``decisions`` markers)."""
    out = ["| uWSGI option | decision | why / what it does here |", "|---|---|---|"]
    for name in sorted(REAL_FILE_OPTIONS):
        what, why = decision(name)
        out.append(f"| `{name}` | {what} | {why.replace('|', chr(92) + '|')} |")
    return "\n".join(out) + "\n"


def type_name(opt: Option) -> str:
    name = _TYPES.get(opt.convert)
    if name is None:
        name = (opt.convert.__doc__ or "value").split("\n")[0]
    return name + (", repeatable" if opt.multi else "")


def scopes(opt: Option) -> str:
    parts = [s.name.lower() for s in (Scope.EMPEROR, Scope.VASSAL, Scope.ZERG) if s in opt.scope and s.name]
    return ", ".join(parts)


def render() -> str:
    out = ["# Options reference", "",
           "Generated from `emperor/options.py` by `python -m emperor.reference`; do not edit.", "",
           "Every option can be written as `key = value` in an ini file (section `[uwsgi]` unless "
           "`file.ini:section` says otherwise) or given on the command line as `--key value`. "
           "Repeatable options accumulate in order; for the others the last value wins. "
           "*Where* says which configurations accept the option: the emperor's ini, a vassal's, "
           "or a vassal's `[zerg]` section.", ""]
    groups: dict[str, list[Option]] = {}
    for opt in ALL:
        groups.setdefault(opt.group, []).append(opt)
    for group, opts in groups.items():
        if group == "compat":
            continue
        out += [f"## {_GROUPS.get(group, group.capitalize())}", "",
                "| option | type | default | where | meaning |", "|---|---|---|---|---|"]
        for opt in opts:
            default = "" if opt.default is None or opt.multi else f"`{_fmt(opt.default)}`"
            default += "".join(f" ({_scope_name(sc)}: `{_fmt(d)}`)" for sc, d in opt.defaults.items())
            row = [_names(opt), type_name(opt), default, scopes(opt), _cell(opt.help)]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    out += [f"## {_GROUPS['compat']}", "",
            "Unknown keys are warnings (see docs/configuration.md). These uWSGI options are known, "
            "and each has a decision: *built in* (emperor always behaves this way; accepted "
            "silently), *accepted, warned* (harmless here; a warning says why) or *refused* "
            "(ignoring it would weaken security or change results; an error).", "",
            "| option | decision | why |", "|---|---|---|"]
    out += [f"| {_names(o)} | {o.uwsgi.value} | {_cell(o.why)} |" for o in groups.get("compat", [])]
    out += ["", "## uWSGI options refused until other work implements them", "", "| option | why |",
            "|---|---|"]
    out += [f"| `{k}` | {why} |" for k, why in sorted(UNSUPPORTED.items()) if k not in BY_NAME]
    return "\n".join(out) + "\n"


def _names(opt: Option) -> str:
    names = f"`{opt.name}`" + "".join(f"<br>`{a}`" for a in opt.aliases)
    return names + (f"<br>`-{opt.short}`" if opt.short else "")


def _cell(text: str) -> str:
    return text.replace("%%", "%").replace("|", "\\|").replace("\n", " ")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if value != "" else '""'


def _scope_name(scope: Scope) -> str:
    return (scope.name or str(scope)).lower()


# ---------------------------------------------------------------- the typed config view

_PLAIN = {"bool": bool, "int": int, "float": float, "str": str}


def python_type(opt: Option) -> str:
    """The attribute type of ``opt`` in the config view: its converter's return annotation,
    ``| None`` when the default is None, ``list[...]`` when repeatable. A converter without a
    return annotation, or a default of another type, is an error here (and so in the drift test)."""
    ret = getattr(opt.convert, "__annotations__", {}).get("return")
    if ret is None:
        raise ValueError(f"option {opt.name}: its converter {opt.convert!r} has no return annotation")
    ret = ret if isinstance(ret, str) else ret.__name__
    if opt.multi:
        return f"list[{ret}]"
    for default in (opt.default, *opt.defaults.values()):
        plain = _PLAIN.get(ret)
        if default is not None and plain is not None and type(default) is not plain:
            raise ValueError(f"option {opt.name}: default {default!r} is not a {ret}")
    return f"{ret} | None" if opt.default is None and "None" not in ret else ret


def render_config_view() -> str:
    """emperor/config_view.py: one annotated attribute per option the config builder fills."""
    out = ['"""The typed view of a configuration: one attribute per option of emperor/options.py.',
           "",
           "Generated by ``python -m emperor.reference --config-view > emperor/config_view.py``; do not",
           "edit (tests/test_config_view.py fails when it differs from the option table). The",
           "attribute is the option name with ``-`` -> ``_``; its type is the converter's return type,",
           "``| None`` when the option has no default, ``list[...]`` when it is repeatable.",
           "``emperor.config.Config`` derives from it and serves the values at run time.",
           '"""', "", "from __future__ import annotations", "", "",
           "class ConfigView:",
           '    """What a consumer of a configuration may read (mypy checks the names and types)."""',
           ""]
    imports: dict[str, set[str]] = {}  # module -> names the annotations use beyond builtins
    for opt in OPTIONS:
        ret = getattr(opt.convert, "__annotations__", {}).get("return")
        name = ret if isinstance(ret, str) else getattr(ret, "__name__", "")
        if name and name.isidentifier() and name not in _BUILTIN_NAMES:
            imports.setdefault(opt.convert.__module__, set()).add(name)
        out.append(f"    {opt.attr}: {python_type(opt)}")
    if imports:
        # real imports (not TYPE_CHECKING): typing.get_type_hints must resolve them at run time
        head = [f"from {mod} import {', '.join(sorted(names))}" for mod, names in sorted(imports.items())]
        at = out.index("from __future__ import annotations") + 2
        out[at:at] = [*head, ""]
    return "\n".join(out) + "\n"


_BUILTIN_NAMES = {"str", "int", "float", "bool", "bytes", "None"}


if __name__ == "__main__":
    mode = sys.argv[1:]
    sys.stdout.write(render_decisions() if mode == ["--decisions"] else
                     render_config_view() if mode == ["--config-view"] else render())
