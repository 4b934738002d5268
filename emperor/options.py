"""The option table: every option is declared here once.

The ini validation (``emperor.config``), the command line (``emperor.cli``) and the
reference page ``docs/reference/options.md`` (``emperor.reference``) are all derived
from ``OPTIONS``. Names and meanings follow uWSGI wherever uWSGI has the option; every
deliberate difference is stated in the option's help and in docs/.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emperor import validators as v


class Scope(enum.Flag):
    """Where an option may appear: the emperor's ini, a vassal's ini, a vassal's [zerg] section."""

    EMPEROR = enum.auto()
    VASSAL = enum.auto()
    ZERG = enum.auto()
    APP = VASSAL | ZERG
    ANY = EMPEROR | VASSAL | ZERG


@dataclass(frozen=True)
class Option:
    name: str
    convert: Callable[[str], Any]
    default: Any
    help: str
    scope: Scope = Scope.APP
    group: str = "general"
    multi: bool = False
    aliases: tuple[str, ...] = ()
    short: str | None = None
    flag: bool = False  # a bare key (or --flag without a value) means true
    metavar: str = "VALUE"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


def _opt(*args: Any, **kwargs: Any) -> Option:
    return Option(*args, **kwargs)


BUFFER_MAX = 65535

OPTIONS: tuple[Option, ...] = (
    # ---- configuration loading (handled by the reader, listed here for the CLI and the docs)
    _opt("ini", v.nonempty, None, "Load an ini file (``file.ini`` or ``file.ini:section``; default "
         "section ``[uwsgi]``). Repeatable; applied in order at the place it appears.",
         scope=Scope.ANY, group="config", multi=True, metavar="FILE[:SECTION]"),
    _opt("strict", v.boolean, False, "Also refuse unknown keys that are used as ``%(placeholders)``: "
         "placeholders must then be declared with ``set-placeholder``. (An unknown key that nothing "
         "refers to is always an error; see docs/configuration.md.)",
         scope=Scope.ANY, group="config", flag=True),
    _opt("set-placeholder", v.text, None, "Define a placeholder ``name=value`` usable as ``%(name)``.",
         scope=Scope.ANY, group="config", multi=True, aliases=("set-ph",), metavar="NAME=VALUE"),
    # ---- sockets
    _opt("socket", v.nonempty, None, "Listen for the uwsgi protocol on this address: a Unix path, "
         "``host:port``, ``:port`` (every interface, warned), ``[::1]:port`` or ``@abstract``. Repeatable.",
         group="sockets", multi=True, aliases=("uwsgi-socket",), short="s", metavar="ADDR"),
    _opt("listen", v.integer(1, 1 << 20), 1024, "Listen queue (backlog) size. uWSGI uses 100, but a full "
         "Unix-socket queue makes nginx answer 502 at once, so the default is 1024. A value above "
         "net.core.somaxconn is capped by the kernel and logged as a warning.",
         group="sockets", short="l", metavar="N"),
    _opt("chmod-socket", v.octal_mode, None, "Mode of Unix sockets, set before the socket listens (so no "
         "client can connect earlier). Unset: the umask decides. A bare key means 666, as in uWSGI, "
         "and is warned about.", group="sockets", metavar="MODE"),
    _opt("vacuum", v.boolean, False, "Remove our own Unix sockets and pidfile at exit (only if the inode "
         "is still the one we created).", group="sockets", flag=True),
    _opt("buffer-size", v.integer(64, BUFFER_MAX), BUFFER_MAX, "Largest uwsgi vars block accepted, in "
         "bytes. uWSGI's default (4096) makes big cookies and JWTs fail with a bare 502, so the default "
         "is the protocol's maximum, 65535.", group="sockets", short="b", metavar="BYTES"),
    _opt("socket-timeout", v.seconds, 4.0, "Seconds a peer may take to send the request (header, vars "
         "and each read of the body) or to accept each write of the response.",
         group="sockets", metavar="SECONDS"),
    _opt("limit-post", v.integer(0), 0, "Largest request body accepted, in bytes (0 = no limit). Larger "
         "CONTENT_LENGTH values get a 413.", group="sockets", metavar="BYTES"),
    # ---- HTTP listeners (docs/http.md)
    _opt("http-socket", v.nonempty, None, "Listen for HTTP/1.1 on this address (same forms as "
         "``socket``; repeatable): the workers parse HTTP themselves, with keep-alive. A vassal may have "
         "uwsgi and HTTP sockets at once.", group="http", multi=True, aliases=("http11-socket",),
         metavar="ADDR"),
    _opt("http", v.nonempty, None, "uWSGI's HTTP router address. emperor has no router process: this "
         "binds an HTTP listener served by the workers, exactly like ``http-socket`` (docs/http.md).",
         group="http", multi=True, metavar="ADDR"),
    _opt("https-socket", v.https_spec, None, "An HTTPS listener: ``ADDR,CERT,KEY[,CIPHERS[,CA]]`` "
         "(repeatable; TLS 1.2+ with the ssl module; CA makes client certificates required, ``!CA`` "
         "optional). The certificate and key are re-read when their files change, without a restart. "
         "``https`` (uWSGI's router option) is the same here.", group="http", multi=True,
         aliases=("https",), metavar="ADDR,CERT,KEY"),
    _opt("protocol", v.protocol, "uwsgi", "What plain ``socket`` lines speak: ``uwsgi`` or ``http``. "
         "(uWSGI also has fastcgi, scgi and others; emperor refuses them.)", group="http",
         metavar="PROTO"),
    _opt("http-keepalive", v.keepalive_seconds, 75.0, "Seconds an idle HTTP keep-alive connection is "
         "kept open (0 = close after each response). The default is longer than nginx's upstream "
         "keepalive_timeout (60 s), so nginx closes first and never reuses a connection we are "
         "closing. uWSGI's option of the same name is the router's keep-alive switch: ``true`` or a "
         "bare key keeps the default, ``false`` turns keep-alive off.",
         group="http", flag=True, metavar="SECONDS"),
    _opt("http-keepalive-requests", v.integer(1), 1000, "Requests served on one HTTP connection before "
         "the server closes it (nginx's keepalive_requests). Not in uWSGI.", group="http", metavar="N"),
    _opt("forwarded-allow-ips", v.address_list, "127.0.0.1,::1", "TCP peers (comma-separated IPs and "
         "CIDR networks, or ``*``) whose X-Forwarded-For and X-Forwarded-Proto are believed on HTTP "
         "sockets: REMOTE_ADDR becomes the last X-Forwarded-For address and wsgi.url_scheme the "
         "X-Forwarded-Proto (http or https). Unix-socket peers are always believed (the socket's mode "
         "decides who connects). From any other peer both stay plain HTTP_X_FORWARDED_* headers. "
         "gunicorn's name and default; uWSGI has no such option.", group="http", metavar="IPS"),
    _opt("static-map", v.static_mapping, None, "Serve files under ``/prefix`` from ``DIR`` before the app "
         "(``/prefix/a/b`` -> ``DIR/a/b``), with sendfile, Last-Modified/ETag, a single Range, HEAD. "
         "Repeatable; on uwsgi and HTTP sockets. A path that resolves outside ``DIR`` (``..``, "
         "symlinks) is a 403; a missing file falls through to the app.", group="static", multi=True,
         metavar="/PREFIX=DIR"),
    _opt("static-map2", v.static_mapping, None, "Like ``static-map``, but the whole path is appended "
         "to ``DIR`` (``/prefix/a`` -> ``DIR/prefix/a``).", group="static", multi=True,
         metavar="/PREFIX=DIR"),
    _opt("check-static", v.nonempty, None, "Serve ``DIR`` + PATH_INFO when such a file exists, for any "
         "path (repeatable).", group="static", multi=True, metavar="DIR"),
    _opt("static-index", v.nonempty, None, "File served for a directory (``index.html``; repeatable, "
         "tried in order).", group="static", multi=True, metavar="NAME"),
    _opt("static-safe", v.nonempty, None, "A directory that symlinks in static directories may point "
         "into (repeatable). Without it a symlink out of the mapped directory is refused.",
         group="static", multi=True, metavar="DIR"),
    _opt("static-expires-type", v.nonempty, None, "``MIME/TYPE=SECONDS``: static files of that type get "
         "``Expires`` (now + SECONDS) and ``Cache-Control: max-age`` (repeatable; the first match wins).",
         group="static", multi=True, metavar="TYPE=SECONDS"),
    _opt("static-expires", v.nonempty, None, "``REGEXP=SECONDS``: the same for static files whose path "
         "matches REGEXP (repeatable; after static-expires-type).", group="static", multi=True,
         metavar="REGEXP=SECONDS"),
    _opt("http-timeout", v.seconds, 0.0, "Seconds a client may take to send the request head (and each "
         "read of the body) or to accept each write on HTTP sockets (0 = socket-timeout). In uWSGI "
         "this is the router's timeout towards its backends; here the workers are the backend.",
         group="http", metavar="SECONDS"),
    _opt("no-defer-accept", v.boolean, False, "Do not set TCP_DEFER_ACCEPT on TCP sockets.",
         group="sockets", flag=True),
    # ---- application
    _opt("module", v.python_callable_ref, None, "The WSGI application: ``pkg.mod`` or ``pkg.mod:callable``.",
         group="app", aliases=("wsgi",), short="w", metavar="MODULE[:CALLABLE]"),
    _opt("callable", v.nonempty, "application", "Name of the WSGI callable when ``module`` or "
         "``wsgi-file`` does not give one.", group="app", metavar="NAME"),
    _opt("wsgi-file", v.nonempty, None, "Load the WSGI application from this Python file.",
         group="app", aliases=("file",), metavar="PATH"),
    _opt("chdir", v.nonempty, None, "Change to this directory before loading the application.",
         group="app", metavar="DIR"),
    _opt("pythonpath", v.nonempty, None, "Add this directory to sys.path (repeatable; globs allowed).",
         group="app", multi=True, aliases=("python-path", "pp"), metavar="DIR"),
    _opt("env", v.env_assignment, None, "Set an environment variable ``KEY=VALUE`` before loading the "
         "application (repeatable).", group="app", multi=True, metavar="KEY=VALUE"),
    _opt("lazy-apps", v.boolean, False, "Import the application in each worker after the fork, instead "
         "of once in the master.", group="app", flag=True),
    _opt("need-app", v.boolean, True, "Exit (status 22) when the application cannot be loaded. On by "
         "default, as in uWSGI 2.1; ``need-app = false`` serves 500s instead.", group="app", flag=True),
    # ---- processes
    _opt("master", v.boolean, True, "Accepted for compatibility: emperor always runs a master process.",
         group="processes", flag=True),
    _opt("processes", v.integer(1, 4096), 1, "Number of worker processes.", group="processes",
         aliases=("workers",), short="p", metavar="N"),
    _opt("threads", v.integer(1, 1024), 1, "Threads per worker: each worker serves this many requests at "
         "once from a thread pool.", group="processes", metavar="N"),
    _opt("max-requests", v.integer(0), 0, "Recycle a worker after it has served this many requests "
         "(0 = never).", group="processes", short="R", metavar="N"),
    _opt("max-requests-delta", v.integer(0), None, "Jitter added to max-requests, different for each "
         "worker so they do not all recycle together. Default: 10%% of max-requests.",
         group="processes", metavar="N"),
    _opt("harakiri", v.integer(0), 0, "Kill a worker (and its process group) that has been on one request "
         "for this many seconds, log the request and respawn the worker (0 = off).",
         group="processes", short="t", metavar="SECONDS"),
    _opt("reload-on-rss", v.integer(0), 0, "Recycle a worker after the response that took its resident "
         "memory over this many MB (0 = off).", group="processes", metavar="MB"),
    _opt("reload-mercy", v.seconds, 60.0, "How long a graceful reload or stop waits for busy workers "
         "before SIGKILL. In the emperor: how long a stopping vassal may take before SIGKILL (30 s "
         "there when unset, as uWSGI's Ragnarok).", scope=Scope.ANY, group="processes",
         aliases=("worker-reload-mercy",), metavar="SECONDS"),
    _opt("die-on-term", v.boolean, False, "Accepted for compatibility: SIGTERM is always a graceful stop "
         "in emperor (see docs/signals.md).", scope=Scope.ANY, group="processes", flag=True),
    # ---- logging and files
    _opt("pidfile", v.nonempty, None, "Write the master's pid to this file.", scope=Scope.ANY,
         group="logging", metavar="PATH"),
    _opt("logto", v.nonempty, None, "Append the log to this file instead of stderr.",
         scope=Scope.ANY, group="logging", metavar="PATH"),
    _opt("daemonize", v.nonempty, None, "Detach into the background and log to this file. Under an "
         "emperor it only means ``logto``.", scope=Scope.ANY, group="logging", metavar="LOGFILE"),
    _opt("disable-logging", v.boolean, False, "Do not log one line per request.", group="logging",
         short="L", flag=True),
    _opt("procname-prefix", v.text, "", "Prefix for the process titles.", scope=Scope.ANY,
         group="logging", metavar="TEXT"),
    # ---- stats and control (docs/observability.md, docs/reference/commands.md)
    _opt("stats", v.nonempty, None, "Serve this vassal's stats on this address (``host:port``, a Unix "
         "path, ``@abstract``): one JSON document per connection, the keys uwsgitop and "
         "uwsgi_exporter read. Unix sockets get mode 0600; a non-loopback address is warned about.",
         scope=Scope.APP, group="stats", aliases=("stats-server",), metavar="ADDR"),
    _opt("stats-http", v.boolean, False, "Serve ``stats`` (in a vassal) or ``emperor-stats`` (in the "
         "emperor) over HTTP/1.0; the path ``/metrics`` then answers in Prometheus text format "
         "(needs prometheus_client: ``pip install emperor[metrics]``).",
         scope=Scope.ANY, group="stats", flag=True),
    _opt("emperor-stats", v.nonempty, None, "Serve the emperor's stats (every vassal's state, pid, "
         "respawns, last error, throttle; the zerg pool) on this address, one JSON document per "
         "connection.", scope=Scope.EMPEROR, group="stats", aliases=("emperor-stats-server",),
         metavar="ADDR"),
    _opt("emperor-control", v.nonempty, None, "The control endpoint ``emperor ctl`` talks to: "
         "``ipc:///path`` or a Unix path, or ``tcp://127.0.0.1:PORT`` (no authentication: warned). "
         "Default: ``ipc://$XDG_RUNTIME_DIR/emperor/control``, else ``ipc:///tmp/emperor-UID/control``, "
         "in a directory of mode 0700. The event stream (PUB) listens next to it (``.events``; TCP: "
         "the next port). ``off`` disables both.", scope=Scope.EMPEROR, group="stats",
         metavar="ENDPOINT"),
    # ---- emperor (emperor/empire/; see docs/emperor.md)
    _opt("emperor", v.nonempty, None, "Run as an emperor over this directory of vassal ini files (every "
         "``*.ini`` at its top level, links included) or this glob (``dir/*.ini``, quoted). Repeatable.",
         scope=Scope.EMPEROR, group="emperor", multi=True, metavar="DIR|GLOB"),
    _opt("emperor-freq", v.seconds, 3.0, "Seconds between full rescans of the vassal files. File events "
         "trigger a rescan at once; this period catches what inotify cannot see (edits to a symlink's "
         "target outside the watched directories, queue overflows).", scope=Scope.EMPEROR,
         group="emperor", metavar="SECONDS"),
    _opt("emperor-throttle", v.integer(1, 3_600_000), 1000, "First respawn delay, in ms, for a vassal that "
         "died before it was loyal (served a request); the delay doubles at each such death.",
         scope=Scope.EMPEROR, group="emperor", metavar="MS"),
    _opt("emperor-max-throttle", v.integer(1, 86_400_000), 180000, "Largest respawn delay, in ms.",
         scope=Scope.EMPEROR, group="emperor", metavar="MS"),
    _opt("emperor-tyrant", v.boolean, False, "Run each vassal as the owner (uid and gid) of its ini file. "
         "Files owned by root or writable by group or others are refused. Needs root.",
         scope=Scope.EMPEROR, group="emperor", flag=True),
    _opt("vassals-include", v.nonempty, None, "Load this ini file into every vassal, after the vassal's own "
         "file (so its values win for single-valued options). Repeatable.", scope=Scope.EMPEROR,
         group="emperor", multi=True, metavar="FILE"),
    _opt("vassal-set", v.env_assignment, None, "Give every vassal ``--key value`` before its own file (so "
         "the vassal's file wins); a key that is not a vassal option defines the placeholder %(key). "
         "Repeatable.", scope=Scope.EMPEROR, group="emperor", multi=True, aliases=("vassals-set",),
         metavar="KEY=VALUE"),
    _opt("touch-logreopen", v.nonempty, None, "Reopen the emperor's log file (logto/daemonize) when this "
         "file's mtime changes, for logrotate. SIGUSR1 does the same.", scope=Scope.EMPEROR,
         group="emperor", metavar="PATH"),
    # ---- broodlord (docs/broodlord.md): lend zergs to overloaded vassals, reclaim them when idle
    _opt("emperor-broodlord", v.integer(0, 1024), 0, "The zerg pool: at most this many zergs alive at "
         "once, over all vassals (0 = broodlord off). A vassal's SOS gets a zerg while the pool has "
         "room, at most one per vassal per second; the pool is shared fairly between overloaded vassals.",
         scope=Scope.EMPEROR, group="broodlord", metavar="N"),
    _opt("zerg-server", v.nonempty, None, "Hand this vassal's listening sockets to zergs over this Unix "
         "socket (mode 0600, same-uid peers only). Needed for broodlord.",
         scope=Scope.VASSAL, group="broodlord", metavar="PATH"),
    _opt("vassal-sos-backlog", v.integer(0), 0, "Ask the emperor for a zerg (SOS) once a second while the "
         "listen queue of a socket holds at least this many connections (0 = off). Read with TCP_INFO "
         "on TCP and sock_diag on Unix sockets (uWSGI reads 0 on Unix sockets).",
         scope=Scope.VASSAL, group="broodlord", metavar="N"),
    _opt("vassal-sos", v.integer(0), 0, "Ask the emperor for a zerg when every worker has been busy for "
         "this many seconds, at most once per that period (0 = off). Used only when the backlog cannot "
         "be read or vassal-sos-backlog is unset.", scope=Scope.VASSAL, group="broodlord",
         metavar="SECONDS"),
    _opt("zerg", v.nonempty, None, "Attach to this zerg server and serve the sockets it hands out instead "
         "of binding any (repeatable: the sockets are appended). Those sockets are never removed at exit.",
         group="broodlord", multi=True, metavar="PATH"),
    _opt("idle", v.integer(0), 0, "With die-on-idle: exit after this many seconds without a request and "
         "with no busy worker (0 = never). Only in a [zerg] section: an idle vassal would just be "
         "respawned by the emperor.", scope=Scope.ZERG, group="broodlord", metavar="SECONDS"),
    _opt("die-on-idle", v.boolean, False, "When idle: tell the emperor (its slot is freed), finish any "
         "request in flight and exit. Without it ``idle`` does nothing (uWSGI's cheap mode is not "
         "implemented).", scope=Scope.ZERG, group="broodlord", flag=True),
)


# uWSGI options users copy that emperor does not implement: a clear error, never a silent no-op.
UNSUPPORTED: dict[str, str] = {
    "http-websockets": "WebSocket upgrades are not implemented: an Upgrade request is served as a "
                       "plain HTTP request",
    "fastcgi-socket": "emperor speaks only the uwsgi protocol",
    "post-buffering": "bodies are streamed to wsgi.input; nginx already buffers request bodies",
    "virtualenv": "run emperor from the application's virtualenv instead",
    "home": "run emperor from the application's virtualenv instead",
    "lazy": "use lazy-apps",
    "cheaper": "adaptive worker counts are not implemented",
}
# Keys accepted and ignored, because they only select features emperor always has.
IGNORED: dict[str, str] = {
    "plugin": "emperor is Python-only; plugin lines are ignored",
    "plugins": "emperor is Python-only; plugin lines are ignored",
    "enable-threads": "Python threads are always enabled in emperor",
    "single-interpreter": "emperor always runs one interpreter per worker",
}

BY_NAME: dict[str, Option] = {}
for _o in OPTIONS:
    for _n in (_o.name, *_o.aliases):
        assert _n not in BY_NAME, f"option {_n} declared twice"
        BY_NAME[_n] = _o


def lookup(name: str) -> Option | None:
    """Find an option by its name or an alias (``uwsgi-socket`` -> ``socket``)."""
    return BY_NAME.get(name)
