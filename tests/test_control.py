"""``emperor ctl`` against a real emperor: every command, the error cases, hostile requests
(row 18 of reliability-security.md table 1.11), the private endpoint, and ``scale`` under load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from harness import BackgroundLoad, ProcGroup, wait_for
from test_emperor_rig import EventStream, Rig

from emperor.control import reference
from emperor.control.client import Client
from emperor.control.protocol import ControlError, Errno, Identity

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "reference" / "commands.md"


def test_commands_reference_is_up_to_date() -> None:
    """docs/reference/commands.md is generated: ``python -m emperor.control.reference > ...``."""
    assert DOCS.read_text() == reference.render(), "regenerate docs/reference/commands.md"


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


def ctl(endpoint: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emperor", "ctl", "--endpoint", endpoint, *args],
                          capture_output=True, text=True, timeout=timeout)


def ok(endpoint: str, *args: str) -> dict:  # type: ignore[type-arg]
    r = ctl(endpoint, "--json", *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    reply = json.loads(r.stdout)
    assert reply.pop("emperor")["pid"] > 0  # every reply says which emperor answered
    return reply  # type: ignore[no-any-return]


def start(rig: Rig, sock_dir: Path, *names: str) -> str:
    endpoint = f"ipc://{sock_dir}/ctl/control"
    (sock_dir / "ctl").mkdir(mode=0o700)
    for name in names:
        rig.enable(name)
    rig.start(extra=f"emperor-control = {endpoint}")
    for name in names:
        rig.serving(name)
    return endpoint


def state(endpoint: str, name: str) -> str:
    return str(ok(endpoint, "status", name)["vassal"]["state"])


def test_every_command_against_a_running_emperor(rig: Rig, sock_dir: Path) -> None:
    endpoint = start(rig, sock_dir, "app", "other")
    assert os.stat(f"{sock_dir}/ctl/control").st_mode & 0o777 == 0o600

    # events: follow the stream in the background while the other commands run
    stream = EventStream(endpoint)
    try:
        stream.connect(rig, "app.ini")
        listed = ok(endpoint, "list")
        assert sorted(v["id"] for v in listed["vassals"]) == ["app.ini", "other.ini"]
        assert all(type(v["pid"]) is int and v["pid"] > 0 for v in listed["vassals"])
        human = ctl(endpoint, "list")
        assert human.returncode == 0 and "app.ini" in human.stdout and "STATE" in human.stdout

        st = ok(endpoint, "status", "app")["vassal"]  # "app" is accepted for "app.ini"
        assert st["id"] == "app.ini" and st["pid"] == rig.vassal_pid("app")
        assert ok(endpoint, "stats")["stats"]["vassals"]

        mark = rig.mark()
        assert ok(endpoint, "reload", "app.ini") == {"reloaded": ["app.ini"]}
        rig.wait_log(r"reloaded: 'app.ini'", after=mark)
        mark = rig.mark()
        assert ok(endpoint, "reload", "--all")["reloaded"] == ["app.ini", "other.ini"]
        rig.wait_log(r"reloaded: 'other.ini'", after=mark)

        old_pid = rig.vassal_pid("other")
        assert ok(endpoint, "stop", "other") == {"stopping": "other.ini"}
        rig.wait_log(r"stopped: 'other.ini'", after=mark)
        # a change does not bring a held vassal back: touch it and app.ini together; once app.ini
        # has reloaded, the rescan that saw both changes is over
        mark = rig.mark()
        os.utime(rig.avail / "other.ini")
        os.utime(rig.avail / "app.ini")
        rig.wait_log(r"reloaded: 'app.ini'", after=mark)
        assert rig.vassal_pid("other") is None
        assert ok(endpoint, "list")["held"] == ["other.ini"]
        assert ok(endpoint, "start", "other") == {"starting": "other.ini"}
        rig.serving("other")
        assert rig.vassal_pid("other") not in (None, old_pid)

        wait_for(lambda: state(endpoint, "app") in ("ready", "loyal"), 10, what="app ready")
        assert ok(endpoint, "scale", "app", "3")["processes"] == 3
        wait_for(lambda: len(rig.worker_pids("app")) == 3, 10, what="three workers")
        assert ok(endpoint, "zergs") == {"enabled": False, "pool": {}}
        expected = {("app.ini", "reloading"), ("app.ini", "reloaded"), ("other.ini", "stopping"),
                    ("other.ini", "stopped"), ("other.ini", "spawned"), ("other.ini", "ready")}
        wait_for(lambda: expected <= set(stream.events()), 10,
                 what=f"events {sorted(expected - set(stream.events()))}")
    finally:
        stream.stop()

    # errors: unknown vassal, bad usage, a state that does not allow it
    for args in (("status", "nope"), ("stop", "../../x"), ("scale", "nope", "2"), ("start", "nope")):
        r = ctl(endpoint, *args)
        assert r.returncode == 1 and "UNKNOWN_VASSAL" in r.stderr, (args, r.stderr)
    r = ctl(endpoint, "start", "app")
    assert r.returncode == 1 and "BAD_STATE" in r.stderr
    r = ctl(endpoint, "reload")
    assert r.returncode == 1 and "MESSAGE_ERROR" in r.stderr
    r = ctl(endpoint, "scale", "app", "0")
    assert r.returncode == 1 and "MESSAGE_ERROR" in r.stderr
    assert ctl(endpoint, "frobnicate").returncode == 2  # argparse: not a command


def test_no_emperor_at_the_endpoint_fails_fast(tmp_path: Path) -> None:
    t = time.monotonic()
    r = ctl(f"ipc://{tmp_path}/none", "list")
    assert r.returncode == 3 and "no emperor listening" in r.stderr
    stale = tmp_path / "stale.sock"  # a socket file nobody listens on: the timeout applies
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    r = ctl(f"ipc://{stale}", "--timeout", "1", "list")
    assert r.returncode == 3 and "no reply" in r.stderr, r.stderr
    assert time.monotonic() - t < 15


def test_hostile_requests_get_error_replies_and_the_emperor_carries_on(rig: Rig, sock_dir: Path) -> None:
    endpoint = start(rig, sock_dir, "app")
    client = Client(endpoint, timeout=10)
    emperor = psutil.Process(rig.proc.pid)  # type: ignore[union-attr]

    def error(body: bytes) -> dict:  # type: ignore[type-arg]
        reply = json.loads(client.exchange(body))
        assert reply["status"] == "error", reply
        return reply  # type: ignore[no-any-return]

    assert error(b"\xff\xfe garbage")["errno"] == Errno.INVALID_JSON
    assert error(b"[1, 2]")["errno"] == Errno.INVALID_JSON
    assert error(b'{"command": 5}')["errno"] == Errno.MESSAGE_ERROR
    assert error(b'{"command": "rm -rf /"}')["errno"] == Errno.UNKNOWN_COMMAND
    assert error(b'{"command": "status", "properties": {}}')["errno"] == Errno.MESSAGE_ERROR
    assert error(b'{"command": "status", "properties": {"name": "app", "x": 1}}')["errno"] == \
        Errno.MESSAGE_ERROR
    assert error(b'{"command": "scale", "properties": {"name": "app", "processes": "9"}}')["errno"] == \
        Errno.MESSAGE_ERROR
    assert error(b'{"command": "status", "properties": {"name": "../../etc/passwd"}}')["errno"] == \
        Errno.UNKNOWN_VASSAL
    assert error(b'{"command": "status", "properties": {"name": "' + b"a" * 5000 + b'"}}')["errno"] == \
        Errno.MESSAGE_ERROR
    reply = error(b'{"id": 7, "command": "nope"}')
    assert reply["id"] == 7 and "unknown command" in reply["reason"]

    rss = emperor.memory_info().rss
    reply = json.loads(client.exchange(b"{" + b" " * (10 << 20) + b"}"))  # 10 MB: an error reply
    assert reply["status"] == "error" and reply["errno"] == Errno.TOO_LARGE
    assert "the limit is 65536" in reply["reason"]
    with pytest.raises(ControlError) as exc:
        client.exchange(b"{" + b" " * (20 << 20) + b"}")  # 20 MB: over the transport limit, dropped unread
    assert exc.value.errno == Errno.TOO_LARGE
    with pytest.raises(ControlError) as exc:
        client.call("status", name="x" * (1 << 20))  # the client refuses to send it at all
    assert exc.value.errno == Errno.TOO_LARGE
    assert emperor.memory_info().rss < rss + (8 << 20)
    assert client.call("list")["vassals"][0]["id"] == "app.ini"  # still answering
    assert rig.get("app")[0] == 200


def test_default_endpoint_is_private(rig: Rig, sock_dir: Path, tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    rig.enable("app")
    rig.start(env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    key = Identity.of_config([str(rig.root / "emperor.ini")], [], "/").key
    path = runtime / "emperor" / f"control-{key}"  # one per emperor: named by its ini
    wait_for(path.exists, 10, what="the default control socket")
    assert (runtime / "emperor").stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    rig.serving("app")  # scanned, so listed
    r = subprocess.run([sys.executable, "-m", "emperor", "ctl", "list"], capture_output=True, text=True,
                       env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=20)
    assert r.returncode == 0 and "app.ini" in r.stdout, r.stderr
    ini = rig.root / "emperor.ini"  # --ini finds the endpoint the way the emperor does
    r = subprocess.run([sys.executable, "-m", "emperor", "ctl", "--ini", str(ini), "list"],
                       capture_output=True, text=True, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
                       timeout=20)
    assert r.returncode == 0 and "app.ini" in r.stdout, r.stderr


def test_scale_up_and_down_under_load_drops_nothing(rig: Rig, sock_dir: Path) -> None:
    endpoint = start(rig, sock_dir, "app")
    wait_for(lambda: len(rig.worker_pids("app")) == 2, 10, what="two workers")
    master = rig.vassal_pid("app")
    before = rig.worker_pids("app")

    def probe() -> bool:
        status, _ = rig.get("app", "/sleep?s=0.02")
        return status == 200

    with BackgroundLoad(probe, threads=6, seconds=60) as load:
        wait_for(lambda: load.result.ok >= 30, 10, what="load running")
        mark = rig.mark()
        ok(endpoint, "scale", "app", "6")
        wait_for(lambda: len(rig.worker_pids("app")) == 6, 10, what="six workers")
        rig.wait_log(r"ready: 6 worker", after=mark)
        seen = load.result.ok
        wait_for(lambda: load.result.ok >= seen + 50, 15, what="load served by six workers")
        ok(endpoint, "scale", "app", "1")
        wait_for(lambda: len(rig.worker_pids("app")) == 1, 15, what="one worker")
        seen = load.result.ok
        wait_for(lambda: load.result.ok >= seen + 30, 15, what="load served by one worker")
        ok(endpoint, "scale", "app", "3")
        wait_for(lambda: len(rig.worker_pids("app")) == 3, 10, what="three workers")
        seen = load.result.ok
        wait_for(lambda: load.result.ok >= seen + 30, 15, what="load served by three workers")
    assert load.result.failed == 0 and load.result.ok > 0, load.result
    assert rig.vassal_pid("app") == master  # no restart
    assert before & rig.worker_pids("app")  # the first workers were kept (no reload)
    assert "retired after a scale-down" in rig.log
    # a reload re-reads the ini: back to its processes = 2
    mark = rig.mark()
    ok(endpoint, "reload", "app")
    rig.wait_log(r"reloaded: 'app.ini'", after=mark)
    wait_for(lambda: len(rig.worker_pids("app")) == 2, 15, what="the ini's two workers again")


# ---- issue 8, item 13: what emperor ctl answers ---------------------------------------------


def test_scale_is_answered_by_the_vassal_and_held_vassals_are_not_unknown(rig: Rig, sock_dir: Path) -> None:
    endpoint = start(rig, sock_dir, "app", "other")
    wait_for(lambda: state(endpoint, "app") in ("ready", "loyal"), 10, what="app ready")

    r = ctl(endpoint, "scale", "app", "4096")  # past the scoreboard (64 slots): the vassal refuses
    assert r.returncode == 1 and "REFUSED" in r.stderr and "scoreboard has 64 slots" in r.stderr, r.stderr
    assert r.stdout == ""
    r = ctl(endpoint, "scale", "app", "0")  # 0 is a value, not a missing one
    assert r.returncode == 1 and "processes must be 1 to 4096 (got 0)" in r.stderr, r.stderr
    r = ctl(endpoint, "scale", "app", "3")  # accepted: human text, not JSON
    assert r.returncode == 0 and r.stdout.startswith("scaled: app.ini to 3 worker(s)"), r
    wait_for(lambda: len(rig.worker_pids("app")) == 3, 10, what="three workers")
    assert ok(endpoint, "scale", "app", "2")["scaled"] == "app.ini"

    r = ctl(endpoint, "reload", "app")
    assert r.returncode == 0 and r.stdout.strip() == "reloading: app.ini", r
    mark = rig.mark()
    r = ctl(endpoint, "stop", "other")
    assert r.returncode == 0 and r.stdout.startswith("stopping: other.ini (held"), r
    rig.wait_log(r"stopped: 'other.ini'", after=mark)
    wait_for(lambda: "other.ini" not in [v["id"] for v in ok(endpoint, "list")["vassals"]], 10,
             what="other.ini gone from the table")
    for args in (("stop", "other"), ("reload", "other"), ("scale", "other", "2")):
        r = ctl(endpoint, *args)
        assert r.returncode == 1 and "BAD_STATE" in r.stderr and "held" in r.stderr, (args, r.stderr)
        assert "UNKNOWN_VASSAL" not in r.stderr
    assert ok(endpoint, "status", "other")["vassal"]["state"] == "held"
    r = ctl(endpoint, "status", "other")
    assert r.returncode == 0 and "state: held" in r.stdout, r
    r = ctl(endpoint, "start", "other")
    assert r.returncode == 0 and r.stdout.strip() == "starting: other.ini", r
    rig.serving("other")


# ---- issue 8, item 12: one control plane per emperor ----------------------------------------


def _ctl_env(runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emperor", "ctl", *args], capture_output=True, text=True,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=30)


def test_two_emperors_of_one_user_each_get_their_control_plane(tmp_path: Path, sock_dir: Path,
                                                               procs: ProcGroup) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    first, second = Rig(tmp_path / "one", sock_dir, procs), Rig(tmp_path / "two", sock_dir, procs)
    first.enable("alpha")
    second.enable("beta")
    first.start(env=env)
    second.start(env=env)
    first.serving("alpha")
    second.serving("beta")
    one, two = str(first.root / "emperor.ini"), str(second.root / "emperor.ini")

    r = _ctl_env(runtime, "--ini", two, "list")
    assert r.returncode == 0 and "beta.ini" in r.stdout and "alpha.ini" not in r.stdout, r
    r = _ctl_env(runtime, "--ini", one, "list")
    assert r.returncode == 0 and "alpha.ini" in r.stdout and "beta.ini" not in r.stdout, r
    r = _ctl_env(runtime, "list")  # which one? ctl does not guess
    assert r.returncode == 1 and "2 emperors" in r.stderr and "--ini" in r.stderr, r

    # the first emperor's endpoint with the second's ini: refused before anything is done
    endpoint = f"ipc://{runtime}/emperor/control-{Identity.of_config([one], [], '/').key}"
    mark = first.mark()
    r = _ctl_env(runtime, "--ini", two, "--endpoint", endpoint, "stop", "alpha")
    assert r.returncode == 1 and "WRONG_EMPEROR" in r.stderr and one in r.stderr, r
    assert "alpha.ini" in _ctl_env(runtime, "--ini", one, "list").stdout
    assert "stopping" not in first.log[mark:]

    # an explicitly configured endpoint another emperor holds: a boot error, not an emperor without one
    third = Rig(tmp_path / "three", sock_dir, procs)
    third.enable("gamma")
    proc = third.start(extra=f"emperor-control = {endpoint}", env=env, wait=False)
    wait_for(lambda: not proc.alive(), 15, what="the third emperor to refuse to start")
    assert proc.popen.returncode == 1
    assert "cannot start: emperor-control" in third.log and "in use" in third.log, third.log
    assert "alpha.ini" in _ctl_env(runtime, "--ini", one, "list").stdout
