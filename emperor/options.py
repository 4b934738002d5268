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

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


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
         "counted from the accept (0 = no total bound). socket-timeout bounds each read only, so a "
         "peer trickling a byte now and then could hold a worker for as long as the body lasts; past "
         "this deadline the read fails (the app sees a ConnectionError) and the connection is closed. "
         "It also ends the drain of a body the app did not read (which never lasts more than "
         "socket-timeout, at most 2 s). Not in uWSGI (whose harakiri covers it bluntly).",
         group="sockets", metavar="SECONDS"),
    _opt("limit-post", v.integer(0), 0, "Largest request body accepted, in bytes (0 = no limit). Larger "
         "CONTENT_LENGTH values get a 413.", group="sockets", metavar="BYTES"),
    _opt("forwarded-allow-ips", v.ip_list, "127.0.0.1,::1", "TCP peers (comma-separated IPs and CIDR "
         "networks, or ``*``) whose HTTPS, REQUEST_SCHEME and UWSGI_SCHEME vars set "
         "``wsgi.url_scheme``; from any other TCP peer the scheme is http and the claim is logged. "
         "Unix-socket peers are always believed (the socket's mode decides who connects). gunicorn's "
         "name; uWSGI believes every peer.", group="sockets", metavar="IPS"),
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
         "touch-chain-reload and touch-workers-reload do the same graceful reload of every worker "
         "(uWSGI replaces workers one at a time, or only the workers).",
         group="processes", multi=True, aliases=("touch-chain-reload", "touch-workers-reload"),
         metavar="PATH"),
    _opt("harakiri-verbose", v.boolean, False, "On harakiri, also log what the worker was doing in the "
         "kernel (/proc/PID/syscall and wchan) before killing it.", group="processes", flag=True),
    _opt("reload-mercy", v.seconds, 60.0, "How long a graceful reload or stop waits for busy workers "
         "before SIGKILL. In the emperor: how long a stopping vassal may take before SIGKILL (30 s "
         "there when unset, as uWSGI's Ragnarok).", scope=Scope.ANY, group="processes",
         aliases=("worker-reload-mercy",), metavar="SECONDS"),
    _opt("heartbeat", v.integer(0, 3600), 0, "Under an emperor: send it a heartbeat every this many "
         "seconds from the master's loop (0 = off). A master that stops sending them (stopped, stuck) "
         "is killed and respawned by the emperor after ``emperor-required-heartbeat`` seconds "
         "(docs/emperor.md#heartbeat).", scope=Scope.VASSAL, group="processes", metavar="SECONDS"),
    _opt("die-on-term", v.boolean, False, "Accepted for compatibility: SIGTERM is always a graceful stop "
         "in emperor (see docs/signals.md).", scope=Scope.ANY, group="processes", flag=True,
         uwsgi=Decision.BUILT_IN, why="SIGTERM always stops gracefully in emperor (docs/signals.md)"),
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
    # ---- accepted with a warning: harmless here
    _compat("plugin", _I, "emperor is a Python WSGI server and has no plugins", flag=False,
            aliases=("plugins",)),
    _compat("log-master", _I, "workers write their log lines straight to the shared log; there is no "
            "log pipe through the master, and lines stay whole because each is one write()"),
    _compat("procname-master", _I, "the master's title is always 'emperor: master NAME' (after "
            "procname-prefix)", flag=False),
    _compat("log-format", _I, "request log lines keep emperor's format (docs/observability.md)",
            flag=False, aliases=("logformat",)),
    _compat("log-maxsize", _I, "the log file is not rotated by size; rotate it with logrotate "
            "(copytruncate, or touch-logreopen in the emperor)", flag=False),
    _compat("logger", _I, "log lines go to logto or daemonize if set, else to the emperor's log",
            flag=False),
    _compat("req-logger", _I, "request lines go to the same log as everything else", flag=False),
    _compat("post-buffering", _I, "the body is streamed to wsgi.input as the app reads it; nginx in "
            "front buffers request bodies already (uwsgi_request_buffering is on by default)", flag=False),
    _compat("post-buffering-bufsize", _I, "see post-buffering", flag=False),
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
    _compat("tcp-nodelay", _I, "responses are written in as few sends as possible; Nagle's delay does "
            "not hold them back"),
    _compat("pcre-jit", _I, "there is no internal routing, so no regular expressions to compile"),
    _compat("wsgi-disable-file-wrapper", _I, "wsgi.file_wrapper stays available; it sends the same bytes"),
    _compat("no-site", _I, "the interpreter is emperor's own, started with its site-packages"),
    _compat("procname", _I, "process titles are always 'emperor: master NAME' and 'emperor: worker N "
            "NAME' (after procname-prefix)", flag=False, aliases=("procname-append",)),
    _compat("py-tracebacker", _I, "there is no tracebacker socket; SIGUSR1 logs each worker's status",
            flag=False),
    _compat("show-config", _I, "use emperor check FILE to see every problem in a file"),
    _compat("stats-minified", _I, "the stats document is always compact JSON"),
    _compat("threads-stacksize", _I, "worker threads get Python's default stack size", flag=False),
    _compat("cheaper-busyness-verbose", _I, "every spawn and cheap is logged with its reason, and the "
            "busyness figures are in the stats (docs/autoscaling.md)"),
    _compat("fastcgi-socket", _R, "emperor speaks only the uwsgi protocol; put nginx in front",
            flag=False),
    _compat("fs-reload", _R, "not implemented: a change to this path would not reload the app", flag=False),
    _compat("attach-daemon", _R, "companion processes are not implemented: " + _NOT_RUN, flag=False,
            aliases=("attach-daemon2", "smart-attach-daemon", "smart-attach-daemon2")),
    _compat("cron", _R, "cron jobs are not implemented: the job would never run", flag=False,
            aliases=("unique-cron", "cron2")),
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
)

# Options other work is implementing (identity, HTTP, autoscaling): refused until a row in
# OPTIONS declares them (a row always wins over this map).
UNSUPPORTED: dict[str, str] = {
    "http": "planned (HTTP work): put nginx (uwsgi_pass) in front",
    "http-socket": "planned (HTTP work): put nginx (uwsgi_pass) in front",
    "https": "planned (HTTP work): terminate TLS in nginx",
    "static-map": "planned (HTTP work): serve static files from nginx",
    "protocol": "planned (HTTP work): emperor speaks the uwsgi protocol",
    "http-timeout": "planned (HTTP work)",
    "http-keepalive": "planned (HTTP work)",
    "check-static": "planned (HTTP work): serve static files from nginx",
    "static-index": "planned (HTTP work): serve static files from nginx",
    "static-expires": "planned (HTTP work): serve static files from nginx",
    "static-gzip-all": "planned (HTTP work): serve static files from nginx",
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
