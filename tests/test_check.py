"""``emperor check`` over the examples and real-style files, and those files running for real.

The real-style files below are written for these tests in the shape production uWSGI files
have (tuning options, placeholders, logic blocks, a shared section); they are not copies of
anyone's file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from harness import request, wait_for, wait_for_log
from vassal_runner import APPS

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "vassals-examples"
GET = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
       "SERVER_NAME": "t", "SERVER_PORT": "80"}

# The way a Django deployment's uWSGI file looks after a few years of tuning: about 60 lines,
# with a Celery worker and a cron job next to the app, uWSGI's request-log format and rotation.
DJANGO = """\
# shop: production uWSGI settings (behind nginx, uwsgi_pass to the socket)
[uwsgi]
project = shop
base = {apps}
chdir = %(base)
module = testapp:application
env = DJANGO_SETTINGS_MODULE=%(project).settings.production
env = LANG=C.UTF-8
pythonpath = %(base)

; process model
master = true
processes = 2
threads = 2
enable-threads = true
single-interpreter = true
thunder-lock = true
lazy-apps = true
need-app = true
die-on-term = true
procname-master = %(project) uwsgi master
offload-threads = 2

; socket
socket = {sock}
chmod-socket = 660
vacuum = true
listen = 128
buffer-size = 32768
post-buffering = 8192
post-buffering-bufsize = 16384
limit-post = 10485760

; recycling and timeouts
max-requests = 5000
max-requests-delta = 500
max-worker-lifetime = 3600
reload-on-rss = 512
worker-reload-mercy = 60
harakiri = 60
harakiri-verbose = true
touch-reload = {tmp}/deploy.stamp
touch-chain-reload = {tmp}/chain.stamp
fs-reload = {tmp}/settings

; companions: a queue consumer and a nightly job
attach-daemon = exec sleep 600
smart-attach-daemon = {tmp}/beat.pid sh -c 'echo $$ > {tmp}/beat.pid; exec sleep 600'
cron = -1 -1 -1 -1 -1 touch {tmp}/cron.ran
unique-cron = 30 3 -1 -1 -1 sleep 1

; logging
logto = {tmp}/shop.log
log-format = %(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(size) "%(uagent)" %(msecs)ms
log-maxsize = 50000000
log-date = true
log-4xx = true
log-5xx = true
memory-report = true
ignore-sigpipe = true
ignore-write-errors = true
disable-write-exception = true
log-master = true
pidfile = {tmp}/%(project).pid
"""


def line_of(template: str, key: str) -> int:
    """The 1-based line of ``key = ...`` in a template (for the expected messages)."""
    return next(n for n, text in enumerate(template.splitlines(), 1) if text.startswith(key + " "))


# A Flask vassal that shares a [base] section of the same file and uses logic blocks.
FLASK = """\
[uwsgi]
ini = :base
if-env = APP_ENV=production
processes = 2
else
processes = 1
endif
for = A B
env = FLAG_%(_)=on
endfor
if-not-opt = socket
socket = {sock}
endif

[base]
chdir = {apps}
wsgi-file = testapp.py
callable = application
strict = false
plugins = python3
"""

EMPEROR = """\
[uwsgi]
emperor = {vassals}
master = true
vacuum = true
thunder-lock = true
enable-threads = true
die-on-term = true
pidfile = {tmp}/emperor.pid
logto = {tmp}/emperor.log
"""


def _check(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emperor", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def _write(tmp_path: Path, name: str, template: str, sock: str = "") -> Path:
    path = tmp_path / name
    path.write_text(template.format(apps=APPS, sock=sock, tmp=tmp_path, vassals=tmp_path / "vassals"))
    return path


def test_check_passes_the_examples() -> None:
    files = [EXAMPLES / "emperor.ini", *sorted((EXAMPLES / "apps-enabled").glob("*.ini")),
             *sorted((EXAMPLES / "apps-available").glob("*.ini"))]
    r = _check("check", *map(str, files))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(files) and all("OK, would start" in line for line in lines), r.stdout


def test_check_real_style_files(tmp_path: Path, sock_dir: Path) -> None:
    (tmp_path / "vassals").mkdir()
    django = _write(tmp_path, "shop.ini", DJANGO, str(sock_dir / "shop.sock"))
    assert len(DJANGO.splitlines()) >= 40
    offload = line_of(DJANGO, "offload-threads")
    flask = _write(tmp_path, "blog.ini", FLASK, str(sock_dir / "blog.sock"))
    emperor = _write(tmp_path, "emperor.ini", EMPEROR)
    r = _check("check", str(django), str(flask), str(emperor))
    assert r.returncode == 0, r.stdout + r.stderr
    verdicts = [line for line in r.stdout.splitlines() if ": OK" in line or ": FAILED" in line]
    assert verdicts == [f"{django}: OK, would start (0 errors, 1 warning)",
                        f"{flask}: OK, would start (0 errors, 1 warning)",
                        f"{emperor}: OK, would start (0 errors, 0 warnings)"]
    assert f"{django}:{offload}: offload-threads: warning: accepted and ignored: there are no" in r.stdout
    assert f"{flask}:20: plugins: warning: accepted and ignored" in r.stdout
    r = _check("--ini", str(django), "--check")
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith(f"{django}: OK")


def test_check_reports_every_problem_then_a_verdict_and_starts_nothing(tmp_path: Path,
                                                                       sock_dir: Path) -> None:
    sock = sock_dir / "bad.sock"
    bad = tmp_path / "bad.ini"
    bad.write_text(f"[uwsgi]\nsocket = {sock}\nmodule = no_such_module_here\nprocesess = 4\nthreads = lots\n"
                   "chroot = /jail\nharakiri = 30s\nchdir = /no/such/dir\n")
    good = _write(tmp_path, "good.ini", FLASK, str(sock_dir / "good.sock"))
    r = _check("check", str(bad), str(good))
    assert r.returncode == 78, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        f"{bad}:4: procesess: warning: unknown option, ignored (did you mean 'processes'?)",
        f"{bad}:5: threads: bad value: 'lots' is not a whole number",
        f"{bad}:6: chroot: not supported by emperor: a sandbox setting emperor cannot apply; ignoring it "
        "would run the app with fewer restrictions than asked",
        f"{bad}:7: harakiri: warning: '30s' is read as 30, as uWSGI reads it (only the leading digits "
        "count; 's' is ignored: there are no size suffixes)",
        f"{bad}: FAILED, would not start (2 errors, 2 warnings)",
        f"{good}:20: plugins: warning: accepted and ignored: emperor is a Python WSGI server and has no "
        "plugins",
        f"{good}: OK, would start (0 errors, 1 warning)"]
    assert not sock.exists()
    bad.write_text(f"[uwsgi]\nsocket = {sock}\nchdir = /no/such/dir\nwsgi-file = app.py\n")
    r = _check("check", str(bad))
    assert r.returncode == 78 and f"{bad}:3: chdir: /no/such/dir: no such directory" in r.stdout
    assert f"{bad}:4: wsgi-file: /no/such/dir/app.py: no such file" in r.stdout
    r = _check("check", str(tmp_path / "missing.ini"))
    assert r.returncode == 78 and "missing.ini: cannot read: No such file" in r.stdout


def test_production_style_file_starts_on_first_try(procs, tmp_path: Path, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "shop.sock")
    django = _write(tmp_path, "shop.ini", DJANGO, sock)
    v = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", str(django)], name="shop")
    log = tmp_path / "shop.log"  # logto
    wait_for(lambda: log.exists() and "ready: 2 worker" in log.read_text(), 20, what="ready")
    vars_ = {**GET, "REQUEST_METHOD": "POST", "CONTENT_LENGTH": "100", "HTTP_USER_AGENT": "curl/8",
             "REMOTE_ADDR": "127.0.0.1"}
    assert request(sock, vars_, body=b"x" * 100, timeout=10)[0] == 200
    offload = line_of(DJANGO, "offload-threads")
    assert f"shop.ini:{offload}: offload-threads: accepted and ignored" in log.read_text()  # at start
    assert "warning" not in log.read_text().replace(f"shop.ini:{offload}: offload-threads", "")
    # log-date + log-format, then memory-report
    line = (r'\w{3} \w{3} [ \d]\d [\d:]{8} \d{4} - 127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:[\d:]{8} [+-]\d{4}\] '
            r'"POST / HTTP/1\.1" 200 \d+ "curl/8" \d+ms\n.*rss usage')
    wait_for(lambda: re.search(line, log.read_text()), 10, what="the formatted request line")
    assert (tmp_path / "shop.pid").read_text().strip() == str(v.pid)
    wait_for(lambda: (tmp_path / "cron.ran").exists(), 10, what="the cron job")
    wait_for(lambda: (tmp_path / "beat.pid").exists(), 10, what="the smart daemon's pidfile")
    beat = int((tmp_path / "beat.pid").read_text())
    titles = {" ".join(p.cmdline()) for p in psutil.Process(v.pid).children()}
    assert "sleep 600" in titles and psutil.pid_exists(beat)  # the two companions run
    assert " ".join(psutil.Process(v.pid).cmdline()).strip() == "shop uwsgi master"  # procname-master
    procs.stop(v)
    wait_for(lambda: not psutil.pid_exists(beat), 10, what="the smart daemon stopped with the vassal")


def test_flask_style_file_with_logic_blocks_starts(procs, tmp_path: Path, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "blog.sock")
    flask = _write(tmp_path, "blog.ini", FLASK, sock)
    v = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", str(flask)], name="blog",
                    env={"APP_ENV": "production"})
    wait_for_log(v, r"ready: 2 worker", timeout=20)
    assert request(sock, GET, timeout=10)[0] == 200


def test_emperor_file_with_uwsgi_options_runs_the_production_vassal(procs, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                    sock_dir: Path) -> None:
    from test_emperor_rig import Rig

    rig = Rig(tmp_path / "vassals", sock_dir, procs)
    shop = rig.avail / "shop.ini"
    shop.write_text(DJANGO.format(apps=APPS, sock=rig.sock("shop"), tmp=tmp_path))
    rig.enable("shop")
    rig.start("master = true\nvacuum = true\nthunder-lock = true\nenable-threads = true\n"
              f"die-on-term = true\npidfile = {tmp_path}/emperor.pid\nemperor-control = off")
    rig.serving("shop")
    assert "emperor: warning" not in rig.log  # the emperor's own file: accepted, nothing to warn about
    offload = f"shop.ini:{line_of(DJANGO, 'offload-threads')}: offload-threads: accepted and ignored"
    wait_for(lambda: offload in (tmp_path / "shop.log").read_text(), 15, what="the warning in its logto")

    broken = rig.avail / "broken.ini"
    broken.write_text(f"[uwsgi]\nsocket = {rig.sock('broken')}\nprocesses = many\nthreads = 0\nchroot = /j\n"
                      "module = testapp\n")
    mark = rig.mark()
    rig.enable("broken")
    m = rig.wait_log(r"failed: 'broken.ini': (.*\n){3}", after=mark)  # every problem, in one message
    text = m.group(0)
    assert "broken.ini:3: processes: bad value" in text and "broken.ini:4: threads: bad value" in text
    assert "broken.ini:5: chroot: not supported by emperor" in text



def test_check_of_an_emperor_file_checks_its_vassals_as_the_emperor_runs_them(tmp_path: Path) -> None:
    vassals = tmp_path / "vassals"
    vassals.mkdir()
    (tmp_path / "common.ini").write_text("[uwsgi]\nreuse-port = true\n")
    emperor = _write(tmp_path, "emperor.ini", EMPEROR)
    with emperor.open("a") as f:
        f.write(f"vassal-set = processes=3\nvassals-include = {tmp_path}/common.ini\n")
    good = vassals / "good.ini"
    good.write_text(f"[uwsgi]\nsocket = {tmp_path}/g.sock\nmodule = testapp\nchdir = {APPS}\n")
    bad = vassals / "bad.ini"
    bad.write_text(f"[uwsgi]\nsocket = {tmp_path}/b.sock\nmodule = testapp\nthreads = none\n")
    r = _check("check", str(emperor))
    assert r.returncode == 78, r.stdout
    r2 = _check("--ini", str(emperor), "--check")
    assert (r2.returncode, r2.stdout) == (r.returncode, r.stdout)
    assert r.stdout.splitlines() == [
        f"{emperor}: OK, would start (0 errors, 0 warnings)",
        f"{bad}:4: threads: bad value: 'none' is not a whole number",
        f"{tmp_path}/common.ini:2: reuse-port: warning: accepted and ignored: each socket is bound once "
        "by the master and shared by its workers",
        f"{bad}: FAILED, would not start (1 error, 1 warning)",
        f"{tmp_path}/common.ini:2: reuse-port: warning: accepted and ignored: each socket is bound once "
        "by the master and shared by its workers",
        f"{good}: OK, would start (0 errors, 1 warning)"]


def test_check_usage() -> None:
    r = _check("check", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: emperor check FILE.ini")
    r = _check("check")
    assert r.returncode == 2 and "usage: emperor check" in r.stderr


def test_check_reports_reader_and_option_problems_in_one_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text(f"[uwsgi]\nsocket = {tmp_path}/x.sock\nmodule = testapp\nxml = old.xml\n"
                   "ini = missing.ini\nendif\nprocesses = many\n")
    r = _check("check", str(bad))
    assert r.returncode == 78
    assert r.stdout.splitlines() == [
        f"{bad}:4: xml: not supported by emperor: only ini files are read",
        f"{bad}:5: ini: cannot include {tmp_path}/missing.ini: cannot read: No such file or directory",
        f"{bad}:6: endif: no open for/if block to end",
        f"{bad}:7: processes: bad value: 'many' is not a whole number",
        f"{bad}: FAILED, would not start (4 errors, 0 warnings)"]
