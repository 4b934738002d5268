"""Where an on-demand vassal's address comes from (uWSGI's three modes), and the emperor-side
socket bookkeeping (which sockets are watched in which state), with real files, commands and
sockets but no emperor process. The live behaviour is in tests/test_ondemand.py."""

from __future__ import annotations

import os
import selectors
import socket
import time
from pathlib import Path

import pytest

from emperor.empire import ondemand
from emperor.empire.ondemand import Modes, OnDemand, OnDemandError, address_for, first_line
from emperor.empire.scan import Found
from emperor.empire.vassals import State, Vassal

pytestmark = pytest.mark.live  # real processes (README: Tests)


def test_first_line_stops_at_the_first_control_character() -> None:
    assert first_line(b"/run/app.sock\nsecond\n") == "/run/app.sock"
    assert first_line(b"127.0.0.1:3031\r\n") == "127.0.0.1:3031"
    assert first_line(b"\n/run/app.sock") is None  # an empty first line: no address (uWSGI)
    assert first_line(b"") is None


def test_extension_mode_reads_the_file_next_to_the_vassal(tmp_path: Path) -> None:
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\n")
    assert address_for(Modes(extension=".socket"), str(ini)) is None  # no app.ini.socket: ordinary
    (tmp_path / "app.ini.socket").write_text("/run/app.sock\n")
    assert address_for(Modes(extension=".socket"), str(ini)) == "/run/app.sock"
    assert address_for(Modes(extension="socket"), str(ini)) == "/run/app.sock"  # the dot is added


def test_extension_mode_in_tyrant_mode_wants_the_owners_regular_file(tmp_path: Path) -> None:
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\n")
    target = tmp_path / "secret"
    target.write_text("/etc/shadow-first-line\n")
    (tmp_path / "app.ini.socket").symlink_to(target)
    with pytest.raises(OnDemandError, match=r"app\.ini\.socket"):
        address_for(Modes(extension=".socket"), str(ini), owner=os.getuid())  # a link: refused
    (tmp_path / "app.ini.socket").unlink()
    (tmp_path / "app.ini.socket").write_text("/run/app.sock\n")
    with pytest.raises(OnDemandError, match="owned by uid"):
        address_for(Modes(extension=".socket"), str(ini), owner=os.getuid() + 1)
    assert address_for(Modes(extension=".socket"), str(ini), owner=os.getuid()) == "/run/app.sock"


def test_directory_mode_uses_the_name_up_to_its_last_dot(tmp_path: Path) -> None:
    modes = Modes(directory="/run/od")
    assert address_for(modes, str(tmp_path / "shop.ini")) == "/run/od/shop.socket"
    assert address_for(modes, str(tmp_path / "shop.v2.ini")) == "/run/od/shop.v2.socket"
    assert address_for(modes, str(tmp_path / "noext")) is None


def ask(modes: Modes, path: Path, timeout: float = 10.0) -> Vassal:
    """Drive OnDemand as the emperor's loop does: arm, then feed it its selector's events."""
    sel = selectors.DefaultSelector()
    od = OnDemand(modes, sel)
    v = Vassal(path.name, str(path))
    f = Found(path.name, str(path), (1,))
    assert od.arm(v, f, time.monotonic())
    deadline = time.monotonic() + timeout
    while od.asking and time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            if key.data[0] == "ondemand-exec" and od.answer(key.data[1], v, f, time.monotonic()):
                v.on_demand = "(spawn it as an ordinary vassal)"
        od.sync({v.name: v}, time.monotonic())
    assert not od.asking
    od.close()
    return v


def test_exec_mode_runs_the_command_with_the_path_without_waiting(tmp_path: Path) -> None:
    script = tmp_path / "where.sh"
    script.write_text('#!/bin/sh\ncase "$1" in *shop.ini) echo "/run/$(basename "$1" .ini).sock";; esac\n')
    script.chmod(0o755)
    sel = selectors.DefaultSelector()
    od = OnDemand(Modes(exec=str(script)), sel)
    v = Vassal("shop.ini", str(tmp_path / "shop.ini"))
    assert od.arm(v, Found("shop.ini", str(tmp_path / "shop.ini"), (1,)), 0.0)  # returns at once
    assert v.state == State.ON_DEMAND and "shop.ini" in od.asking  # the command runs meanwhile
    od.close()
    v = ask(Modes(exec=f"{script}"), tmp_path / "other.ini")
    assert v.on_demand == "(spawn it as an ordinary vassal)"  # it printed nothing: ordinary


def test_exec_mode_binds_what_the_command_prints(tmp_path: Path, sock_dir: Path) -> None:
    script = tmp_path / "where.sh"
    script.write_text(f'#!/bin/sh\necho "{sock_dir}/$(basename "$1" .ini).sock"\nexec sleep 30\n')
    script.chmod(0o755)  # it goes on running after its line: the line is enough, the rest is killed
    t0 = time.monotonic()
    v = ask(Modes(exec=str(script)), tmp_path / "shop.ini")
    assert time.monotonic() - t0 < 5
    assert v.state == State.ON_DEMAND and v.on_demand == f"{sock_dir}/shop.sock"
    assert not os.path.exists(f"{sock_dir}/shop.sock")  # closed with the OnDemand


def test_exec_mode_failures_throttle_the_vassal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/sh\nexit 3\n")
    bad.chmod(0o755)
    v = ask(Modes(exec=str(bad)), tmp_path / "shop.ini")
    assert v.state == State.THROTTLED and "status 3" in v.last_error
    v = ask(Modes(exec=str(tmp_path / "missing")), tmp_path / "shop.ini")
    assert v.state == State.THROTTLED and "emperor-on-demand-exec" in v.last_error
    monkeypatch.setattr(ondemand, "EXEC_TIMEOUT", 0.3)
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    t0 = time.monotonic()
    v = ask(Modes(exec=str(slow)), tmp_path / "shop.ini")
    assert time.monotonic() - t0 < 5
    assert v.state == State.THROTTLED and "no answer within" in v.last_error


def test_sockets_are_watched_only_while_the_vassal_has_no_process(tmp_path: Path, sock_dir: Path) -> None:
    sel = selectors.DefaultSelector()
    od = OnDemand(Modes(directory=str(sock_dir)), sel)
    ini = tmp_path / "shop.ini"
    ini.write_text("[uwsgi]\n")
    v = Vassal("shop.ini", str(ini))
    f = Found("shop.ini", str(ini), (1,))
    assert od.arm(v, f, 0.0) and v.state == State.ON_DEMAND
    addr = str(sock_dir / "shop.socket")
    assert v.on_demand == addr and os.path.exists(addr)
    od.sync({"shop.ini": v}, 0.0)
    assert [k.data for k in sel.get_map().values()] == [("ondemand", "shop.ini")]
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(addr)
        assert sel.select(1.0)  # readable: a connection waits
        assert od.connection("shop.ini", v, 0.0)  # spawn now; the connection stays queued
        assert not sel.get_map()
        assert od.handoff("shop.ini") == (addr, od.held["shop.ini"].sock.fileno())
        v.spawned(4242, 0.0, (1,))
        od.sync({"shop.ini": v}, 0.0)
        assert not sel.get_map()  # running: the vassal accepts, not the emperor
        v.exited(22, 1.0)  # it crashed before serving: throttled
        assert v.state == State.THROTTLED and v.respawn_at > 1.0
        od.sync({"shop.ini": v}, 0.0)
        assert od.connection("shop.ini", v, 1.0) is False  # throttled: the queued client is closed
        client.settimeout(2.0)
        assert client.recv(1) == b""
    od.sync({}, 0.0)  # the record is gone: the socket is closed and its file removed
    assert not sel.get_map() and not os.path.exists(addr) and not od.held


def test_a_socket_that_cannot_be_bound_throttles_the_vassal(tmp_path: Path) -> None:
    od = OnDemand(Modes(directory=str(tmp_path / "missing-dir")), selectors.DefaultSelector())
    ini = tmp_path / "shop.ini"
    v = Vassal("shop.ini", str(ini))
    assert od.arm(v, Found("shop.ini", str(ini), (1,)), 0.0)
    assert v.state == State.THROTTLED and "on-demand socket" in v.last_error


def test_a_missing_on_demand_directory_stops_the_emperor_with_the_key(tmp_path: Path) -> None:
    from emperor import config
    from emperor.empire.emperor import Settings
    from emperor.options import Scope

    cfg = config.from_args([("emperor", str(tmp_path)), ("emperor-on-demand-directory", "nope")],
                           Scope.EMPEROR)
    with pytest.raises(config.ConfigError, match="emperor-on-demand-directory"):
        Settings.from_config(cfg, str(tmp_path))
    cfg = config.from_args([("emperor", str(tmp_path)), ("emperor-on-demand-dir", str(tmp_path))],
                           Scope.EMPEROR)
    assert Settings.from_config(cfg, str(tmp_path)).on_demand == Modes(directory=str(tmp_path))


def test_a_vassal_told_of_an_on_demand_socket_refuses_a_stdin_that_is_not_one(tmp_path: Path) -> None:
    """EMPEROR_ON_DEMAND names the socket; fd 0 must then be a listening socket, else a clear
    error and the socket exit status (never a silent start with no socket)."""
    import subprocess
    import sys

    from emperor.channel import Exit

    app = tmp_path / "app.py"
    app.write_text("def application(e, sr):\n    sr('200 OK', [])\n    return [b'']\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMPEROR_")}
    env["EMPEROR_ON_DEMAND"] = str(tmp_path / "od.sock")
    for stdin in (subprocess.DEVNULL, socket.socket(socket.AF_UNIX).detach()):  # a file; an unbound socket
        done = subprocess.run([sys.executable, "-m", "emperor.vassal", "--wsgi-file", str(app)], stdin=stdin,
                              env=env, capture_output=True, timeout=30, check=False)
        if isinstance(stdin, int) and stdin > 0:
            os.close(stdin)
        assert done.returncode == Exit.SOCKET, done.stderr.decode()
        assert b"on-demand socket" in done.stderr and b"fd 0" in done.stderr
