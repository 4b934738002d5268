"""Companion processes and cron jobs (emperor/vassal/daemons.py): real vassals whose master starts,
restarts and stops real commands, plus the pure parts (the value forms, cron's time matching)
against a clock the test controls."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest
from harness import wait_for, wait_for_log
from vassal_runner import start_vassal

from emperor import daemonspec as d
from emperor.vassal import daemons

pytestmark = pytest.mark.live  # real processes (README: Tests)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_attach_daemon_is_restarted_when_it_dies_and_stopped_with_the_vassal(procs, sock_dir: Path,  # type: ignore[no-untyped-def]
                                                                          tmp_path: Path) -> None:
    sock = str(sock_dir / "d.sock")
    beat_pid = tmp_path / "beat.pid"
    v = start_vassal(procs, "--socket", sock, "--attach-daemon", "exec sleep 300",
                     "--smart-attach-daemon", f"{beat_pid} sh -c 'echo $$ > {beat_pid}; exec sleep 301'")
    first = int(wait_for_log(v, r"attach-daemon started \(pid (\d+)\): exec sleep 300").group(1))
    assert psutil.Process(first).cmdline() == ["sleep", "300"]
    assert psutil.Process(first).ppid() == v.pid
    wait_for(lambda: beat_pid.exists() and beat_pid.read_text().strip(), 10, what="the pidfile")
    beat = int(beat_pid.read_text())
    assert psutil.Process(beat).cmdline() == ["sleep", "301"]

    mark = v.log_size()
    os.kill(first, signal.SIGKILL)  # it dies: the master starts it again (throttled: it died young)
    wait_for_log(v, r"attach-daemon 'exec sleep 300' killed by signal 9; restarting in 1 s", after=mark)
    second = int(wait_for_log(v, r"attach-daemon started \(pid (\d+)\)", after=mark).group(1))
    assert second != first and _alive(second) and not _alive(first)

    mark = v.log_size()
    os.kill(v.pid, signal.SIGHUP)  # a reload: attach-daemon restarts with it, the pidfile one stays
    wait_for_log(v, r"ready: 1 worker", after=mark, timeout=15)
    third = int(wait_for_log(v, r"attach-daemon started \(pid (\d+)\)", after=mark).group(1))
    assert third != second and not _alive(second) and _alive(third)
    wait_for_log(v, rf"smart-attach-daemon already running as pid {beat} \({re.escape(str(beat_pid))}\): "
                 "adopted", after=mark)
    assert _alive(beat)

    procs.stop(v)  # a graceful stop takes both companions down
    wait_for(lambda: not _alive(third) and not _alive(beat), 10, what="the companions stopped")


def test_a_smart_daemon_that_dies_is_restarted(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """smart-attach-daemon2: a foreground command; the master writes its pidfile."""
    sock = str(sock_dir / "s.sock")
    pidfile = tmp_path / "worker.pid"
    v = start_vassal(procs, "--socket", sock, "--smart-attach-daemon2", f"{pidfile} exec sleep 302")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, what="the pidfile")
    first = int(pidfile.read_text())
    assert psutil.Process(first).cmdline() == ["sleep", "302"]
    mark = v.log_size()
    os.kill(first, signal.SIGTERM)
    wait_for_log(v, r"smart-attach-daemon2 'exec sleep 302' killed by signal 15; restarting", after=mark)
    wait_for(lambda: pidfile.read_text().strip() not in ("", str(first)), 10, what="a new pid in the pidfile")
    second = int(pidfile.read_text())
    assert _alive(second) and not _alive(first)
    procs.stop(v)
    wait_for(lambda: not _alive(second), 10, what="the daemon stopped with the vassal")


def test_a_daemon_that_keeps_dying_is_throttled(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "t.sock")
    v = start_vassal(procs, "--socket", sock, "--attach-daemon2", "cmd=exit 3,freq=30,max_throttle=2")
    wait_for_log(v, r"attach-daemon2 'exit 3' exited with status 3; restarting in 1 s")
    wait_for_log(v, r"attach-daemon2 'exit 3' exited with status 3; restarting in 2 s", timeout=10)
    wait_for(lambda: v.log_text().count("restarting in 2 s") >= 2, 10, what="the delay capped at 2 s")
    assert "restarting in 3 s" not in v.log_text()


def test_control_daemon_death_stops_the_vassal(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "c.sock")
    flag = tmp_path / "go"
    v = start_vassal(procs, "--socket", sock, "--attach-daemon2",
                     f"cmd=while [ ! -e {flag} ]; do sleep 0.1; done; exit 4,control=1")
    flag.write_text("")
    wait_for_log(v, r"control attach-daemon2 .* exited with status 4: stopping the vassal")
    assert v.wait(15) == 1


def test_attach_daemon2_touch_and_reload_signal(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "r.sock")
    stamp = tmp_path / "celery.stamp"
    out = tmp_path / "hups"
    cmd = f"trap 'echo hup >> {out}' HUP; while true; do sleep 0.1; done"
    v = start_vassal(procs, "--socket", sock, "--attach-daemon2",
                     f"cmd={cmd},touch={stamp},reloadsignal=HUP,stopsignal=TERM,env=COLOR=blue")
    pid = int(wait_for_log(v, r"attach-daemon2 started \(pid (\d+)\)").group(1))
    assert psutil.Process(pid).environ().get("COLOR") == "blue"
    stamp.write_text("")  # appearing counts, as touch-reload
    wait_for(lambda: out.exists() and "hup" in out.read_text(), 10, what="SIGHUP delivered to the daemon")
    assert _alive(pid)  # a reload signal, not a restart


def test_cron_job_runs_and_is_stopped_with_the_vassal(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "cr.sock")
    ran = tmp_path / "ran"
    now = time.localtime()
    # this minute, this hour (or the next minute, if the vassal starts just after it turns)
    minute = f"-1 {now.tm_hour} -1 {now.tm_mon} -1" if now.tm_sec < 50 else "-1 -1 -1 -1 -1"
    v = start_vassal(procs, "--socket", sock, "--cron", f"{minute} echo ran >> {ran}",
                     "--unique-cron", "-1 -1 -1 -1 -1 exec sleep 303")
    wait_for(lambda: ran.exists() and ran.read_text() == "ran\n", 10, what="the cron job's output")
    pid = int(wait_for_log(v, r"cron job started \(pid (\d+)\): exec sleep 303").group(1))
    wait_for_log(v, r"cron job 'echo ran >> .*' \(pid \d+\) exited with status 0")
    assert _alive(pid)
    procs.stop(v)
    wait_for(lambda: not _alive(pid), 10, what="the running cron job stopped with the vassal")


# ---- pure: the value forms and cron's clock ----------------------------------------------------
def test_value_forms() -> None:
    assert d.attach_daemon(" celery -A shop worker ").cmd == "celery -A shop worker"
    s = d.smart_attach_daemon("/run/beat.pid celery -A shop beat --pidfile /run/beat.pid")
    assert (s.pidfile, s.cmd, s.daemonize, s.survives_reload) == ("/run/beat.pid", s.cmd, False, True)
    assert s.cmd.startswith("celery -A shop beat")
    s = d.attach_daemon2("cmd=memcached -p 11311,freq=3,max_throttle=9,stopsignal=INT,control=1,"
                         "touch=/a;/b,env=A=1,env=B=x,y,chdir=/srv")
    assert (s.cmd, s.freq, s.max_throttle, s.stop_signal, s.control) == ("memcached -p 11311", 3, 9, 2, True)
    assert s.touch == ("/a", "/b") and s.env == (("A", "1"), ("B", "x,y")) and s.chdir == "/srv"
    with pytest.raises(ValueError, match="'uid' not supported: the master has already dropped"):
        d.attach_daemon2("cmd=x,uid=nobody")
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        d.attach_daemon2("cmd=x,colour=red")
    with pytest.raises(ValueError, match="needs cmd"):
        d.attach_daemon2("freq=3")
    with pytest.raises(ValueError, match="not a signal name"):
        d.attach_daemon2("cmd=x,stopsignal=NOPE")
    with pytest.raises(ValueError, match="expected 'PIDFILE COMMAND'"):
        d.smart_attach_daemon("/run/only.pid")
    c = d.cron("0 3 -1 -1 7 /usr/bin/backup --all")
    assert (c.fields, c.cmd, c.unique) == ((0, 3, -1, -1, 0), "/usr/bin/backup --all", False)
    assert d.unique_cron("-5 -1 -1 -1 -1 x").unique
    with pytest.raises(ValueError, match=r"minute 60 is outside 0\.\.59"):
        d.cron("60 -1 -1 -1 -1 x")
    with pytest.raises(ValueError, match="expected 'MIN HOUR MDAY MONTH WDAY COMMAND'"):
        d.cron("1 2 3 x")


def _at(text: str) -> time.struct_time:
    return time.strptime(text, "%Y-%m-%d %H:%M")


def test_cron_matching() -> None:
    nightly = d.cron("30 3 -1 -1 -1 x")
    assert nightly.matches(_at("2026-11-30 03:30")) and not nightly.matches(_at("2026-11-30 03:31"))
    every5 = d.cron("-5 -1 -1 -1 -1 x")
    assert every5.matches(_at("2026-11-30 10:35")) and not every5.matches(_at("2026-11-30 10:36"))
    sunday = d.cron("0 0 -1 -1 0 x")  # 2026-11-29 is a Sunday
    assert sunday.matches(_at("2026-11-29 00:00")) and not sunday.matches(_at("2026-11-30 00:00"))
    assert d.cron("0 0 -1 -1 7 x").matches(_at("2026-11-29 00:00"))  # 7 is Sunday too
    first = d.cron("0 12 1 6 -1 x")
    assert first.matches(_at("2027-06-01 12:00")) and not first.matches(_at("2027-07-01 12:00"))


def test_unique_cron_does_not_overlap_and_runs_once_a_minute(tmp_path: Path) -> None:
    """A clock the test controls; the jobs are real processes (stopped at the end)."""
    clock = [time.mktime(_at("2026-11-30 10:00")) + 5]
    out = tmp_path / "runs"
    sup = daemons.Supervisor([], [d.unique_cron("-1 -1 -1 -1 -1 exec sleep 30"),
                            d.cron(f"-2 -1 -1 -1 -1 echo x >> {out}")], "t", lambda what: None,
                       clock=lambda: clock[0])
    try:
        sup.tick(time.monotonic())
        assert len(sup.cron_pids) == 2  # both match 10:00
        sup.next_check = 0.0
        clock[0] += 30  # the same minute: nothing new
        sup.tick(time.monotonic())
        assert len(sup.cron_pids) == 2
        sleeper = next(p for p, s in sup.cron_pids.items() if s.unique)
        sup.next_check = 0.0
        clock[0] += 60  # 10:01: the unique one is still running (skipped); -2 does not match
        sup.tick(time.monotonic())
        assert [s.unique for s in sup.cron_pids.values()].count(True) == 1 and sleeper in sup.cron_pids
        sup.next_check = 0.0
        clock[0] += 60  # 10:02: the echo runs again
        sup.tick(time.monotonic())
        wait_for(lambda: out.exists() and out.read_text() == "x\nx\n", 10, what="two runs of the echo")
    finally:
        sup.finish(grace=2.0)
    assert not _alive(sleeper)


def test_the_option_table_does_not_import_the_vassal() -> None:
    """The values are parsed in emperor/daemonspec.py and emperor/logformat.py: the emperor
    validates them without importing emperor.vassal (docs/architecture.md)."""
    import subprocess
    import sys

    code = ("import sys, emperor.empire.emperor, emperor.options, emperor.config; "
            "print([m for m in sys.modules if m.startswith('emperor.vassal')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
