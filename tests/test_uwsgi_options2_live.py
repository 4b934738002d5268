"""More uWSGI options against real vassals: post-buffering with a slow client, log-format field by
field, log-maxsize rotation, req-logger and logger = file:, a real chain reload, fs-reload,
procname and procname-master. Each test polls the vassal's log, files or processes until a
deadline."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import psutil
import pytest
from harness import request, wait_for, wait_for_log
from harness.uwsgi_client import pack_header, pack_vars, parse_http_response
from vassal_runner import start_vassal, worker_pids

GET = {"REQUEST_METHOD": "GET", "PATH_INFO": "/pid", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
       "SERVER_NAME": "t", "SERVER_PORT": "80"}

pytestmark = pytest.mark.live  # real processes (README: Tests)

BODY_APP = """\
import json, time

def application(environ, start_response):
    called = time.time()
    inp = environ["wsgi.input"]
    body = inp.read()
    with open({calls!r}, "a") as f:
        f.write("called\\n")
    out = json.dumps({{"called": called, "input": type(inp).__name__, "len": len(body),
                      "ok": body == b"".join(bytes([65 + i % 26]) for i in range(len(body))),
                      "has_fileno": hasattr(inp, "fileno")}}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
"""


def _body(n: int) -> bytes:
    return bytes(65 + i % 26 for i in range(n))


def slow_post(sock: str, size: int, pieces: int, pause: float, stall: float = 0.0) -> tuple[float, bytes]:
    """POST ``size`` bytes in ``pieces`` with ``pause`` s between them (and, with ``stall``, stop
    after half the body for that long); returns (when the last byte was sent, the raw answer)."""
    body = _body(size)
    vars_ = {**GET, "REQUEST_METHOD": "POST", "PATH_INFO": "/post", "CONTENT_LENGTH": str(size)}
    block = pack_vars(vars_)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(sock)
    s.sendall(pack_header(len(block)) + block)
    step = -(-size // pieces)
    last = time.time()
    try:
        for i in range(0, size, step):
            if stall and i >= size // 2:
                time.sleep(stall)
                stall = 0.0
            s.sendall(body[i:i + step])
            last = time.time()
            time.sleep(pause)
    except OSError:
        pass  # the vassal gave up on us (body-read-timeout)
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    s.close()
    return last, b"".join(chunks)


def test_post_buffering_reads_the_whole_body_before_the_app(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    calls = tmp_path / "calls"
    (tmp_path / "body_app.py").write_text(BODY_APP.format(calls=str(calls)))
    sock = str(sock_dir / "pb.sock")
    v = start_vassal(procs, "--socket", sock, "--wsgi-file", str(tmp_path / "body_app.py"),
                     "--post-buffering", "4096", "--post-buffering-bufsize", "1024",
                     "--body-read-timeout", "2", "--limit-post", "100000", chdir=tmp_path)
    # small body, in memory: the app runs only after the last piece arrived
    last, raw = slow_post(sock, 3000, 4, 0.3)
    status, _h, body = parse_http_response(raw)
    seen = json.loads(body)
    assert status == 200 and seen["len"] == 3000 and seen["ok"] and seen["input"] == "Input"
    assert seen["called"] >= last - 0.05, (seen["called"], last)
    # bigger than post-buffering: spooled to a temporary file, still complete before the app
    last, raw = slow_post(sock, 50000, 5, 0.2)
    status, _h, body = parse_http_response(raw)
    seen = json.loads(body)
    assert status == 200 and seen["len"] == 50000 and seen["ok"] and seen["input"] == "FileInput"
    assert seen["called"] >= last - 0.05
    assert calls.read_text() == "called\n" * 2
    # a client that stalls past body-read-timeout: the app is never called
    mark = v.log_size()
    _last, raw = slow_post(sock, 8000, 4, 0.1, stall=3.0)
    assert raw == b""  # closed without an answer
    wait_for_log(v, r"request body not complete after 2 s \(body-read-timeout\)", after=mark)
    assert calls.read_text() == "called\n" * 2
    # limit-post still answers 413 first
    big = {**GET, "REQUEST_METHOD": "POST", "CONTENT_LENGTH": "200000"}
    assert request(sock, big, body=b"x" * 200000, timeout=10)[0] == 413


def test_without_post_buffering_the_app_reads_while_the_body_arrives(procs, sock_dir: Path,  # type: ignore[no-untyped-def]
                                                                     tmp_path: Path) -> None:
    """The contrast that makes the test above meaningful: without it the app starts first."""
    calls = tmp_path / "calls"
    (tmp_path / "body_app.py").write_text(BODY_APP.format(calls=str(calls)))
    sock = str(sock_dir / "npb.sock")
    start_vassal(procs, "--socket", sock, "--wsgi-file", str(tmp_path / "body_app.py"), chdir=tmp_path)
    last, raw = slow_post(sock, 3000, 4, 0.3)
    seen = json.loads(parse_http_response(raw)[2])
    assert seen["len"] == 3000 and seen["called"] < last - 0.3


def test_post_buffered_bodies_pass_the_wsgi_validator(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """testapp wraps every request in wsgiref.validate: both buffered inputs are valid wsgi.input."""
    sock = str(sock_dir / "pv.sock")
    start_vassal(procs, "--socket", sock, "--post-buffering", "100")
    post = {**GET, "REQUEST_METHOD": "POST"}
    for path in ("/echo", "/echo-lines", "/echo-chunks"):
        for size in (50, 5000):  # in memory, then a temporary file
            body = b"line\n" * (size // 5)
            vars_ = {**post, "PATH_INFO": path, "CONTENT_LENGTH": str(len(body))}
            status, _h, got, _raw = request(sock, vars_, body=body, timeout=10)
            assert status == 200, (path, size)
            expected = json.dumps(["line\n"] * (size // 5)).encode() if path == "/echo-lines" else body
            assert got == expected, (path, size, got[:80])


FORMAT = ('addr=%(addr) method=%(method) uri=%(uri) proto=%(proto) status=%(status) size=%(size) '
          'rsize=%(rsize) hsize=%(hsize) cl=%(cl) msecs=%(msecs) micros=%(micros) pid=%(pid) wid=%(wid) '
          'ltime=[%(ltime)] epoch=%(epoch) time=%(time) uagent="%(uagent)" referer="%(referer)" '
          'host=%(host) user=%(user) var=%(var.HTTP_X_TRACE) missing=%(var.NOPE) headers=%(headers) '
          'secs=%(secs) ctime=[%(ctime)] vars=%(vars) rssM=%(rssM) core=%(core) {}')


def test_log_format_field_by_field(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "lf.sock")
    ini = tmp_path / "lf.ini"  # as a real file has it: single % (left alone: not options)
    ini.write_text(f"[uwsgi]\nsocket = {sock}\nlog-format = {FORMAT}\n")
    v = start_vassal(procs, "--ini", str(ini))
    vars_ = {**GET, "PATH_INFO": "/big", "QUERY_STRING": "n=1234", "REQUEST_URI": "/big?n=1234",
             "REMOTE_ADDR": "192.0.2.7", "HTTP_USER_AGENT": "tester/1.0", "HTTP_REFERER": "http://r/",
             "HTTP_HOST": "shop.example", "REMOTE_USER": "ann", "HTTP_X_TRACE": "t-42",
             "REQUEST_METHOD": "POST", "CONTENT_LENGTH": "5"}
    before = int(time.time())
    status, headers, body, raw = request(sock, vars_, body=b"hello", timeout=10)
    assert status == 200 and len(body) == 1234
    m = wait_for_log(v, r"addr=.* \{\}\n")
    fields = dict(re.findall(r'(\w+)=("[^"]*"|\[[^\]]*\]|\S+)', m.group(0)))
    head_size = len(raw) - 1234
    expected = {"addr": "192.0.2.7", "method": "POST", "uri": "/big?n=1234", "proto": "HTTP/1.1",
                "status": "200", "size": str(len(raw)), "rsize": "1234", "hsize": str(head_size),
                "cl": "5", "uagent": '"tester/1.0"', "referer": '"http://r/"', "host": "shop.example",
                "user": "ann", "var": "t-42", "missing": "-", "headers": str(len(headers)),
                "wid": "1", "pid": str(next(iter(worker_pids(v))))}
    assert {k: fields[k] for k in expected} == expected
    assert int(fields["micros"]) >= int(fields["msecs"]) * 1000
    assert abs(float(fields["secs"]) - int(fields["micros"]) / 1e6) < 0.001
    assert fields["ctime"] == f"[{time.ctime(int(fields['time']))}]"
    assert fields["vars"] == str(len(vars_) + 1) and fields["core"] == "0"  # + SCRIPT_NAME, set by the worker
    assert 5 < int(fields["rssM"]) < 1000
    assert before <= int(fields["time"]) <= int(fields["epoch"]) <= time.time()
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", fields["ltime"])
    assert time.strftime("%d/%b/%Y", time.localtime(int(fields["time"]))) in fields["ltime"]


def test_log_format_with_an_unknown_variable_is_a_config_error(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    ini = tmp_path / "bad.ini"
    ini.write_text(f"[uwsgi]\nsocket = {tmp_path}/b.sock\nmodule = testapp\nlog-format = %(uri) %(colour)\n")
    r = subprocess.run([sys.executable, "-m", "emperor", "check", str(ini)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 78
    assert f"{ini}:4: log-format: bad value: %(colour) is not a log-format variable" in r.stdout


def test_log_maxsize_rotates_the_log(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "ms.sock")
    log = tmp_path / "app.log"
    v = start_vassal(procs, "--socket", sock, "--logto", str(log), "--log-maxsize", "3000", ready=False)
    wait_for(lambda: log.exists() and "ready: 1 worker" in log.read_text(), 15, what="ready")
    for i in range(40):
        assert request(sock, {**GET, "PATH_INFO": f"/fill-{i:02d}-" + "x" * 60}, timeout=10)[0] == 200
    wait_for(lambda: list(tmp_path.glob("app.log.*")), 10, what="a rotated log")
    rotated = sorted(tmp_path.glob("app.log.*"))[0]
    assert re.fullmatch(r"app\.log\.\d{10}(\.\d+)?", rotated.name)
    assert "/fill-00-" in rotated.read_text()
    # the workers follow: new request lines land in the new file
    wait_for(lambda: "log reopened (log-maxsize" in log.read_text(), 10, what="the reopen line")
    assert request(sock, {**GET, "PATH_INFO": "/after-rotation"}, timeout=10)[0] == 200
    wait_for(lambda: "/after-rotation" in log.read_text(), 10, what="the request in the new log")
    assert v.alive


def test_req_logger_file_and_logger_file(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "rl.sock")
    main, reqs = tmp_path / "main.log", tmp_path / "requests.log"
    v = start_vassal(procs, "--socket", sock, "--logger", f"file:{main}", "--req-logger", f"file:{reqs}",
                     ready=False)
    wait_for(lambda: main.exists() and "ready: 1 worker" in main.read_text(), 15, what="ready in logger file")
    assert request(sock, {**GET, "PATH_INFO": "/to-req-log"}, timeout=10)[0] == 200
    wait_for(lambda: reqs.exists() and '"GET /to-req-log HTTP/1.1" 200' in reqs.read_text(), 10,
             what="the request line in req-logger's file")
    assert "/to-req-log" not in main.read_text()
    assert v.alive


def test_touch_chain_reload_replaces_workers_one_at_a_time(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "ch.sock")
    stamp = tmp_path / "chain"
    v = start_vassal(procs, "--socket", sock, "--processes", "3", "--lazy-apps", "--touch-chain-reload",
                     str(stamp))
    before = worker_pids(v)
    master = v.pid
    mark = v.log_size()
    stamp.write_text("")
    wait_for_log(v, r"chain reload done", after=mark, timeout=30)
    text = v.log_text(after=mark)
    order = [int(w) for w in re.findall(r"chain reload: worker (\d) \(pid \d+\) finishes", text)]
    assert order == [1, 2, 3]
    # one at a time: each replacement accepted before the next old worker was told to finish
    steps = [m.start() for m in re.finditer(r"chain reload: worker \d", text)]
    exits = [m.start() for m in re.finditer(r"worker \d \(pid \d+\) exited after recycling", text)]
    assert len(exits) == 3 and steps[0] < exits[0] < steps[1] < exits[1] < steps[2] < exits[2]
    assert worker_pids(v).isdisjoint(before) and len(worker_pids(v)) == 3
    assert v.pid == master and "reloading" not in text  # the master stays; no full reload
    assert request(sock, GET, timeout=10)[0] == 200


def test_fs_reload_on_a_directory(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "fs.sock")
    watched = tmp_path / "conf.d"
    watched.mkdir()
    v = start_vassal(procs, "--socket", sock, "--fs-reload", str(watched))
    before = worker_pids(v)
    mark = v.log_size()
    (watched / "new.conf").write_text("x")  # an entry added: the directory's mtime changes
    wait_for_log(v, re.escape(str(watched)) + r" was touched: graceful reload", after=mark)
    wait_for_log(v, r"ready: 1 worker", after=mark, timeout=15)
    assert worker_pids(v).isdisjoint(before)


def test_procname_and_procname_master(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "pn.sock")
    v = start_vassal(procs, "--socket", sock, "--procname", "shop-app", "--procname-master", "shop-boss",
                     "--procname-append", " [prod]")
    wait_for(lambda: " ".join(psutil.Process(v.pid).cmdline()).strip() == "shop-boss [prod]", 10,
             what="the master's title")
    wid = next(iter(worker_pids(v)))
    wait_for(lambda: " ".join(psutil.Process(wid).cmdline()).strip() == "shop-app [prod]", 10,
             what="the worker's title")


def test_logger_syslog_sends_log_and_request_lines(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A datagram socket stands in for /dev/log (EMPEROR_SYSLOG_SOCKET)."""
    sink_path = str(sock_dir / "log.dgram")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(sink_path)
    sink.settimeout(0.5)
    got: list[str] = []

    def received(pattern: str) -> bool:
        while True:
            try:
                got.append(sink.recv(65536).decode())
            except TimeoutError:
                break
        return any(re.search(pattern, g) for g in got)

    try:
        sock = str(sock_dir / "sl.sock")
        v = start_vassal(procs, "--socket", sock, "--logger", "syslog:shop,local0", ready=False,
                         env={**os.environ, "EMPEROR_SYSLOG_SOCKET": sink_path})
        wait_for(lambda: received(r"^<134>shop\[\d+\]: .*ready: 1 worker"), 15, what="ready, via syslog")
        assert request(sock, {**GET, "PATH_INFO": "/via-syslog"}, timeout=10)[0] == 200
        wait_for(lambda: received(r'^<134>shop\[\d+\]: .*"GET /via-syslog HTTP/1.1" 200'), 10,
                 what="the request line via syslog")
        assert "/via-syslog" not in v.log_path.read_text()
    finally:
        sink.close()


def test_logger_syslog_without_a_socket_logs_to_stderr(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "sn.sock")
    v = start_vassal(procs, "--socket", sock, "--logger", "syslog",
                     env={**os.environ, "EMPEROR_SYSLOG_SOCKET": str(tmp_path / "none")})
    assert "logger = syslog: cannot reach the syslog socket" in v.log_path.read_text()
    assert request(sock, {**GET, "PATH_INFO": "/still-logged"}, timeout=10)[0] == 200
    wait_for_log(v, r"req-logger: .*request lines go to the log")
    wait_for_log(v, r'"GET /still-logged HTTP/1.1" 200')
