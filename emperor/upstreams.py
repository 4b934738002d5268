"""``emperor upstreams``: render the fleet's etcd registrations into an nginx upstream file.

The consul-template pattern on etcd, built in. The command lists ``<prefix>/upstreams/``
once, then follows it with a watch from that revision (resumed from the last revision seen
after an idle period or a disconnect; listed again if the revision was compacted). After
each change it renders the template; only when the text differs from the file it writes it
atomically (a temporary file in the same directory, fsync, rename) and then runs ``--exec``
(``nginx -s reload``). While etcd is unreachable nothing is written: the last good file stays
and nginx keeps its upstreams.

Template syntax (docs/fleet.md): lines are copied as they are, except

- ``@app`` ... ``@end``: repeated for every app that has at least one server, sorted by name;
  ``$app`` is the app's name, ``$count`` its number of servers;
- ``@server`` ... ``@end`` inside an app block: repeated for every server of that app, sorted
  by address; ``$addr`` (``host:port``), ``$weight``, ``$vassal`` and ``$state``.

Placeholders use Python's ``string.Template`` (``$name`` or ``${name}``, ``$$`` for a ``$``,
as nginx variables need). Every value comes from etcd and is checked before it is rendered
(an address, a number, a safe name), so a key cannot inject nginx directives.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from string import Template

from emperor import etcdkv, validators

log = logging.getLogger("emperor.upstreams")

DEFAULT_TEMPLATE = """\
# Rendered by `emperor upstreams` from etcd; do not edit (the next change overwrites it).
@app
upstream $app {
@server
    server $addr weight=$weight max_fails=1 fail_timeout=2s;
@end
}
@end
"""

RETRY = 1.0
IDLE = 5.0
SETTLE = 0.1  # render once the changes have been quiet this long ...
MAX_SETTLE = 0.5  # ... or this long after the first one
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


class TemplateError(ValueError):
    """The template is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Server:
    addr: str
    weight: int
    vassal: str
    state: str


@dataclass
class Block:
    kind: str  # "text", "app" or "server"
    lines: list[str | Block]


def parse_template(text: str, where: str = "template") -> Block:
    """The template as nested blocks; TemplateError for an unbalanced or misplaced marker."""
    root = Block("text", [])
    stack = [root]
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        word = line.strip()
        if word in ("@app", "@server"):
            kind = word[1:]
            if kind == "app" and len(stack) != 1:
                raise TemplateError(f"{where}:{n}: @app inside another block")
            if kind == "server" and (len(stack) != 2 or stack[-1].kind != "app"):
                raise TemplateError(f"{where}:{n}: @server must be directly inside an @app block")
            block = Block(kind, [])
            stack[-1].lines.append(block)
            stack.append(block)
        elif word == "@end":
            if len(stack) == 1:
                raise TemplateError(f"{where}:{n}: @end without @app or @server")
            stack.pop()
        else:
            stack[-1].lines.append(line)
    if len(stack) != 1:
        raise TemplateError(f"{where}: @{stack[-1].kind} is not closed with @end")
    render(root, {"demo": [Server("127.0.0.1:1", 1, "demo.ini", "ready")]}, where)  # unknown $names
    return root


def render(root: Block, apps: dict[str, list[Server]], where: str = "template") -> str:
    out: list[str] = []

    def emit(block: Block, values: dict[str, object]) -> None:
        for item in block.lines:
            if isinstance(item, str):
                try:
                    out.append(Template(item).substitute(values))
                except (KeyError, ValueError) as exc:
                    raise TemplateError(f"{where}: {item.strip()!r}: unknown or bad placeholder "
                                        f"{exc}") from None
            elif item.kind == "app":
                for app in sorted(apps):
                    servers = sorted(apps[app], key=lambda s: s.addr)
                    if servers:
                        emit(item, {"app": app, "count": len(servers)})
            else:
                app = str(values["app"])
                for s in sorted(apps.get(app, []), key=lambda s: s.addr):
                    emit(item, {**values, "addr": s.addr, "weight": s.weight, "vassal": s.vassal,
                                "state": s.state})

    emit(root, {})
    return "".join(out)


def parse_key(prefix: str, key: str, value: bytes) -> tuple[str, Server] | None:
    """``<prefix>/upstreams/<app>/<host:port>`` and its JSON value -> (app, server); None (logged)
    for anything that could not be rendered safely."""
    rest = key[len(prefix) + len("/upstreams/"):]
    app, _, addr = rest.partition("/")
    try:
        validators.upstream_name(app)
        host, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("not HOST:PORT")
        bare = host.strip("[]")
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            if not _HOST.fullmatch(bare):
                raise ValueError("not an IP address or host name") from None
        data = json.loads(value or b"{}")
        weight = int(data.get("weight", 1))
        if not 1 <= weight <= 1000:
            raise ValueError(f"weight {weight} out of 1..1000")
        vassal = str(data.get("vassal", ""))
        state = str(data.get("state", ""))
        if not (vassal.isprintable() and state.isprintable()) or any(c in vassal + state for c in ";{}$"):
            raise ValueError("unsafe vassal or state text")
    except (ValueError, TypeError, AttributeError) as exc:
        log.warning("upstreams: skipped %r: %s", key, exc)
        return None
    return app, Server(addr, weight, vassal, state)


def model(prefix: str, kvs: dict[str, bytes]) -> dict[str, list[Server]]:
    apps: dict[str, list[Server]] = {}
    for key, value in kvs.items():
        parsed = parse_key(prefix, key, value)
        if parsed:
            apps.setdefault(parsed[0], []).append(parsed[1])
    return apps


def write_if_changed(path: str, text: str) -> bool:
    """Atomically replace ``path`` with ``text`` unless it already holds exactly that."""
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        if f.read() == text:
            return False
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".upstreams-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


class Renderer:
    """Follows the prefix and keeps ``out`` rendered; ``run`` until ``stop`` is set.

    The watch (main thread) only updates the key set and marks it dirty; a render thread
    waits until the changes have been quiet for ``SETTLE`` seconds (at most ``MAX_SETTLE``
    after the first one), so an emperor stopping ten vassals costs one nginx reload, not ten.
    """

    def __init__(self, client: etcdkv.Client, prefix: str, template: Block, out: str,
                 command: list[str] | None, template_name: str = "template") -> None:
        self.client, self.prefix, self.template, self.out = client, prefix, template, out
        self.command, self.template_name = command, template_name
        self.kvs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.stop = threading.Event()
        self.renders = 0

    def refresh(self) -> None:
        with self.lock:
            kvs = dict(self.kvs)
        text = render(self.template, model(self.prefix, kvs), self.template_name)
        if not write_if_changed(self.out, text):
            return
        self.renders += 1
        log.info("upstreams: wrote %s (%d keys)", self.out, len(kvs))
        if self.command:
            try:
                done = subprocess.run(self.command, timeout=30, capture_output=True, text=True, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.error("upstreams: %s failed: %s", shlex.join(self.command), exc)
                return
            if done.returncode != 0:
                log.error("upstreams: %s exited with %d: %s", shlex.join(self.command), done.returncode,
                          (done.stderr or done.stdout).strip()[:300])

    def _render_loop(self) -> None:
        while not self.stop.is_set():
            if not self.dirty.wait(0.5):
                continue
            until = time.monotonic() + MAX_SETTLE
            while time.monotonic() < until:
                self.dirty.clear()
                if not self.dirty.wait(SETTLE):
                    break
            self.dirty.clear()
            try:
                self.refresh()
            except (OSError, TemplateError) as exc:
                log.error("upstreams: cannot write %s: %s", self.out, exc)

    def _set(self, kvs: dict[str, bytes]) -> None:
        with self.lock:
            self.kvs = kvs
        self.dirty.set()

    def _apply(self, ev: etcdkv.Event) -> None:
        with self.lock:
            if ev.kind == "put":
                self.kvs[ev.key] = ev.value
            else:
                self.kvs.pop(ev.key, None)
        self.dirty.set()

    def run(self) -> None:
        renderer = threading.Thread(target=self._render_loop, name="render", daemon=True)
        renderer.start()
        watched = f"{self.prefix}/upstreams/"
        failing = False
        try:
            while not self.stop.is_set():
                try:
                    kvs, revision = self.client.get_prefix(watched)
                    self._set({k: v for k, (v, _) in kvs.items()})
                    if failing:
                        log.info("upstreams: etcd reachable again")
                        failing = False
                    revision += 1
                    while not self.stop.is_set():
                        for ev in self.client.watch(watched, revision, idle=IDLE):
                            self._apply(ev)
                            revision = max(revision, ev.revision + 1)
                except etcdkv.Compacted:
                    continue
                except etcdkv.EtcdError as exc:
                    if not failing:
                        log.warning("upstreams: etcd unreachable, keeping %s as it is: %s", self.out, exc)
                        failing = True
                    self.stop.wait(RETRY)
        finally:
            self.stop.set()
            renderer.join(timeout=MAX_SETTLE + 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emperor upstreams", description="Render the fleet's upstreams registered in etcd into an "
        "nginx file, again at every change, and run a command after each write (docs/fleet.md).")
    parser.add_argument("--etcd", required=True, metavar="URL[,URL...]", help="etcd endpoints")
    parser.add_argument("--prefix", default="/emperor", help="the fleet's key prefix (default /emperor)")
    parser.add_argument("--template", metavar="FILE", help="template file (default: one upstream block "
                        "per app; --print-template shows it)")
    parser.add_argument("--out", metavar="FILE", help="the file to write (include it in nginx's http {})")
    parser.add_argument("--exec", dest="command", metavar="CMD", help="run after each write, e.g. "
                        "'nginx -s reload'")
    parser.add_argument("--once", action="store_true", help="render once and exit (1 if etcd is unreachable)")
    parser.add_argument("--print-template", action="store_true", help="print the default template and exit")
    parser.add_argument("--etcd-ca", metavar="FILE")
    parser.add_argument("--etcd-cert", metavar="FILE")
    parser.add_argument("--etcd-key", metavar="FILE")
    return parser


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.print_template:
        sys.stdout.write(DEFAULT_TEMPLATE)
        return 0
    if not args.out:
        parser.error("--out FILE is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        prefix = validators.etcd_prefix(args.prefix)
        endpoints = etcdkv.parse_endpoints(args.etcd)
        etcdkv.require_client()
        if args.template:
            with open(args.template, encoding="utf-8") as f:
                template = parse_template(f.read(), args.template)
        else:
            template = parse_template(DEFAULT_TEMPLATE, "default template")
    except (ValueError, OSError) as exc:
        print(f"emperor upstreams: {exc}", file=sys.stderr)
        return 2
    client = etcdkv.Client(endpoints, timeout=2.0,
                           tls=etcdkv.Tls(args.etcd_ca, args.etcd_cert, args.etcd_key))
    renderer = Renderer(client, prefix, template, args.out,
                        shlex.split(args.command) if args.command else None, args.template or "template")
    if args.once:
        try:
            kvs, _ = client.get_prefix(f"{prefix}/upstreams/")
        except etcdkv.EtcdError as exc:
            print(f"emperor upstreams: {exc}", file=sys.stderr)
            return 1
        renderer.kvs = {k: v for k, (v, _) in kvs.items()}
        try:
            renderer.refresh()
        except OSError as exc:
            print(f"emperor upstreams: cannot write {args.out}: {exc}", file=sys.stderr)
            return 1
        return 0
    import signal

    signal.signal(signal.SIGTERM, lambda *_: renderer.stop.set())
    try:
        renderer.run()
    except KeyboardInterrupt:
        pass
    return 0
