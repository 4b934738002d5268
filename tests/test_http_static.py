"""static-map and friends against a live vassal, on an HTTP socket and behind nginx uwsgi_pass.

The traversal cases are the point: ``..``, ``%2e%2e``, encoded slashes, NUL, and a symlink out
of the mapped directory must never serve a byte from outside it.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Nginx, ProcGroup, free_port, http_request
from harness.http_client import RawHTTP, request_bytes
from vassal_runner import start_vassal

pytestmark = pytest.mark.live  # real processes (README: Tests)

SECRET = b"top secret, outside the static dir\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "static" / "sub").mkdir(parents=True)
    (root / "static" / "a.txt").write_bytes(b"0123456789" * 100)
    (root / "static" / "style.css").write_text("body{}\n")
    (root / "static" / "sub" / "index.html").write_text("<p>index</p>\n")
    (root / "secret.txt").write_bytes(SECRET)
    (root / "static" / "escape").symlink_to(root / "secret.txt")
    (root / "shared").mkdir()
    (root / "shared" / "ok.txt").write_text("shared file\n")
    (root / "static" / "to-shared").symlink_to(root / "shared" / "ok.txt")
    (root / "full" / "files").mkdir(parents=True)
    (root / "full" / "files" / "f.txt").write_text("map2\n")
    return root


@pytest.fixture
def served(procs: ProcGroup, tree: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}",
                 "--static-map", f"/static={tree / 'static'}", "--static-map2", f"/files={tree / 'full'}",
                 "--static-index", "index.html", "--static-safe", str(tree / "shared"))
    yield ("127.0.0.1", port)


def get(addr: tuple[str, int], path: str, headers: dict[str, str] | None = None, method: str = "GET"):  # type: ignore[no-untyped-def]
    with RawHTTP(addr) as c:
        c.send(request_bytes(method, path, headers))
        return c.response(head_request=method == "HEAD")


def test_file_with_validators(served: tuple[str, int], tree: Path) -> None:
    r = get(served, "/static/a.txt")
    assert r.status == 200 and r.body == b"0123456789" * 100
    assert r.header("Content-Length") == "1000" and r.header("Content-Type") == "text/plain"
    assert r.header("ETag") and r.header("Last-Modified") and r.header("Accept-Ranges") == "bytes"
    assert get(served, "/static/style.css").header("Content-Type") == "text/css"
    assert get(served, "/static/a.txt", {"If-None-Match": r.header("ETag")}).status == 304
    assert get(served, "/static/a.txt", {"If-Modified-Since": r.header("Last-Modified")}).status == 304
    old = email.utils.formatdate(os.stat(tree / "static" / "a.txt").st_mtime - 3600, usegmt=True)
    assert get(served, "/static/a.txt", {"If-Modified-Since": old}).status == 200
    h = get(served, "/static/a.txt", method="HEAD")
    assert h.status == 200 and h.header("Content-Length") == "1000" and h.body == b""


def test_single_range(served: tuple[str, int]) -> None:
    r = get(served, "/static/a.txt", {"Range": "bytes=10-19"})
    assert r.status == 206 and r.body == b"0123456789" and r.header("Content-Range") == "bytes 10-19/1000"
    r = get(served, "/static/a.txt", {"Range": "bytes=-5"})
    assert r.status == 206 and r.body == b"56789"
    r = get(served, "/static/a.txt", {"Range": "bytes=995-"})
    assert r.status == 206 and r.body == b"56789"
    r = get(served, "/static/a.txt", {"Range": "bytes=5000-"})
    assert r.status == 416 and r.header("Content-Range") == "bytes */1000"
    r = get(served, "/static/a.txt", {"Range": "bytes=0-1,5-6"})  # several ranges: the whole file
    assert r.status == 200 and len(r.body) == 1000


def test_index_map2_and_fallthrough(served: tuple[str, int]) -> None:
    assert get(served, "/static/sub/").body == b"<p>index</p>\n"
    assert get(served, "/files/f.txt").body == b"map2\n"  # static-map2: DIR + the whole path
    r = get(served, "/static/missing.txt")
    assert r.status == 200 and r.body == b"hello /static/missing.txt"  # the app answers
    assert get(served, "/staticx/a.txt").body == b"hello /staticx/a.txt"  # not under the prefix
    r = get(served, "/static/a.txt", method="POST")
    assert r.body == b"hello /static/a.txt"  # only GET and HEAD are static


@pytest.mark.parametrize(("path", "status"), [
    ("/static/../secret.txt", 403),
    ("/static/%2e%2e/secret.txt", 403),
    ("/static/%2E%2E/secret.txt", 403),
    ("/static/..%2fsecret.txt", 403),
    ("/static/sub/..%2F..%2Fsecret.txt", 403),
    ("/static/%2e%2e%2fsecret.txt", 403),
    ("/static/escape", 403),  # a symlink out of the tree
    ("/static/a.txt%00.png", 403),
    # these stay inside the mapped directory (where no such file is): the app answers
    ("/static/%2fetc%2fpasswd/../../secret.txt", 200),
    ("/files/../secret.txt", 200),
])
def test_traversal_is_refused(served: tuple[str, int], path: str, status: int) -> None:
    r = get(served, path)
    assert SECRET not in r.body and b"root:" not in r.body
    assert r.status == status, (path, r.body[:80])
    assert status == 403 or r.body.startswith(b"hello ")


def test_symlink_into_static_safe(served: tuple[str, int]) -> None:
    assert get(served, "/static/to-shared").body == b"shared file\n"


def test_expires_headers(procs: ProcGroup, tree: Path) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--static-map", f"/static={tree / 'static'}",
                 "--static-expires-type", "text/css=600", "--static-expires", r"\.txt$=60")
    css = get(("127.0.0.1", port), "/static/style.css")
    assert css.header("Cache-Control") == "max-age=600" and css.header("Expires")
    expires = email.utils.parsedate_to_datetime(css.header("Expires")).timestamp()
    assert 500 < expires - time.time() < 700
    assert get(("127.0.0.1", port), "/static/a.txt").header("Cache-Control") == "max-age=60"
    assert get(("127.0.0.1", port), "/static/sub/index.html").header("Expires") is None


def test_missing_directory_refuses_to_start(procs: ProcGroup, tmp_path: Path) -> None:
    proc = start_vassal(procs, "--http-socket", f"127.0.0.1:{free_port()}", "--static-map",
                        f"/s={tmp_path / 'nope'}", ready=False)
    assert proc.wait(timeout=15) == 78
    assert "static-map" in proc.log_text() and "not a directory" in proc.log_text()


def test_static_on_a_uwsgi_socket_behind_nginx(procs: ProcGroup, nginx: Callable[..., Nginx], tree: Path,
                                              sock_dir: Path) -> None:
    sock = str(sock_dir / "app.sock")
    start_vassal(procs, "--socket", sock, "--chmod-socket", "666", "--static-map",
                 f"/static={tree / 'static'}")
    ng = nginx()
    ng.add_uwsgi("/", sock)
    ng.start()
    url = ng.url("/").rstrip("/")
    status, _, body = http_request(url + "/static/a.txt")
    assert status == 200 and body == b"0123456789" * 100
    status, _, body = http_request(url + "/static/a.txt", headers={"Range": "bytes=0-3"})
    assert status == 206 and body == b"0123"
    for path in ("/static/%2e%2e/secret.txt", "/static/escape", "/static/..%2fsecret.txt"):
        status, _, body = http_request(url + path)
        assert SECRET not in body, path
