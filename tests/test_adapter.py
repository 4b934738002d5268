"""The app-adapter layer as pure functions: a decoded request -> the WSGI environ.

``protocol/wsgi.environ_from_uwsgi`` (the uwsgi path) and ``environ_from_http`` (the HTTP
path) hold the environ rules once: SCRIPT_NAME and modifier1 30, the ``wsgi.*`` keys, which
scheme a peer may claim. The live tests (test_vassal_bad_input.py, test_http_live.py,
test_uwsgi_options_live.py) check the same rules through real workers and nginx; these pin
them without a socket, with the real codecs feeding the adapter.
"""

from __future__ import annotations

from typing import Any

import pytest

from emperor.protocol import asgi, http, uwsgi
from emperor.protocol.uwsgi import SCHEME_KEY
from emperor.protocol.wsgi import (
    FileWrapper,
    base_environ,
    environ_from_http,
    environ_from_uwsgi,
    site_environ,
)

BASE = base_environ(False)
PEER = object()  # what the worker passes: its connection; the adapter never looks inside


class Trust:
    """A trust callable that records what it was asked."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[tuple[Any, str]] = []

    def __call__(self, peer: Any, claim: str) -> bool:
        self.asked.append((peer, claim))
        return self.answer


def _uwsgi(pairs: dict[str, str], modifier1: int = 0, trust: Trust | None = None) -> dict[str, Any]:
    """The environ the worker gets: pack -> the codec's parse_vars -> the adapter."""
    packet = uwsgi.pack(pairs, modifier1)
    env = uwsgi.parse_vars(packet, 4, len(packet))
    return environ_from_uwsgi(env, packet[0], BASE, PEER, trust or Trust(True))


REQ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/app/x", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1"}


# ---- uwsgi --------------------------------------------------------------------------------------
def test_uwsgi_environ_has_the_wsgi_keys_and_keeps_the_vars() -> None:
    env = _uwsgi(REQ)
    for key, value in REQ.items():
        assert env[key] == value
    assert env["wsgi.version"] == (1, 0) and env["wsgi.multiprocess"] is True
    assert env["wsgi.multithread"] is False and env["wsgi.run_once"] is False
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["wsgi.url_scheme"] == "http"
    assert "wsgi.input" not in env  # the worker's (it owns the socket)


def test_uwsgi_environ_completes_the_vars_in_place() -> None:
    """The vars are the environ: no copy on the hot path."""
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    assert environ_from_uwsgi(env, 0, BASE, PEER, Trust(True)) is env


def test_script_name_defaults_to_empty() -> None:
    assert _uwsgi(REQ)["SCRIPT_NAME"] == ""
    assert _uwsgi(REQ, 30)["SCRIPT_NAME"] == ""


@pytest.mark.parametrize(("modifier1", "path", "want_path"), [
    (0, "/app/x", "/app/x"),  # modifier1 0: PATH_INFO is taken as sent
    (30, "/app/x", "/x"),  # 30: the SCRIPT_NAME prefix is stripped
    (30, "/app", ""),
    (30, "/other/x", "/other/x"),  # not under the mount point: left alone
])
def test_modifier_30_strips_script_name(modifier1: int, path: str, want_path: str) -> None:
    env = _uwsgi({**REQ, "SCRIPT_NAME": "/app", "PATH_INFO": path}, modifier1)
    assert env["SCRIPT_NAME"] == "/app" and env["PATH_INFO"] == want_path


@pytest.mark.parametrize(("modifier1", "script", "path"), [
    (0, "", "/x"), (0, "/app", "/x"), (30, "/app", "/app/x"), (30, "/app", "/other"), (30, "", "/x"),
])
def test_wsgi_and_asgi_agree_on_the_path(modifier1: int, script: str, path: str) -> None:
    """The ASGI scope (protocol/asgi.py) reads the same vars: SCRIPT_NAME + PATH_INFO of the
    environ is the scope's path, and SCRIPT_NAME its root_path."""
    pairs = {**REQ, "PATH_INFO": path, **({"SCRIPT_NAME": script} if script else {})}
    scope = asgi.http_scope(dict(pairs), modifier1)
    env = _uwsgi(pairs, modifier1)
    assert env["SCRIPT_NAME"] + env["PATH_INFO"] == scope["path"]
    assert env["SCRIPT_NAME"] == scope["root_path"]


def test_plain_request_never_asks_for_trust() -> None:
    """No https claim: the trust callable (a getpeername() in the worker) is not called."""
    trust = Trust(False)
    assert _uwsgi({**REQ, "REQUEST_SCHEME": "http"}, trust=trust)["wsgi.url_scheme"] == "http"
    assert _uwsgi(REQ, trust=trust)["wsgi.url_scheme"] == "http"
    assert trust.asked == []


@pytest.mark.parametrize(("var", "value", "claim"), [
    ("HTTPS", "on", "HTTPS=on"),
    ("HTTPS", "1", "HTTPS=1"),
    ("REQUEST_SCHEME", "https", "REQUEST_SCHEME=https"),
    ("UWSGI_SCHEME", "https", "UWSGI_SCHEME=https"),
])
def test_https_claim_is_believed_from_a_trusted_peer_only(var: str, value: str, claim: str) -> None:
    trusted = Trust(True)
    assert _uwsgi({**REQ, var: value}, trust=trusted)["wsgi.url_scheme"] == "https"
    assert trusted.asked == [(PEER, claim)]
    untrusted = Trust(False)
    env = _uwsgi({**REQ, var: value}, trust=untrusted)
    assert env["wsgi.url_scheme"] == "http"
    assert untrusted.asked == [(PEER, claim)]


def test_uwsgi_scheme_is_kept_out_of_the_apps_sight() -> None:
    env = _uwsgi({**REQ, "UWSGI_SCHEME": "https"})
    assert SCHEME_KEY not in env and "UWSGI_SCHEME" not in env
    assert env["wsgi.url_scheme"] == "https"


def test_scheme_precedence_uwsgi_scheme_then_request_scheme_then_https() -> None:
    assert _uwsgi({**REQ, "UWSGI_SCHEME": "http", "HTTPS": "on"})["wsgi.url_scheme"] == "http"
    assert _uwsgi({**REQ, "REQUEST_SCHEME": "http", "HTTPS": "on"})["wsgi.url_scheme"] == "http"
    assert _uwsgi({**REQ, "REQUEST_SCHEME": "gopher", "HTTPS": "on"})["wsgi.url_scheme"] == "https"
    assert _uwsgi({**REQ, "HTTPS": "off"})["wsgi.url_scheme"] == "http"


def test_request_method_requires_method_and_path() -> None:
    assert uwsgi.request_method({"REQUEST_METHOD": "PUT", "PATH_INFO": "/"}, 0) == "PUT"
    for env in ({"PATH_INFO": "/"}, {"REQUEST_METHOD": "GET"}):
        with pytest.raises(uwsgi.ProtocolError, match="uwsgi_params") as info:
            uwsgi.request_method(env, 12)
        assert info.value.status == 400 and info.value.body_pending == 12


# ---- HTTP ---------------------------------------------------------------------------------------
def _head(raw: bytes) -> http.Head:
    parser = http.RequestParser()
    parser.feed(raw)
    ev = parser.next_event()
    assert isinstance(ev, http.Head), ev
    return ev


SITE = site_environ(("127.0.0.1", 8080), tls=False)
CLIENT = ("127.0.0.1", "50000")


def _http(raw: bytes, trusted: bool = False, site: dict[str, Any] = SITE) -> dict[str, Any]:
    return environ_from_http(_head(raw), {**BASE, **site}, CLIENT, trusted)


def test_site_environ() -> None:
    assert SITE == {"SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SCRIPT_NAME": "",
                    "wsgi.url_scheme": "http", "wsgi.input_terminated": True}
    tls = site_environ(("::1", 8443, 0, 0), tls=True)
    assert tls["SERVER_NAME"] == "::1" and tls["SERVER_PORT"] == "8443"
    assert tls["wsgi.url_scheme"] == "https" and tls["HTTPS"] == "on"
    unix = site_environ("/run/app.sock", tls=False)
    assert unix["SERVER_NAME"] == "localhost" and unix["SERVER_PORT"] == "80"


def test_http_environ_request_line_and_wsgi_keys() -> None:
    env = _http(b"GET /a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/a b/c"  # %-decoded, as WSGI servers do
    assert env["QUERY_STRING"] == "x=1&y=%20"  # as sent
    assert env["REQUEST_URI"] == "/a%20b/c?x=1&y=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == "50000"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == "8080"
    assert env["SCRIPT_NAME"] == "" and env["HTTP_HOST"] == "example.org"
    assert env["wsgi.url_scheme"] == "http" and env["wsgi.input_terminated"] is True
    assert env["wsgi.version"] == (1, 0) and env["wsgi.file_wrapper"] is FileWrapper
    assert "wsgi.input" not in env


def test_http_environ_header_rules() -> None:
    env = _http(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                b"Accept: a\r\nAccept: b\r\nCookie: c=1\r\nCookie: d=2\r\nX_Sneaky: 1\r\n\r\nabc")
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_ACCEPT"] == "a, b"
    assert env["HTTP_COOKIE"] == "c=1; d=2"
    assert not [k for k in env if "SNEAKY" in k]  # a name with "_" is dropped


def test_http_environ_absolute_form_host_wins() -> None:
    env = _http(b"GET http://real.example/p HTTP/1.1\r\nHost: other\r\n\r\n")
    assert env["HTTP_HOST"] == "real.example" and env["PATH_INFO"] == "/p"


def test_http_environ_asterisk_form() -> None:
    assert _http(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")["PATH_INFO"] == ""


FORWARDED = (b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.1, 203.0.113.9\r\n"
             b"X-Forwarded-Proto: HTTPS\r\n\r\n")


def test_forwarded_headers_from_a_trusted_peer() -> None:
    env = _http(FORWARDED, trusted=True)
    assert env["REMOTE_ADDR"] == "203.0.113.9" and "REMOTE_PORT" not in env  # the last entry
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"


def test_forwarded_headers_from_an_untrusted_peer_are_ignored() -> None:
    env = _http(FORWARDED, trusted=False)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] == "50000"
    assert env["wsgi.url_scheme"] == "http" and "HTTPS" not in env


def test_forwarded_proto_other_than_http_or_https_is_ignored() -> None:
    env = _http(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: gopher\r\n\r\n", trusted=True)
    assert env["wsgi.url_scheme"] == "http"
    tls_site = site_environ(("127.0.0.1", 8443), tls=True)
    down = _http(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: http\r\n\r\n", True, tls_site)
    assert down["wsgi.url_scheme"] == "http"  # a trusted proxy may say its client spoke http


def test_http_environ_of_each_listener_and_worker() -> None:
    """The constant part (base + site, merged once per listener by the caller) is copied per
    request: each listener's environ keeps its own SERVER_PORT and scheme, and an app changing
    its environ changes nothing in the next request's."""
    tls_site = site_environ(("127.0.0.1", 8443), tls=True)
    threaded = base_environ(True)
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    for _ in range(2):
        plain, tls = _http(raw), _http(raw, site=tls_site)
        assert (plain["SERVER_PORT"], plain["wsgi.url_scheme"], "HTTPS" in plain) == ("8080", "http", False)
        assert (tls["SERVER_PORT"], tls["wsgi.url_scheme"], tls["HTTPS"]) == ("8443", "https", "on")
        assert plain["wsgi.multithread"] is False
        assert environ_from_http(_head(raw), {**threaded, **SITE}, CLIENT, False)["wsgi.multithread"] is True
        plain["wsgi.url_scheme"] = "https"
        plain["SERVER_PORT"] = "1"


def test_site_environ_is_not_mutated_by_a_request() -> None:
    site = site_environ(("127.0.0.1", 8080), tls=False)
    before = dict(site)
    _http(FORWARDED, trusted=True, site=site)
    assert site == before
