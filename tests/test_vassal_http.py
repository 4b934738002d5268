"""A vassal behind real nginx (uwsgi_pass), over a Unix socket and over TCP.

One nginx and two vassals serve the whole module (starting them per test would triple the
run time); every request goes through nginx with Debian's stock uwsgi_params, and the test
app runs under wsgiref.validate.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Nginx, ProcGroup, free_port, header, http_request
from vassal_runner import EXAMPLE_APPS, start_vassal

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

TRANSPORTS = ["unix", "tcp"]


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("http")
    socks = Path(tempfile.mkdtemp(prefix="emp-", dir="/tmp"))
    socks.chmod(0o755)
    procs = ProcGroup(tmp / "logs")
    try:
        sock = str(socks / "app.sock")
        port = free_port()
        start_vassal(procs, "--socket", sock, "--chmod-socket", "660", "--processes", "2", name="unix")
        start_vassal(procs, "--socket", f"127.0.0.1:{port}", "--processes", "2", "--threads", "2",
                     name="tcp")
        start_vassal(procs, "--socket", str(socks / "flask.sock"), "--processes", "2", name="flask",
                     module="flaskapp:app", chdir=EXAMPLE_APPS)
        ng = Nginx(tmp / "nginx", group=procs,
                   extra_http="large_client_header_buffers 4 64k;")
        ng.add_uwsgi("/", sock)
        ng.add_uwsgi("/mounted", sock, extra="uwsgi_param SCRIPT_NAME /mounted;\nuwsgi_modifier1 30;")
        ng.add_uwsgi("/flask", str(socks / "flask.sock"),
                     extra="uwsgi_param SCRIPT_NAME /flask;\nuwsgi_modifier1 30;")
        tcp = ng.add_server()
        ng.add_uwsgi("/", ("127.0.0.1", port), server=tcp)
        ng.start()
        yield {"unix": ng.url("/").rstrip("/"), "tcp": ng.url("/", server=tcp).rstrip("/"),
               "log": str(tmp / "logs")}
    finally:
        procs.stop_all()
        procs.assert_no_orphans()
        shutil.rmtree(socks, ignore_errors=True)


@pytest.fixture(params=TRANSPORTS)
def base(request: pytest.FixtureRequest, front: dict[str, str]) -> str:
    return front[request.param]


def env_of(base: str, path: str = "/env", **kw: object) -> dict[str, str]:
    status, _, body = http_request(base + path, **kw)  # type: ignore[arg-type]
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def test_get_and_environ(base: str) -> None:
    env = env_of(base, "/env?a=1&b=%C3%A9")
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/env"
    assert env["QUERY_STRING"] == "a=1&b=%C3%A9"
    assert env["SCRIPT_NAME"] == ""
    assert env["wsgi.url_scheme"] == "http"
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_unicode_path_is_decoded_latin1(base: str) -> None:
    env = env_of(base, "/env/caf%C3%A9%20x")
    # PEP 3333: bytes-as-latin-1; nginx decodes %XX in PATH_INFO
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/env/café x"
    assert env["REQUEST_URI"] == "/env/caf%C3%A9%20x"


def test_head_has_no_body(base: str) -> None:
    status, headers, body = http_request(base + "/head-body", method="HEAD")
    assert status == 200 and body == b""
    assert header(headers, "Content-Length") == str(len(b"body that HEAD must not carry"))


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(base: str, code: int) -> None:
    status, _, body = http_request(f"{base}/{code}")
    assert status == code and body == b""


def test_post_1mib_echo(base: str) -> None:
    payload = bytes(range(256)) * 4096
    status, _, body = http_request(base + "/echo", method="POST", body=payload,
                                   headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and body == payload


def test_post_read_in_chunks_and_lines(base: str) -> None:
    status, _, body = http_request(base + "/echo-chunks", method="POST", body=b"z" * 12345)
    assert status == 200 and body == b"z" * 12345
    status, _, body = http_request(base + "/echo-lines", method="POST", body=b"one\ntwo\nthree")
    assert json.loads(body) == ["one\n", "two\n", "three"]


def test_post_body_ignored_by_app(base: str) -> None:
    status, _, body = http_request(base + "/ignore-body", method="POST", body=b"q" * 300_000)
    assert status == 200 and body == b"ignored"


def test_64k_response(base: str) -> None:
    status, _, body = http_request(base + "/big?n=65536")
    assert status == 200 and body == b"x" * 65536


def test_streamed_response(base: str) -> None:
    status, _, body = http_request(base + "/stream?n=50")
    assert status == 200
    assert body == b"".join(f"chunk {i}\n".encode() for i in range(50))


def test_write_callable(base: str) -> None:
    assert http_request(base + "/write")[2] == b"written and returned"


def test_file_wrapper_sendfile(base: str) -> None:
    status, _, body = http_request(base + "/file?n=100000")
    assert status == 200 and body == b"0123456789" * 100000


def test_large_cookie(base: str) -> None:
    cookie = "session=" + "c" * 30000
    env = env_of(base, headers={"Cookie": cookie, "X-Long": "y" * 20000})
    assert env["HTTP_COOKIE"] == cookie
    assert env["HTTP_X_LONG"] == "y" * 20000


def test_app_exception_is_500_and_worker_survives(base: str) -> None:
    assert http_request(base + "/raise")[0] == 500
    assert http_request(base + "/")[0] == 200


@pytest.mark.parametrize("path", ["/bad-header", "/bad-name", "/cl-te"])
def test_unsafe_response_head_becomes_500(base: str, path: str) -> None:
    status, headers, body = http_request(base + path)
    assert status == 500
    assert header(headers, "Set-Cookie") is None and b"never sent" not in body


def test_script_name_modifier30(front: dict[str, str]) -> None:
    env = env_of(front["unix"], "/mounted/env")
    assert env["SCRIPT_NAME"] == "/mounted"
    assert env["PATH_INFO"] == "/env"


def test_uwsgi_vars_from_the_front_are_ignored(front: dict[str, str], tmp_path: Path) -> None:
    env = env_of(front["unix"], headers={"UWSGI-FILE": "/etc/passwd"})
    assert not any(k.startswith("UWSGI_") for k in env)


def test_flask_example(front: dict[str, str]) -> None:
    status, _, body = http_request(front["unix"] + "/flask/")
    assert status == 200, body
    data = json.loads(body)
    assert data["message"] == "Hello from Flask" and data["script_name"] == "/flask"
    payload = b"p" * (1 << 20)
    status, _, body = http_request(front["unix"] + "/flask/echo", method="POST", body=payload)
    assert status == 200 and body == payload
