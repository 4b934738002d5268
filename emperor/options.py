"""The option table: every option is declared here once.

The ini validation (``emperor.config``), the command line (``emperor.config.build_parser``) and the
reference page ``docs/reference/options.md`` (``emperor.reference``) are all derived
from ``OPTIONS``. Names and meanings follow uWSGI wherever uWSGI has the option; every
deliberate difference is stated in the option's help and in docs/.

Why this module is over the ~500 lines of the others: it is the table itself, one short
declaration per option (about 140 of them, some with several names); splitting it by topic
would make "declared once, in one place" harder to check, not easier to read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emperor import daemonspec as d
from emperor import logformat
from emperor import validators as v


class Scope(enum.Flag):
    """Where an option may appear: the emperor's ini, a vassal's ini, a vassal's [zerg] section."""

    EMPEROR = enum.auto()
    VASSAL = enum.auto()
    ZERG = enum.auto()
    APP = VASSAL | ZERG
    ANY = EMPEROR | VASSAL | ZERG


class Decision(enum.Enum):
    """What emperor does with an option uWSGI has (the table in docs/configuration.md).

    Unknown keys are warnings (uWSGI's placeholder rule), so every uWSGI option whose absence
    would matter must be declared with one of these, never left to fall through silently.
    """

    IMPLEMENTED = "implemented"  # it does what uWSGI's option does (differences in the help)
    BUILT_IN = "built in"  # emperor always behaves this way: accepted silently
    IGNORED = "accepted, warned"  # harmless here (``why`` says why): accepted with a warning
    REFUSED = "refused"  # ignoring it would weaken security or change results: an error


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
    uwsgi: Decision = Decision.IMPLEMENTED  # see Decision; rows without it are implemented
    why: str = ""  # for BUILT_IN / IGNORED / REFUSED: the reason, shown in warnings and docs
    # A different default in one scope (reload-mercy is 30 s in the emperor, as uWSGI's Ragnarok,
    # and 60 s in a vassal): read by the config builder, the CLI help and the reference page, so
    # no consumer restates it.
    defaults: dict[Scope, Any] = field(default_factory=dict)

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    def default_for(self, scope: Scope) -> Any:
        """The default in a configuration of ``scope`` (``default`` unless ``defaults`` names it)."""
        return self.defaults.get(scope, self.default)


def _opt(*args: Any, **kwargs: Any) -> Option:
    return Option(*args, **kwargs)


_COMPAT_HELP = {Decision.BUILT_IN: "Accepted, nothing to do: ", Decision.IGNORED: "Accepted and ignored, "
                "with a warning: ", Decision.REFUSED: "Refused with an error: "}


def _compat(name: str, decision: Decision, why: str, *, flag: bool = True, scope: Scope = Scope.ANY,
            aliases: tuple[str, ...] = ()) -> Option:
    """A uWSGI option emperor does not implement, with its decision and the reason."""
    return Option(name, v.boolean if flag else v.text, None, _COMPAT_HELP[decision] + why + ".",
                  scope=scope, group="compat", flag=flag, aliases=aliases,
                  metavar="VALUE", uwsgi=decision, why=why)


_B, _I, _R = Decision.BUILT_IN, Decision.IGNORED, Decision.REFUSED


BUFFER_MAX = 65535

OPTIONS: tuple[Option, ...] = (
    # ---- configuration loading (handled by the reader, listed here for the CLI and the docs)
    _opt("ini", v.nonempty, None, "Load an ini file (``file.ini`` or ``file.ini:section``; default "
         "section ``[uwsgi]``). Repeatable; applied in order at the place it appears.",
         scope=Scope.ANY, group="config", multi=True, metavar="FILE[:SECTION]"),
    _opt("strict", v.boolean, False, "Make unknown keys errors (without it they are warnings, as in "
         "uWSGI), including keys used as ``%(placeholders)``: declare those with ``set-placeholder``. "
         "Applies to the whole configuration, wherever the line is (docs/configuration.md).",
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
         "and is warned about.", group="sockets", aliases=("chmod",), metavar="MODE"),
    _opt("vacuum", v.boolean, False, "Remove our own Unix sockets and pidfile at exit (only if the inode "
         "is still the one we created). In an emperor file: accepted, the emperor always removes its "
         "own pidfile at exit.", scope=Scope.ANY, group="sockets", flag=True),
    _opt("buffer-size", v.integer(64, BUFFER_MAX), BUFFER_MAX, "Largest uwsgi vars block accepted, in "
         "bytes. uWSGI's default (4096) makes big cookies and JWTs fail with a bare 502, so the default "
         "is the protocol's maximum, 65535.", group="sockets", short="b", metavar="BYTES"),
    _opt("socket-timeout", v.seconds, 4.0, "Seconds a peer may take to send the request (header, vars "
         "and each read of the body) or to accept each write of the response.",
         group="sockets", metavar="SECONDS"),
    _opt("body-read-timeout", v.seconds, 30.0, "Seconds the whole request body may take to arrive, "
         "counted from the accept on uwsgi sockets and from the request's start on HTTP sockets "
         "(0 = no total bound). socket-timeout bounds each read only, so a peer trickling a byte now "
         "and then could hold a sync worker for as long as the body lasts; past this deadline the "
         "read fails (the app sees an exception) and the connection is closed. It also ends the "
         "drain of a body the app did not read (which never lasts more than socket-timeout, at most "
         "2 s). ASGI workers are not held by a slow body (other requests go on meanwhile) and do "
         "not apply it. Not in uWSGI (whose harakiri covers it bluntly).",
         group="sockets", metavar="SECONDS"),
    _opt("post-buffering", v.integer(0), 0, "Read the whole request body before calling the app when "
         "it has one (0 = off: the app reads it from the socket as it comes): up to this many bytes "
         "in memory, a larger body into an unnamed temporary file (TMPDIR). The read is bounded "
         "by socket-timeout per read and body-read-timeout in all; a body that does not arrive in "
         "time never reaches the app. limit-post still refuses larger bodies first.",
         group="sockets", metavar="BYTES"),
    _opt("post-buffering-bufsize", v.integer(512, 1 << 24), 8192, "Size of each read while "
         "post-buffering a body.", group="sockets", metavar="BYTES"),
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
    _opt("forwarded-allow-ips", v.ip_list, "127.0.0.1,::1", "TCP peers (comma-separated IPs and CIDR "
         "networks, or ``*``) that are believed about the client: on uwsgi sockets their HTTPS, "
         "REQUEST_SCHEME and UWSGI_SCHEME vars set ``wsgi.url_scheme``; on HTTP sockets their "
         "X-Forwarded-For sets REMOTE_ADDR (its last address) and X-Forwarded-Proto the scheme. From any "
         "other TCP peer the scheme is http (the claim is logged) and the headers stay plain "
         "HTTP_X_FORWARDED_* vars. Unix-socket peers are always believed (the socket's mode decides who "
         "connects). gunicorn's name and default; uWSGI believes every peer.", group="sockets",
         metavar="IPS"),
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
    # ---- ASGI (docs/asgi.md): emperor's own keys, uWSGI has no ASGI support
    _opt("asgi", v.python_callable_ref, None, "The ASGI application: ``pkg.mod:callable`` (``callable`` "
         "names it when the module alone is given). Not in uWSGI. Each worker then runs one event loop "
         "serving many requests at once; ``chdir``, ``pythonpath``, ``env`` and ``lazy-apps`` apply as "
         "for ``module``. Not combinable with ``module``/``wsgi-file`` nor with ``threads``.",
         group="asgi", metavar="MODULE:CALLABLE"),
    _opt("asgi-loop", v.choice("auto", "asyncio", "uvloop"), "auto", "The event loop of ASGI workers: "
         "``auto`` takes uvloop when it is installed (``pip install emperor[asgi]``), else asyncio. "
         "Not in uWSGI.", group="asgi", metavar="auto|asyncio|uvloop"),
    _opt("asgi-concurrency", v.integer(1, 100_000), 1000, "Requests in flight per ASGI worker. At the "
         "cap the worker stops accepting, so further connections wait in the listen queue (where "
         "broodlord's backlog probe sees them) or go to another worker. Not in uWSGI (its ``async`` "
         "cores are the nearest thing).", group="asgi", metavar="N"),
    _opt("lifespan", v.choice("auto", "on", "off"), "auto", "ASGI lifespan events in each worker: "
         "``on`` requires the app to support them, ``auto`` skips them when the app refuses the "
         "lifespan scope before reading its first event, ``off`` never sends them. Not in uWSGI.",
         group="asgi", metavar="auto|on|off"),
    _opt("websockets-max-size", v.integer(1, 1 << 20), 1024, "Largest WebSocket message an ASGI app "
         "receives, in KiB; a larger one closes the connection with code 1009 (uWSGI's key and "
         "default).", group="asgi", metavar="KIB"),
    _opt("websockets-ping-freq", v.integer(0, 86400), 30, "Seconds between the pings an ASGI worker "
         "sends on each open WebSocket (0 = none), which also keep nginx's read timeout from "
         "closing a quiet one (uWSGI's key and default).", group="asgi", metavar="SECONDS"),
    _opt("websockets-pong-tolerance", v.integer(1, 3600), 3, "Seconds a WebSocket peer has to answer "
         "a ping; then the connection is closed with code 1011 (uWSGI's key and default).",
         group="asgi", metavar="SECONDS"),
    # ---- processes
    _opt("master", v.boolean, True, "Accepted for compatibility: a vassal always runs a master process "
         "(``master = false`` too); in an emperor file it has no meaning.", scope=Scope.ANY,
         group="processes", flag=True, uwsgi=Decision.BUILT_IN,
         why="a vassal always has a master process; the emperor is its own master"),
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
    _opt("reload-on-as", v.integer(0), 0, "Recycle a worker after the response that took its address space "
         "(virtual memory) over this many MB (0 = off).", group="processes", metavar="MB"),
    _opt("max-worker-lifetime", v.integer(0), 0, "Recycle a worker (gracefully: it finishes its request) "
         "once it has lived this many seconds, busy or idle (0 = off).", group="processes",
         metavar="SECONDS"),
    _opt("max-worker-lifetime-delta", v.integer(0), 0, "Add worker-id x this many seconds to "
         "max-worker-lifetime, so that workers do not all recycle together.", group="processes",
         metavar="SECONDS"),
    _opt("touch-reload", v.nonempty, None, "Reload gracefully (as SIGHUP) when this file's modification "
         "time changes, or it appears or disappears; checked about once a second. Repeatable. "
         "touch-workers-reload does the same graceful reload (uWSGI replaces only the workers); "
         "fs-reload (uWSGI: an inotify watch on a file or directory) is the same mtime check: a "
         "directory's mtime changes when an entry is added, removed or renamed, not when a file "
         "in it is edited.",
         group="processes", multi=True, aliases=("touch-workers-reload", "fs-reload"),
         metavar="PATH"),
    _opt("touch-chain-reload", v.nonempty, None, "Chain reload when this file changes (checked as "
         "touch-reload): the workers are replaced one at a time, each new one accepting before the "
         "next old one is told to finish, so the vassal never stops serving. The master is not "
         "re-executed and the configuration is not re-read; new workers import the app afresh only "
         "with lazy-apps (as in uWSGI, where chain reloading needs lazy-apps too). Repeatable.",
         group="processes", multi=True, metavar="PATH"),
    _opt("harakiri-verbose", v.boolean, False, "On harakiri, also log what the worker was doing in the "
         "kernel (/proc/PID/syscall and wchan) before killing it.", group="processes", flag=True),
    _opt("reload-mercy", v.seconds, 60.0, "How long a graceful reload or stop waits for busy workers "
         "before SIGKILL. In the emperor: how long a stopping vassal may take before SIGKILL (with "
         "a shorter default there, as uWSGI's Ragnarok).", scope=Scope.ANY, group="processes",
         aliases=("worker-reload-mercy",), metavar="SECONDS", defaults={Scope.EMPEROR: 30.0}),
    _opt("heartbeat", v.integer(0, 3600), 0, "Under an emperor: send it a heartbeat every this many "
         "seconds from the master's loop (0 = off). A master that stops sending them (stopped, stuck) "
         "is killed and respawned by the emperor after ``emperor-required-heartbeat`` seconds "
         "(docs/emperor.md#heartbeat).", scope=Scope.VASSAL, group="processes", metavar="SECONDS"),
    _opt("die-on-term", v.boolean, False, "Accepted for compatibility: SIGTERM is always a graceful stop "
         "in emperor (see docs/signals.md).", scope=Scope.ANY, group="processes", flag=True,
         uwsgi=Decision.BUILT_IN, why="SIGTERM always stops gracefully in emperor (docs/signals.md)"),
    # ---- companion processes and cron (emperor/vassal/daemons.py)
    _opt("attach-daemon", d.attach_daemon, None, "Run this command next to the app (``/bin/sh -c``, "
         "in its own session, stdin on /dev/null, output to the vassal's log). It must stay in the "
         "foreground. Restarted when it dies (after 1, 2, 3... s, at most 60, when it died within "
         "10 s of its start), stopped (SIGTERM, SIGKILL after 5 s) when the vassal stops, and "
         "stopped and started again on a reload. Repeatable.", scope=Scope.VASSAL, group="daemons",
         multi=True, metavar="COMMAND"),
    _opt("smart-attach-daemon", d.smart_attach_daemon, None, "``PIDFILE COMMAND``: a daemon governed "
         "by its pidfile. Started only when PIDFILE does not name a live process, so it survives a "
         "reload (and the master); restarted when that process is gone (the command has 10 s to "
         "write its pidfile); stopped with the vassal. Repeatable.", scope=Scope.VASSAL,
         group="daemons", multi=True, metavar="PIDFILE COMMAND"),
    _opt("smart-attach-daemon2", d.smart_attach_daemon2, None, "``PIDFILE COMMAND``: as "
         "smart-attach-daemon for a command that stays in the foreground: the master writes its pid "
         "to PIDFILE.", scope=Scope.VASSAL, group="daemons", multi=True, metavar="PIDFILE COMMAND"),
    _opt("attach-daemon2", d.attach_daemon2, None, "A companion process described by "
         "``key=value,...`` pairs (uWSGI's general form). Keys: "
         "``cmd`` (or command, exec), ``pidfile`` (governed as smart-attach-daemon), ``daemonize`` "
         "(the master writes the pidfile), ``control`` (its death stops the vassal, exit status 1), "
         "``stopsignal``, ``reloadsignal`` (sent when a ``touch`` file changes; without it the "
         "daemon is restarted), ``touch`` (files separated by ;), ``freq`` (seconds: a death "
         "sooner after the start is throttled, default 10), ``max_throttle`` (default 60), "
         "``chdir``, ``env`` (NAME=VALUE, repeatable), ``stdin``. uid, gid, ns_pid, legion and "
         "notifypid are refused, and so is any other key.", scope=Scope.VASSAL, group="daemons",
         multi=True, metavar="KEY=VALUE,..."),
    _opt("cron", d.cron, None, "``MIN HOUR MDAY MONTH WDAY COMMAND``: run COMMAND when the local time "
         "matches (checked once a minute by the master; -1 is any value, -N every N, WDAY 0 is "
         "Sunday). A job still running at the next match is started again; running jobs are "
         "stopped with the vassal. Repeatable.", scope=Scope.VASSAL, group="daemons", multi=True,
         metavar="M H D MON WD COMMAND"),
    _opt("unique-cron", d.unique_cron, None, "As cron, but a job is not started while its previous "
         "run is still going (logged).", scope=Scope.VASSAL, group="daemons", multi=True,
         metavar="M H D MON WD COMMAND", extra={"sets": "cron"}),
    # ---- cheaper: an adaptive worker count between cheaper and processes (docs/autoscaling.md)
    _opt("cheaper", v.integer(0, 4096), 0, "The minimum number of workers, and turns the cheaper mode on "
         "(0 = off: always ``processes`` workers). ``processes`` is then the ceiling; the algorithm "
         "(cheaper-algo) spawns and retires workers between the two. Must be below processes (a larger "
         "value is lowered to processes - 1, with a warning, as uWSGI does).",
         group="cheaper", metavar="N"),
    _opt("cheaper-initial", v.integer(0, 4096), 0, "Workers started at boot in cheaper mode (0 = the "
         "``cheaper`` value, as uWSGI); kept within [cheaper, processes].", group="cheaper", metavar="N"),
    _opt("cheaper-step", v.integer(1, 4096), 1, "Workers spawned at once when the algorithm asks for more.",
         group="cheaper", metavar="N"),
    _opt("cheaper-overload", v.integer(1, 3600), 3, "spare: grow after every worker has been busy for this "
         "many seconds, shrink after two or more have been idle that long; backlog: grow while more "
         "than this many connections wait; busyness: the averaging window in seconds. uWSGI's default "
         "(3). In every algorithm a full house with a connection waiting grows at once "
         "(docs/autoscaling.md).", group="cheaper", metavar="N"),
    _opt("cheaper-algo", v.choice("spare", "spare2", "backlog", "busyness"), "spare", "The algorithm: "
         "``spare`` (uWSGI's default), ``spare2`` (keep ``cheaper`` idle workers), ``backlog`` (the "
         "listen queue; on TCP and Unix sockets here) or ``busyness`` (average busy time).",
         group="cheaper", metavar="NAME"),
    _opt("cheaper-idle", v.integer(1, 86_400), 10, "spare2: retire the extra workers once more than "
         "``cheaper`` workers have been idle for this many seconds (uWSGI's default, 10).",
         group="cheaper", metavar="SECONDS"),
    _opt("cheaper-busyness-max", v.integer(1, 100), 50, "busyness: spawn cheaper-step workers when the "
         "average busyness over a window is above this percentage.", group="cheaper", metavar="PERCENT"),
    _opt("cheaper-busyness-min", v.integer(0, 99), 25, "busyness: a window below this percentage is an "
         "idle cycle.", group="cheaper", metavar="PERCENT"),
    _opt("cheaper-busyness-multiplier", v.integer(1, 10_000), 10, "busyness: idle cycles in a row before "
         "the extra workers are retired.", group="cheaper", metavar="N"),
    _opt("cheaper-busyness-penalty", v.integer(0, 10_000), 1, "busyness: added to the multiplier when a "
         "worker has to be spawned again soon (within multiplier x overload seconds) after a retirement.",
         group="cheaper", metavar="N"),
    _opt("cheaper-busyness-backlog-alert", v.integer(0), 33, "busyness: spawn emergency workers at once "
         "when more than this many connections wait (0 = off); checked 4 times a second.",
         group="cheaper", metavar="N"),
    _opt("cheaper-busyness-backlog-step", v.integer(1, 4096), 1, "busyness: emergency workers spawned "
         "at once.", group="cheaper", metavar="N"),
    _opt("cheaper-busyness-backlog-multiplier", v.integer(1, 10_000), 3, "busyness: idle cycles before "
         "retiring while emergency workers are running.", group="cheaper", metavar="N"),
    _opt("cheaper-busyness-backlog-nonzero", v.integer(0), 60, "busyness: spawn an emergency worker when "
         "the queue has not been empty for this many seconds (0 = off).", group="cheaper",
         metavar="SECONDS"),
    _opt("cheaper-rss-limit-soft", v.integer(0), 0, "Spawn no more workers while the workers' resident "
         "memory adds up to this many bytes or more (0 = off).", group="cheaper", metavar="BYTES"),
    _opt("cheaper-rss-limit-hard", v.integer(0), 0, "Retire a worker (one a second, never below cheaper) "
         "while the workers' resident memory adds up to this many bytes or more (0 = off).",
         group="cheaper", metavar="BYTES"),
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
    _opt("procname", v.nonempty, None, "The title of every process of the vassal (the master and the "
         "workers), instead of 'emperor: master NAME' and 'emperor: worker N NAME'; "
         "procname-prefix still comes first.", group="logging", metavar="TEXT"),
    _opt("procname-master", v.nonempty, None, "The master's title (wins over procname).",
         group="logging", metavar="TEXT"),
    _opt("procname-append", v.text, "", "Appended to every process title.", group="logging",
         metavar="TEXT"),
    _opt("log-format", logformat.log_format, None, "The request line, with uWSGI's variables: "
         "%(addr) %(method) %(uri) %(proto) %(status) %(size) (response bytes, head included) "
         "%(rsize) (body bytes) %(hsize) (head bytes) %(cl) (request content length) %(msecs) "
         "%(micros) %(secs) %(pid) %(wid) %(ltime) %(ctime) %(ftime) %(time) (start) %(epoch) (now) "
         "%(tmsecs) %(tmicros) %(uagent) %(referer) %(host) %(user) %(var.NAME) (any request "
         "variable) %(headers) (response header count) %(vars) %(rss) %(vsz) %(rssM) %(vszM) "
         "%(core) and %(switches) (always 0); an unknown %(name) is an error. "
         "Compiled once when the worker starts. log-date, log-x-forwarded-for (for %(addr)) and the "
         "filters still apply; emperor's own timestamp and tag still start the line. In an ini file, "
         "as in uWSGI, %(name) stays as written unless name is an option or a placeholder.", group="logging",
         aliases=("logformat",), metavar="FORMAT"),
    _opt("log-maxsize", v.integer(0), 0, "Rotate the log file (logto or daemonize) once it is bigger "
         "than this many bytes: it is renamed to FILE.UNIXTIME (FILE.UNIXTIME.N when that exists) "
         "and a new one is opened (checked by the master once a second; 0 = never).",
         group="logging", metavar="BYTES"),
    _opt("logger", logformat.logger_spec, None, "Where the log goes: ``file:PATH`` (as logto), "
         "``stdio`` (stderr, the default) or ``syslog[:IDENT[,FACILITY]]`` (the local syslog, "
         "through /dev/log or $EMPEROR_SYSLOG_SOCKET; "
         "stderr keeps what the interpreter itself prints). uWSGI's other logger plugins are "
         "refused.", group="logging", metavar="KIND:ARGS"),
    _opt("req-logger", logformat.logger_spec, None, "Where request lines go (default: with "
         "everything else, see logger): ``file:PATH``, ``stdio`` or ``syslog[:IDENT[,FACILITY]]``.",
         group="logging", metavar="KIND:ARGS"),
    # ---- identity and Python environment (emperor/privileges.py, emperor/venv.py, docs/hosting.md)
    _opt("uid", v.nonempty, None, "Run as this user (a name or a number) once every socket is bound: the "
         "master, workers, zergs and reloads. Also sets the user's supplementary groups (initgroups) "
         "and, when ``gid`` is unset, the user's primary group (uWSGI keeps root's group then). An "
         "unknown user is a configuration error. In an emperor ini: the emperor itself drops to this "
         "user after binding its sockets. ``emperor-tyrant`` wins over it.", scope=Scope.ANY,
         group="identity", metavar="USER"),
    _opt("gid", v.nonempty, None, "Run as this group (a name or a number); see ``uid``.", scope=Scope.ANY,
         group="identity", metavar="GROUP"),
    _opt("add-gid", v.nonempty, None, "Add this supplementary group (name or number) after the user's own "
         "(repeatable).", scope=Scope.ANY, group="identity", multi=True, metavar="GROUP"),
    _opt("chown-socket", v.nonempty, None, "Owner of the Unix sockets, ``user[:group]``, set before the "
         "socket listens (as chmod-socket). Usually the vassal's user and the web server's group, with "
         "``chmod-socket = 660``.", group="identity", metavar="USER[:GROUP]"),
    _opt("umask", v.octal_umask, None, "Set the process umask (octal, e.g. 027) before anything is created.",
         scope=Scope.ANY, group="identity", metavar="MASK"),
    _opt("home", v.nonempty, None, "Run the application with this virtualenv's packages: the vassal is "
         "started with the venv's own ``bin/python`` (any CPython >= 3.11), and the emperor's package is "
         "made importable without its dependencies. A directory without ``bin/python`` and "
         "``pyvenv.cfg`` is a configuration error.", group="identity",
         aliases=("virtualenv", "venv", "pyhome"), short="H", metavar="DIR"),
    _opt("procname-prefix-spaced", v.spaced, None, "The same as procname-prefix with a space added after "
         "the text.", scope=Scope.ANY, group="logging", metavar="TEXT", extra={"sets": "procname-prefix"}),
    _opt("log-date", v.log_date, None, "Prefix each request line with the date: uWSGI's ctime form "
         "(``Mon Nov 30 10:39:04 2026 - ``) for a bare key or ``true``, else this strftime format "
         "followed by `` - `` (in an ini file write each % twice: %Y alone is a magic variable). "
         "``false`` turns it off. Other log lines always carry emperor's own timestamp.",
         group="logging", aliases=("logdate",), flag=True, metavar="STRFTIME"),
    _opt("log-4xx", v.boolean, False, "With disable-logging: still log requests answered with a 4xx status.",
         group="logging", flag=True),
    _opt("log-5xx", v.boolean, False, "With disable-logging: still log requests answered with a 5xx status.",
         group="logging", flag=True),
    _opt("log-slow", v.integer(0), 0, "With disable-logging: still log requests slower than this many "
         "milliseconds (0 = off).", group="logging", metavar="MS"),
    _opt("log-big", v.integer(0), 0, "With disable-logging: still log responses bigger than this many bytes "
         "(0 = off).", group="logging", metavar="BYTES"),
    _opt("log-zero", v.boolean, False, "With disable-logging: still log responses with an empty body.",
         group="logging", flag=True),
    _opt("log-x-forwarded-for", v.boolean, False, "Log the client address from the X-Forwarded-For "
         "header (as the proxy sent it) instead of REMOTE_ADDR, when the header is there.",
         group="logging", flag=True),
    _opt("memory-report", v.boolean, False, "After each logged request, log the worker's address space and "
         "resident memory (``{address space usage: ...} {rss usage: ...}``).", group="logging",
         flag=True),
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
         "``*.ini`` at its top level, links included), this glob (``dir/*.ini``, quoted) or every key "
         "under an etcd prefix (``etcd://HOST:PORT/PREFIX``, ``etcds://`` for TLS: docs/fleet.md). "
         "Repeatable.",
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
    _opt("emperor-required-heartbeat", v.integer(1, 86_400), 30, "A vassal that sends heartbeats "
         "(its ``heartbeat`` option) and then sends none for this many seconds (or twice its own period, "
         "if longer) is killed and respawned (uWSGI's default, 30).", scope=Scope.EMPEROR,
         group="emperor", metavar="SECONDS"),
    _opt("vassals-include", v.nonempty, None, "Load this ini file into every vassal, after the vassal's own "
         "file (so its values win for single-valued options). Repeatable.", scope=Scope.EMPEROR,
         group="emperor", multi=True, metavar="FILE"),
    _opt("vassal-set", v.env_assignment, None, "Give every vassal ``--key value`` before its own file (so "
         "the vassal's file wins); a key that is not a vassal option defines the placeholder %(key). "
         "Repeatable.", scope=Scope.EMPEROR, group="emperor", multi=True, aliases=("vassals-set",),
         metavar="KEY=VALUE"),
    _opt("touch-logreopen", v.nonempty, None, "Reopen the log file (logto/daemonize) when this file's "
         "mtime changes, for logrotate. SIGUSR1 does the same. The emperor passes its reopened log to "
         "every vassal that writes to it.", scope=Scope.ANY, group="logging", metavar="PATH"),
    # ---- fleet (docs/fleet.md): membership in etcd, vassal inis from etcd
    _opt("emperor-etcd", v.etcd_endpoints, None, "Register every READY vassal's TCP sockets in etcd, under "
         "``<emperor-etcd-prefix>/upstreams/<fleet-app>/<host:port>``, with a lease of "
         "``emperor-etcd-ttl`` seconds the emperor keeps alive (``emperor upstreams`` renders them into "
         "nginx). Comma-separated endpoints of one cluster, tried in turn. Needs ``pip install "
         "emperor[fleet]``. Not in uWSGI (its subscription server plays this part).",
         scope=Scope.EMPEROR, group="fleet", metavar="http://HOST:PORT[,...]"),
    _opt("emperor-etcd-prefix", v.etcd_prefix, "/emperor", "The key prefix of this fleet in etcd.",
         scope=Scope.EMPEROR, group="fleet", metavar="PREFIX"),
    _opt("emperor-etcd-ttl", v.integer(2, 600), 3, "Seconds the registration outlives an emperor that "
         "stops refreshing it (killed, hung, cut off): its keys vanish with the lease.",
         scope=Scope.EMPEROR, group="fleet", metavar="SECONDS"),
    _opt("emperor-etcd-advertise", v.nonempty, None, "The address registered for a socket bound to every "
         "interface (``:PORT``, ``0.0.0.0``, ``::``). Default: the local address of the route to the "
         "first etcd endpoint.", scope=Scope.EMPEROR, group="fleet", metavar="IP"),
    _opt("emperor-etcd-ca", v.nonempty, None, "CA bundle to verify https etcd endpoints with (etcd's "
         "``--trusted-ca-file`` side; passed to etcd3gw).", scope=Scope.EMPEROR, group="fleet",
         metavar="FILE"),
    _opt("emperor-etcd-cert", v.nonempty, None, "Client certificate for etcd (``--client-cert-auth``); "
         "with ``emperor-etcd-key``.", scope=Scope.EMPEROR, group="fleet", metavar="FILE"),
    _opt("emperor-etcd-key", v.nonempty, None, "The client certificate's private key.",
         scope=Scope.EMPEROR, group="fleet", metavar="FILE"),
    _opt("fleet-app", v.upstream_name, None, "The app name this vassal registers under with "
         "``emperor-etcd`` (the nginx upstream's name). Default: the vassal's name without ``.ini``.",
         scope=Scope.VASSAL, group="fleet", metavar="NAME"),
    _opt("weight", v.integer(1, 1000), 1, "This vassal's weight in the nginx upstream rendered from etcd "
         "(``server ADDR weight=N``). uWSGI's ``weight`` (subscriptions).", scope=Scope.VASSAL,
         group="fleet", metavar="N"),
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
    _opt("idle", v.integer(0), 0, "After this many seconds without a request and with no busy worker "
         "(0 = never): without die-on-idle, cheap mode as in uWSGI (the workers leave, the master keeps "
         "the sockets, the next connection brings the workers back and is served; "
         "docs/autoscaling.md); with die-on-idle, exit (an on-demand vassal goes back to its emperor, "
         "docs/emperor.md; a [zerg] frees its slot).", group="broodlord", metavar="SECONDS"),
    _opt("die-on-idle", v.boolean, False, "When idle: tell the emperor (an on-demand vassal goes back to "
         "waiting for a connection, a zerg frees its slot), finish any request in flight and exit.",
         group="broodlord", flag=True),
    _opt("cheap", v.boolean, False, "Fork no worker until the first connection arrives on a socket: the "
         "master binds, loads the app (unless lazy-apps) and reports ready, then waits.",
         group="processes", flag=True),
    # ---- on-demand vassals (docs/emperor.md): the emperor binds the socket, the vassal starts on the
    # first connection and gets it as fd 0
    _opt("emperor-on-demand-extension", v.nonempty, None, "On-demand vassals: a vassal FILE with a "
         "file FILE + EXT next to it (e.g. app.ini.socket for EXT = .socket) is not started; the emperor "
         "binds the address on that file's first line and starts the vassal at the first connection. A "
         "missing dot is added (uWSGI concatenates as written).", scope=Scope.EMPEROR,
         group="emperor", aliases=("emperor-on-demand-ext",), metavar="EXT"),
    _opt("emperor-on-demand-directory", v.nonempty, None, "On-demand vassals: every vassal (named "
         "NAME.ini) waits on the Unix socket DIR/NAME.socket, bound by the emperor, and starts at the "
         "first connection.", scope=Scope.EMPEROR, group="emperor", aliases=("emperor-on-demand-dir",),
         metavar="DIR"),
    _opt("emperor-on-demand-exec", v.nonempty, None, "On-demand vassals: run COMMAND with the vassal "
         "file's path as its only argument; the first line it prints is the address to bind (none: the "
         "vassal runs as usual). It must answer within 2 s.", scope=Scope.EMPEROR, group="emperor",
         metavar="COMMAND"),
    # ---- cold start (docs/emperor.md#the-template): not in uWSGI, whose vassals are exec'd
    _opt("emperor-template", v.boolean, True, "Start vassals and zergs by forking them from a template "
         "process that has already imported the vassal runtime (the emperor itself never forks; it "
         "adopts them as a child subreaper), instead of a fresh interpreter each time. A vassal whose "
         "home venv needs another interpreter is still exec'd. Off (false): every vassal is exec'd.",
         scope=Scope.EMPEROR, group="emperor", flag=True),
)


# uWSGI options that emperor does not implement (yet), each with its decision and the reason.
# Unknown keys are only warnings, so an option whose absence matters must be listed here.
_NOT_RUN = "the process would never run"
_SANDBOX = ("a sandbox setting emperor cannot apply; ignoring it would run the app with fewer "
            "restrictions than asked")
COMPAT: tuple[Option, ...] = (
    # ---- built in: emperor always behaves this way
    _compat("enable-threads", _B, "Python threads always work in emperor's workers (uWSGI needs this "
            "option to create the GIL)"),
    _compat("auto-procname", _B, "process titles are always set: 'emperor: master NAME' and "
            "'emperor: worker N NAME' (after procname-prefix)"),
    _compat("single-interpreter", _B, "a worker runs exactly one Python interpreter; there are no "
            "sub-interpreters"),
    _compat("thunder-lock", _B, "there is no accept lock to take: with one socket each worker blocks in "
            "accept(), which Linux hands to a single waiter; with several, a worker that loses the race "
            "polls again"),
    _compat("ignore-sigpipe", _B, "Python ignores SIGPIPE, and a client that went away is logged at "
            "debug level only"),
    _compat("ignore-write-errors", _B, "a write to a client that went away is logged at debug level only"),
    _compat("disable-write-exception", _B, "the server writes the iterable the app returns, so a client "
            "that went away never raises inside the app (only the legacy write() callable can)"),
    _compat("log-reopen", _B, "a reload re-executes the vassal, which opens its log file again"),
    _compat("log-master", _B, "workers write their log lines straight to the shared log (one write() "
            "per line, so lines never interleave) and the master rotates it (log-maxsize); there is no "
            "log pipe through the master to turn on"),
    # ---- accepted with a warning: harmless here
    _compat("plugin", _I, "emperor is a Python WSGI server and has no plugins", flag=False,
            aliases=("plugins",)),
    _compat("offload-threads", _I, "there are no offload threads; file responses use sendfile() in the "
            "worker", flag=False),
    _compat("max-fd", _I, "the open-file limit is inherited from the emperor; raise it there "
            "(LimitNOFILE in the systemd unit)", flag=False),
    _compat("reuse-port", _I, "each socket is bound once by the master and shared by its workers"),
    _compat("catch-exceptions", _I, "tracebacks go to the log, never to the client"),
    _compat("no-orphans", _I, "a vassal already dies with its emperor (PR_SET_PDEATHSIG)"),
    _compat("py-autoreload", _I, "source files are not watched; use touch-reload or emperor ctl reload",
            flag=False, aliases=("python-autoreload",)),
    _compat("harakiri-graceful-timeout", _I, "harakiri kills the worker's process group at once",
            flag=False),
    _compat("min-worker-lifetime", _I, "a worker is recycled as soon as max-requests or reload-on-rss "
            "asks", flag=False),
    _compat("evil-reload-on-rss", _I, "the master does not kill a worker mid-request for its memory; "
            "reload-on-rss recycles it after the response that crossed the limit", flag=False),
    _compat("cpu-affinity", _I, "workers are not pinned to CPUs", flag=False),
    _compat("so-keepalive", _I, "TCP keepalive is left at the kernel's default on accepted connections"),
    _compat("socket-sndbuf", _I, "the kernel's default send buffer is kept, except that a write of more than "
            "160 KiB on a Unix-socket connection raises that connection's buffer to fit it (docs/http.md, "
            "Responses)", flag=False),
    _compat("socket-rcvbuf", _I, "the kernel's default receive buffer is kept", flag=False),
    _compat("tcp-nodelay", _I, "responses are written in as few sends as possible; Nagle's delay does "
            "not hold them back"),
    _compat("pcre-jit", _I, "there is no internal routing, so no regular expressions to compile"),
    _compat("wsgi-disable-file-wrapper", _I, "wsgi.file_wrapper stays available; it sends the same bytes"),
    _compat("no-site", _I, "the interpreter is emperor's own, started with its site-packages"),
    _compat("py-tracebacker", _I, "there is no tracebacker socket; SIGUSR1 logs each worker's status",
            flag=False),
    _compat("show-config", _I, "use emperor check FILE to see every problem in a file"),
    _compat("stats-minified", _I, "the stats document is always compact JSON"),
    _compat("threads-stacksize", _I, "worker threads get Python's default stack size", flag=False),
    _compat("cheaper-busyness-verbose", _I, "every spawn and cheap is logged with its reason, and the "
            "busyness figures are in the stats (docs/autoscaling.md)"),
    _compat("fastcgi-socket", _R, "emperor speaks only the uwsgi protocol; put nginx in front",
            flag=False),
    _compat("cron2", _R, "the key=value cron form is not implemented: the job would never run; use "
            "cron or unique-cron", flag=False),
    _compat("spooler", _R, "the spooler is not implemented: spooled tasks would never run", flag=False),
    _compat("mule", _R, "mules are not implemented: " + _NOT_RUN, flag=False),
    _compat("exec-pre-app", _R, "hooks are not implemented: the command would never run", flag=False,
            aliases=("exec-as-root", "exec-as-user", "exec-post-app", "hook-pre-app", "hook-as-root",
                     "hook-as-user")),
    _compat("master-fifo", _R, "there is no master FIFO (a writer would block or fill a file); "
            "use the control plane (emperor ctl) or signals", flag=False),
    _compat("mount", _R, "one application per vassal; mounting apps under prefixes would route "
            "requests differently", flag=False),
    _compat("manage-script-name", _R, "PATH_INFO would keep the mount prefix; use nginx's "
            "uwsgi_modifier1 30, which emperor implements"),
    _compat("route", _R, "internal routing is not implemented; requests would not be routed as asked",
            flag=False, aliases=("route-host", "route-uri", "route-run", "final-route", "response-route")),
    _compat("add-header", _R, "responses would lack the header; add it in nginx", flag=False),
    _compat("gevent", _R, "loop engines are not implemented; one request per worker thread (use "
            "threads)", flag=False, aliases=("async", "ugreen")),
    _compat("chroot", _R, _SANDBOX, flag=False),
    _compat("cap", _R, _SANDBOX, flag=False, aliases=("emperor-cap",)),
    _compat("unshare", _R, _SANDBOX, flag=False, aliases=("emperor-unshare", "setns", "emperor-use-clone")),
    _compat("namespace", _R, _SANDBOX, flag=False, aliases=("ns", "namespace-keep-mount")),
    _compat("jail", _R, _SANDBOX, flag=False, aliases=("jail2", "emperor-jail", "pivot_root")),
    _compat("limit-as", _R, "a resource limit emperor does not apply; ignoring it would run the app "
            "without it", flag=False, aliases=("limit-nproc", "rlimit")),
    _compat("pyargv", _R, "sys.argv is not set for the app; an app that reads it would behave differently",
            flag=False),
    _compat("alarm", _R, "alarms are not implemented: the alarm would never fire", flag=False,
            aliases=("alarm-log", "alarm-segfault", "alarm-backlog")),
    _compat("declare-option", _R, "custom options are not supported", flag=False),
    # HTTP router and static-file options around what docs/http.md implements
    _compat("http-processes", _I, "there is no HTTP router process: the workers serve http listeners",
            flag=False, aliases=("http-workers",)),
    _compat("http-websockets", _I, "a WSGI app gets an Upgrade request as a plain request (emperor has "
            "no uwsgi.websocket_* API); ASGI vassals speak WebSockets on uwsgi sockets (docs/asgi.md)"),
    _compat("http-to", _I, "there is no HTTP router forwarding to a uwsgi socket: the workers serve "
            "the http listener with the same app", flag=False),
    _compat("static-gzip", _I, "static files are sent as they are (no .gz variants); nginx can "
            "compress", flag=False, aliases=("static-gzip-all", "static-gzip-dir", "static-gzip-ext")),
    _compat("static-expires-uri", _I, "no Expires header by URI; static-expires-type and static-expires "
            "are implemented", flag=False, aliases=("static-expires-type-mtime", "static-expires-mtime")),
    _compat("static-skip-ext", _R, "ignoring it would serve files with extensions meant to stay "
            "private (source files)", flag=False),
    _compat("subscribe-to", _R, "there is no subscription server: the vassal would never be routed to; "
            "register in etcd with emperor-etcd and render nginx upstreams (docs/fleet.md)", flag=False,
            aliases=("subscribe2", "st", "subscribe")),
    _compat("fastrouter-subscription-server", _R, "there is no fastrouter: use nginx with the upstreams "
            "emperor upstreams renders from etcd (docs/fleet.md)", flag=False,
            aliases=("http-subscription-server", "subscription-server")),
    _compat("subscriptions-sign-check", _R, "there are no subscriptions to check: protect the etcd "
            "prefix with TLS and etcd's access control (docs/fleet.md)", flag=False),
)

# Options other work is implementing (identity, HTTP, autoscaling): refused until a row in
# OPTIONS declares them (a row always wins over this map).
UNSUPPORTED: dict[str, str] = {
    "logto2": "not supported: logto is opened before the privilege drop and kept across reloads",
    "pidfile2": "not supported: pidfile is written as root and handed to the user, so reloads rewrite it",
    "no-initgroups": "the user's supplementary groups are always set (add more with add-gid)",
    "lazy": "use lazy-apps",
}

ALL: tuple[Option, ...] = (*OPTIONS, *COMPAT)  # what the CLI, the reader and the docs know

BY_NAME: dict[str, Option] = {}
for _o in ALL:
    for _n in (_o.name, *_o.aliases):
        assert _n not in BY_NAME, f"option {_n} declared twice"
        BY_NAME[_n] = _o


def lookup(name: str) -> Option | None:
    """Find an option by its name or an alias (``uwsgi-socket`` -> ``socket``)."""
    return BY_NAME.get(name)
