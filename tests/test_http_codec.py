"""The HTTP/1.1 request codec (emperor/protocol/http.py): every hardening rule, pure logic.

Each case is a request written for the rule it tests; the expected status says which rule
fired. Where llhttp already refuses the input the test still pins the status we answer.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emperor.protocol import http
from emperor.protocol.asgi import scope_from_head
from emperor.protocol.http import END, Head, HTTPError, RequestParser
from emperor.protocol.wsgi import FIELD_KEYS, environ_from_http

_BUILT = http.FieldSink  # what the import chose


@pytest.fixture(autouse=True, scope="module", params=["C", "Python"])
def field_sink(request: pytest.FixtureRequest) -> object:
    """Every test of this file runs with the C FieldSink (_speedups.c) and its Python twin."""
    saved = http.FieldSink
    http.FieldSink = http._PyFieldSink if request.param == "Python" else saved  # type: ignore[misc]
    yield request.param
    http.FieldSink = saved  # type: ignore[misc]


def test_c_field_sink_is_built(field_sink: str) -> None:
    """The optional extension builds wherever the package is installed with a compiler (CI has
    one): without it every header field costs a Python call. Each run uses the sink it names."""
    from emperor.protocol import _speedups

    assert _BUILT is _speedups.FieldSink
    want = _speedups.FieldSink if field_sink == "C" else http._PyFieldSink
    parser = RequestParser()
    parser._llhttp()  # (made on first use: a connection the fast path serves never needs it)
    assert type(parser._fields) is want
    if field_sink == "C":
        assert parser.on_header is parser._fields
    else:
        assert parser.on_header == parser._fields.add


def events(data: bytes, *, split: int = 0, **kw: int) -> list[Head | bytes | HTTPError]:
    """Feed ``data`` (in ``split``-byte pieces when set) and collect every event."""
    p = RequestParser(**kw)
    pieces = [data[i : i + split] for i in range(0, len(data), split)] if split else [data]
    out: list[Head | bytes | HTTPError] = []
    for piece in pieces:
        p.feed(piece)
        while (ev := p.next_event()) is not None:
            out.append(ev)
    return out


def error(data: bytes, **kw: int) -> HTTPError:
    evs = events(data, **kw)
    assert isinstance(evs[-1], HTTPError), evs
    return evs[-1]


def head_of(data: bytes, **kw: int) -> Head:
    evs = events(data, **kw)
    assert isinstance(evs[0], Head), evs
    return evs[0]


def body_of(evs: list[Head | bytes | HTTPError]) -> bytes:
    assert evs[-1] == END and not any(isinstance(e, HTTPError) for e in evs), evs
    return b"".join(e for e in evs[1:] if isinstance(e, bytes))


def test_simple_get() -> None:
    h = head_of(b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n")
    assert (h.method, h.target, h.path, h.query) == ("GET", "/a/b?x=1&y=%20", b"/a/b", "x=1&y=%20")
    assert h.version == "HTTP/1.1" and h.keep_alive and h.host == b"example.com"
    assert h.headers == [(b"Host", b"example.com"), (b"X-A", b"1")]
    assert h.content_length is None and not h.chunked


def test_http10_and_keepalive_flags() -> None:
    assert not head_of(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert head_of(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive
    assert not head_of(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive
    assert head_of(b"GET / HTTP/1.0\r\n\r\n").version == "HTTP/1.0"


def test_content_length_body_in_pieces() -> None:
    data = b"POST /u HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"
    for split in (0, 1, 3, 7):
        evs = events(data, split=split)
        assert isinstance(evs[0], Head) and evs[0].content_length == 11
        assert body_of(evs) == b"hello world"


def test_chunked_body_is_dechunked_and_trailers_dropped() -> None:
    data = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    for split in (0, 1, 4):
        evs = events(data, split=split)
        h = evs[0]
        assert isinstance(h, Head) and h.chunked and h.content_length is None
        assert body_of(evs) == b"hello world"
        assert (b"X-Trailer", b"t") not in h.headers


def test_pipelined_requests_come_in_order() -> None:
    data = (b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /3 HTTP/1.1\r\n\r\n")
    evs = events(data)
    heads = [e.target for e in evs if isinstance(e, Head)]
    assert heads == ["/1", "/2", "/3"]
    assert evs.count(END) == 3 and b"abc" in evs


def test_pipelined_bad_request_after_a_good_one() -> None:
    evs = events(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\nBad Name: x\r\n\r\n")
    assert isinstance(evs[0], Head) and evs[1] == END
    assert isinstance(evs[2], HTTPError) and evs[2].status == 400


def test_parser_is_dead_after_an_error() -> None:
    p = RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nX Y: z\r\n\r\n")
    assert isinstance(p.next_event(), HTTPError) and p.dead
    p.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert p.next_event() is None


HARDENING_CASES = [
    ("CL+TE", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE+CL", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
    ("duplicate CL, same", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("duplicate CL, other", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("CL with sign", b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", 400),
    ("CL hex", b"POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\nabc", 400),
    ("CL list", b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    ("CL inner space", b"POST / HTTP/1.1\r\nContent-Length: 3 3\r\n\r\nabc", 400),
    ("CL empty", b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", 400),
    ("CL huge", b"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789012\r\n\r\n", 400),
    ("chunked on 1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("TE gzip", b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ("TE gzip, chunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("TE identity", b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    ("TE xchunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    ("TE twice", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nX-A: a\r\n  continued\r\n\r\n", 400),
    ("obs-fold tab", b"GET / HTTP/1.1\r\nX-A: a\r\n\tcontinued\r\n\r\n", 400),
    ("space in name", b"GET / HTTP/1.1\r\nX A: a\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("bad token in name", b"GET / HTTP/1.1\r\nX(a): a\r\n\r\n", 400),
    ("empty name", b"GET / HTTP/1.1\r\n: a\r\n\r\n", 400),
    ("no colon", b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
    ("whitespace before first header", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    ("NUL in target", b"GET /a\x00b HTTP/1.1\r\n\r\n", 400),
    ("CR in target", b"GET /a\rb HTTP/1.1\r\n\r\n", 400),
    ("LF in target", b"GET /a\nb HTTP/1.1\r\n\r\n", 400),
    ("TAB in target", b"GET /a\tb HTTP/1.1\r\n\r\n", 400),
    ("DEL in target", b"GET /a\x7fb HTTP/1.1\r\n\r\n", 400),
    ("non-ASCII target", b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
    ("BEL in value", b"GET / HTTP/1.1\r\nX-A: a\x07b\r\n\r\n", 400),
    ("DEL in value", b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400),
    ("bare CR in value", b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", 400),
    ("ESC in value", b"GET / HTTP/1.1\r\nX-A: a\x1bb\r\n\r\n", 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("method not a token", b"G(T / HTTP/1.1\r\n\r\n", 400),
    ("method with NUL", b"GE\x00T / HTTP/1.1\r\n\r\n", 400),
    ("lowercase method", b"get / HTTP/1.1\r\n\r\n", 501),
    ("unknown token method", b"FROB / HTTP/1.1\r\n\r\n", 501),
    ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\n\r\n", 505),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\n\r\n", 505),
    ("HTTP/0.9", b"GET /\r\n\r\n", 400),
    ("duplicate Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("duplicate Host, case", b"GET / HTTP/1.1\r\nHost: a\r\nhOST: a\r\n\r\n", 400),
    ("duplicate Content-Type", b"POST / HTTP/1.1\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n"
                               b"Content-Length: 0\r\n\r\n", 400),
    ("bad chunk size", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk bare LF", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n", 400),
    ("chunk too long", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400),
    ("Expect other", b"POST / HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n", 417),
    ("bad scheme in absolute form", b"GET ftp://a/b HTTP/1.1\r\n\r\n", 400),
    ("userinfo in absolute form", b"GET http://u@a/b HTTP/1.1\r\n\r\n", 400),
]


@pytest.mark.parametrize(("name", "request_bytes", "status"), HARDENING_CASES)
def test_hardening_rule(name: str, request_bytes: bytes, status: int) -> None:
    for split in (0, 1):
        err = error(request_bytes, split=split)
        assert err.status == status, (name, split, err)
        assert str(err)


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
])
def test_content_length_with_transfer_encoding_is_named_in_either_order(request_bytes: bytes) -> None:
    """The 400 says what was wrong whichever header came first (llhttp words the two orders
    differently; one of them used to read "Content-Length is not a decimal number")."""
    for split in (0, 1):
        msg = str(error(request_bytes, split=split))
        assert "together with Transfer-Encoding" in msg and "decimal" not in msg, msg


def test_head_limit_431_and_414() -> None:
    big_header = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 300 + b"\r\n\r\n"
    for split in (0, 7, 100):
        err = error(big_header, max_head=200, split=split)
        assert err.status == 431 and "header" in str(err)
    long_line = b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n"
    for split in (0, 7):
        err = error(long_line, max_head=200, split=split)
        assert err.status == 414 and "request line" in str(err)
    ok = b"GET / HTTP/1.1\r\nX-A: " + b"a" * 100 + b"\r\n\r\n"
    assert isinstance(events(ok, max_head=len(ok))[0], Head)
    assert error(ok, max_head=len(ok) - 1).status == 431


def test_head_limit_does_not_count_the_body() -> None:
    data = b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
    assert body_of(events(data, max_head=100)) == b"x" * 1000


def test_header_count_cap() -> None:
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(11)) + b"\r\n"
    assert error(many, max_headers=10).status == 431
    assert isinstance(events(many, max_headers=11)[0], Head)


def test_trailer_fields_count_against_the_header_cap() -> None:
    """Trailers are never kept but are counted with the head's fields: a chunked body cannot
    carry an unbounded trailer section."""
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n0\r\n"
    ok = head + b"X-T: 1\r\n\r\n"
    assert body_of(events(ok, max_headers=3)) == b"hello"
    many = head + b"X-T: 1\r\nX-U: 2\r\n\r\n"
    assert error(many, max_headers=3).status == 431


def test_each_pipelined_head_has_its_own_fields_and_count() -> None:
    """The field list and the count start afresh with every message (no trailer or field of
    one request leaks into the next, and the cap is per message)."""
    data = (b"POST /1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n0\r\nX-T: t\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nX-B: 2 \r\nX-C: 3\r\n\r\nGET /3 HTTP/1.1\r\n\r\n")
    for split in (0, 1, 5):
        heads = [e for e in events(data, split=split, max_headers=3) if isinstance(e, Head)]
        assert [h.headers for h in heads] == [[(b"Transfer-Encoding", b"chunked"), (b"X-A", b"1")],
                                              [(b"X-B", b"2"), (b"X-C", b"3")], []]


def test_rules_see_field_names_in_any_case() -> None:
    """The sink sets apart the fields the rules look at by a case-insensitive name match."""
    h = head_of(b"POST /p?a=1&b=2 HTTP/1.1\r\nhOsT: h\r\neXPECT: 100-continue\r\n"
                b"CONTENT-LENGTH: 2\r\ncontent-TYPE: t/x\r\n\r\nab")
    assert (h.host, h.expect_continue, h.content_length, h.path, h.query) == (b"h", True, 2, b"/p", "a=1&b=2")
    assert error(b"POST / HTTP/1.1\r\ntransfer-ENCODING: gzip\r\n\r\n").status == 501
    assert error(b"GET / HTTP/1.1\r\nEXPECT: bogus\r\n\r\n").status == 417
    assert error(b"POST / HTTP/1.1\r\nContent-type: a/b\r\nCONTENT-TYPE: c/d\r\n\r\n").status == 400


def test_absolute_form_target() -> None:
    h = head_of(b"GET http://example.com:8080/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    assert (h.path, h.query, h.host) == (b"/p/q", "x=1", b"example.com:8080")
    h = head_of(b"GET https://example.com HTTP/1.1\r\n\r\n")
    assert (h.path, h.host) == (b"/", b"example.com")


def test_asterisk_form() -> None:
    h = head_of(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert h.path == b"*"


def test_expect_100_continue() -> None:
    h = head_of(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert h.expect_continue
    h10 = head_of(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert not h10.expect_continue


def test_trailing_whitespace_is_not_part_of_a_value() -> None:
    h = head_of(b"POST / HTTP/1.1\r\nContent-Length: 3 \r\nX-A: v\t \r\n\r\nabc")
    assert h.content_length == 3 and (b"X-A", b"v") in h.headers


def test_upgrade_is_served_as_plain_request_then_dead() -> None:
    p = RequestParser()
    p.feed(b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    assert isinstance(p.next_event(), Head) and p.next_event() == END
    assert p.dead and p.next_event() is None


def test_obs_text_in_value_is_kept() -> None:
    h = head_of(b"GET / HTTP/1.1\r\nX-A: caf\xe9\r\n\r\n")
    assert (b"X-A", b"caf\xe9") in h.headers


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_fuzz_never_raises_and_error_is_last(data: bytes, split: int) -> None:
    evs = events(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + data, split=split)
    errors = [i for i, e in enumerate(evs) if isinstance(e, HTTPError)]
    assert errors in ([], [len(evs) - 1])
    for e in evs:
        if isinstance(e, HTTPError):
            assert 400 <= e.status < 600


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=6),
       st.integers(min_value=1, max_value=30))
def test_fuzz_chunked_roundtrip(pieces: list[bytes], split: int) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    evs = events(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body, split=split)
    assert body_of(evs) == b"".join(pieces)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=30))
def test_fuzz_header_values_never_smuggle(value: str) -> None:
    raw = value.encode("latin-1")
    evs = events(b"GET / HTTP/1.1\r\nX-A: " + raw + b"\r\n\r\n")
    if isinstance(evs[0], Head):
        for _name, val in evs[0].headers:
            assert not any(c in val for c in b"\r\n\x00")


def test_the_shared_too_many_fields_error_keeps_no_traceback() -> None:
    """Every parser raises the same prebuilt 431 instance; a raise adds to the traceback an
    instance already has, so without clearing it each oversized head would grow one chain
    (and keep its frames) for the life of the process."""
    seen = set()
    for _ in range(3):
        p = RequestParser(max_headers=2)
        p.feed(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
        ev = p.next_event()
        assert isinstance(ev, HTTPError) and ev.status == 431, ev
        assert ev.__traceback__ is None and ev.__context__ is None
        seen.add(id(ev))
    assert len(seen) == 1  # built once per limit, not once per parser


# ---- the C fast path for plain bodiless heads (RequestParser.build_environ) --------------------
# It must never decide differently from llhttp and the rules: every case here is parsed with and
# without it, whole and in pieces, and the events (with each head's environ) must be equal.

PEER = ("10.1.2.3", "40000")
BASE = {"SERVER_NAME": "be", "SERVER_PORT": "8080", "SCRIPT_NAME": "", "wsgi.url_scheme": "http",
        "REMOTE_ADDR": PEER[0], "REMOTE_PORT": PEER[1]}
NGINX_HEAD = (b"GET /api/items?page=2 HTTP/1.1\r\nHost: backend\r\nX-Forwarded-For: 127.0.0.1\r\n"
              b"X-Forwarded-Proto: http\r\nUser-Agent: wrk\r\n\r\n")

PLAIN_CASES = [
    NGINX_HEAD,
    b"GET / HTTP/1.1\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: CLOSE \r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: close, upgrade\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /a%41b%2fc%zz%4?q=%41&r HTTP/1.1\r\n\r\n",
    b"GET /p?a=1?b=2 HTTP/1.1\r\n\r\n",
    b"GET /p#frag HTTP/1.1\r\n\r\n",
    b"GET /~u/(x)!$&'*+,;=:@ HTTP/1.1\r\n\r\n",
    b"GET /\"<>\\^`{|} HTTP/1.1\r\n\r\n",
    b"GET http://h:1/p?q HTTP/1.1\r\nHost: other\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n\r\n",
    b"DELETE /r HTTP/1.1\r\n\r\n",
    b"POST /no-body HTTP/1.1\r\nContent-Type: text/plain\r\n\r\n",
    b"PUT /r HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"PATCH /r HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nCookie: a=1\r\ncookie: b=2\r\nX-A: 1\r\nx-a: 2\r\nX_A: smuggled\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Empty:\r\nX-Sp:   \t\r\nX-In:  a \t b  \r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Tab: a\tb\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Obs: caf\xe9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: x\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09azAZ: token\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\n\r\n",
    b"GET  / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1 \r\n\r\n",
    b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
    b"GET /" + b"a" * 90 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 90 + b"\r\n\r\n",
    NGINX_HEAD * 3,
    NGINX_HEAD + b"POST /u HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi" + NGINX_HEAD,
    NGINX_HEAD + b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n" + NGINX_HEAD,
    b"POST /u HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" + NGINX_HEAD + b"GET /b HTTP/1.1\r\nX-A: ",
    NGINX_HEAD[:-2],
    b"GET / HTTP/1.0\r\n\r\n" * 2,
    b"GET / HTTP/1.0\r\n\r\n\r\n\n\r\n",
    b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    NGINX_HEAD + b"\r\n" + NGINX_HEAD,
    b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1, \t 2.2.2.2 \t\r\nX-Forwarded-Proto: HTTPS\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1,\r\nX-Forwarded-For: 3.3.3.3\r\n"
    b"X-Forwarded-Proto: ftp\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1,  \r\nx-forwarded-proto:  http \r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Forwarded-For:\r\nX-Forwarded-Proto:\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n\r\n",
]
LIMITS = [{}, {"max_head": 64}, {"max_headers": 3}, {"max_head": 40, "max_headers": 1}]


def outcome(data: bytes, mode: str, split: int = 0, trusted: bool = False,
            **kw: int) -> tuple[list[object], int]:
    """The events of ``data`` and how many heads the fast path read. ``mode``: "llhttp" (no fast
    path), "environ" (the sync worker's: each head as its environ and flags) or "head" (the
    ASGI worker's: each head's fields, names in lower case). An "llhttp" outcome is compared
    with the other two through ``as_environ`` and ``as_fields``."""
    p = RequestParser(**kw)
    if mode == "environ":
        p.build_environ(BASE, FIELD_KEYS, trusted)
    elif mode == "head":
        p.fast_heads()
    elif mode == "scope":
        p.fast_scopes({"type": "http", "scheme": "http", "root_path": "", "client": CLIENT, "server": SERVER,
                       "state": STATE}, trusted)
    out: list[object] = []
    built = 0
    pieces = [data[i : i + split] for i in range(0, len(data), split)] if split else [data]
    for piece in pieces:
        p.feed(piece)
        while (ev := p.next_event()) is not None:
            if isinstance(ev, Head):
                built += ev.env is not None or ev.lowered
                out.append(ev)
            elif isinstance(ev, HTTPError) and "method" in str(ev):
                # A bad method in a pipelined head that begins inside a chunk is judged on what
                # llhttp's path saw of it, which may be nothing (400: "not a token"); when the
                # fast path took the head before it, the bad head starts a feed and gets the
                # precise answer (501 for an unknown token). Either closes the connection.
                out.append(("error", "method"))
            elif isinstance(ev, HTTPError):
                out.append(("error", ev.status, str(ev)))
            elif ev and out and isinstance(out[-1], bytes) and out[-1]:
                out[-1] += ev  # how a body is cut into pieces is not part of the contract
            else:
                out.append(ev)
    return out, built


def as_environ(events: list[object], trusted: bool = False) -> list[object]:
    return [("head", ev.env if ev.env is not None else environ_from_http(ev, BASE, PEER, trusted),
             ev.keep_alive, ev.method, ev.target, ev.version, ev.content_length, ev.chunked,
             ev.expect_continue) if isinstance(ev, Head) else ev for ev in events]


CLIENT, SERVER, STATE = ("10.1.2.3", 40000), ("10.0.0.1", 8080), {"pool": "shared"}


def as_scope(events: list[object], trusted: bool = False) -> list[object]:
    """Each head as its ASGI scope (the C fast path's, or scope_from_head's) and flags."""
    out: list[object] = []
    for ev in events:
        if isinstance(ev, Head):
            scope = ev.env
            if scope is None:
                scope = scope_from_head(ev, SERVER, CLIENT, "http", trusted, STATE)
            assert scope["state"] == STATE and scope["state"] is not STATE  # a shallow copy per request
            out.append(("head", scope, ev.keep_alive, ev.method, ev.target, ev.version, ev.content_length,
                        ev.chunked, ev.expect_continue))
        else:
            out.append(ev)
    return out


def as_fields(events: list[object]) -> list[object]:
    return [("head", [(n.lower(), v) for n, v in ev.headers], ev.keep_alive, ev.method, ev.target, ev.path,
             ev.query, ev.host, ev.version, ev.content_length, ev.chunked, ev.expect_continue)
            if isinstance(ev, Head) else ev for ev in events]


def same_or_stricter(fast: list[object], slow: list[object], why: object) -> None:
    """Equal, or the same up to a 431/414 where llhttp's path let an oversized pipelined head
    through: llhttp's path counts a head that begins inside a chunk only from the next chunk on
    (it cannot see where in the chunk it began), while a head after a message the fast path read
    starts its chunk remainder and is counted whole. Never the other way round."""
    if fast == slow:
        return
    last = fast[-1]
    assert isinstance(last, tuple) and last[:2] in (("error", 431), ("error", 414)), (why, fast, slow)
    assert fast[:-1] == slow[: len(fast) - 1], why


def same_either_way(data: bytes, split: int = 0, **kw: int) -> int:
    slow, none = outcome(data, "llhttp", split, **kw)
    environ, built = outcome(data, "environ", split, **kw)
    fields, built_too = outcome(data, "head", split, **kw)
    trusted, built_trusted = outcome(data, "environ", split, True, **kw)
    scopes, built_scopes = outcome(data, "scope", split, **kw)
    trusted_scopes, built_trusted_scopes = outcome(data, "scope", split, True, **kw)
    assert none == 0 and built == built_too == built_trusted == built_scopes == built_trusted_scopes
    why = (data, split, kw)
    if "max_head" not in kw:  # (the default limit is far above every case: no leeway then)
        assert as_environ(environ) == as_environ(slow), why
    same_or_stricter(as_environ(environ), as_environ(slow), why)
    same_or_stricter(as_environ(trusted, True), as_environ(slow, True), why)
    same_or_stricter(as_fields(fields), as_fields(slow), why)
    same_or_stricter(as_scope(scopes), as_scope(slow), why)
    same_or_stricter(as_scope(trusted_scopes, True), as_scope(slow, True), why)
    return built


def test_fast_path_builds_the_environ_of_a_plain_head() -> None:
    """nginx's proxy_pass head takes the fast path (the test below would pass if it never did)."""
    (head, end), built = outcome(NGINX_HEAD, "environ")
    assert built == 1 and end == END
    assert isinstance(head, Head) and head.env is not None
    env = head.env
    assert env["PATH_INFO"] == "/api/items" and env["QUERY_STRING"] == "page=2"
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1" and env["REMOTE_ADDR"] == PEER[0]
    assert env["REQUEST_URI"] == "/api/items?page=2" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert head.keep_alive and head.method == "GET"
    assert same_either_way(NGINX_HEAD * 3) == 3


def test_fast_path_builds_the_asgi_scope_of_a_plain_head() -> None:
    """The ASGI worker's scope from C (the differential tests would pass if it never did)."""
    (head, end), built = outcome(b"GET /caf%C3%A9/%ff?q=%41 HTTP/1.0\r\nHost: b\r\n"
                                 b"X-Forwarded-For: 9.9.9.9, 8.8.8.8\r\nX-Forwarded-Proto: https\r\n\r\n",
                                 "scope", trusted=True)
    assert built == 1 and end == END and isinstance(head, Head) and head.env is not None
    scope = head.env
    assert scope["path"] == "/café/\ufffd" and scope["raw_path"] == b"/caf%C3%A9/%ff"
    assert scope["query_string"] == b"q=%41" and scope["http_version"] == "1.0"
    assert scope["client"] == ("8.8.8.8", 0) and scope["scheme"] == "https" and scope["server"] == SERVER
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"} and scope["root_path"] == ""
    assert scope["headers"][0] == (b"host", b"b") and scope["type"] == "http" and scope["method"] == "GET"


def test_fast_path_reads_the_fields_of_a_plain_head_for_asgi() -> None:
    (head, end), built = outcome(NGINX_HEAD, "head")
    assert built == 1 and end == END
    assert isinstance(head, Head) and head.lowered and head.env is None
    assert head.headers == [(b"host", b"backend"), (b"x-forwarded-for", b"127.0.0.1"),
                            (b"x-forwarded-proto", b"http"), (b"user-agent", b"wrk")]
    assert (head.path, head.query, head.host, head.target) == (b"/api/items", "page=2", b"backend",
                                                               "/api/items?page=2")


@pytest.mark.parametrize("request_bytes", PLAIN_CASES + [case[1] for case in HARDENING_CASES])
def test_fast_path_decides_as_llhttp_and_the_rules(request_bytes: bytes) -> None:
    for kw in LIMITS:
        for split in (0, 1, 7, 23):
            same_either_way(request_bytes, split, **kw)


def test_fast_path_waits_for_llhttp_between_messages() -> None:
    """Bytes that continue a head llhttp has begun are never read as a new head: here the next
    chunk would be a whole plain request on its own, but it is the value of ``X-A``."""
    p = RequestParser()
    p.build_environ(BASE, FIELD_KEYS)
    p.feed(b"POST /u HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nX-A: ")
    p.feed(b"GET /evil HTTP/1.1\r\n\r\n")
    heads = [ev for ev in p.events if isinstance(ev, Head)]
    assert [h.target for h in heads] == ["/u", "/b"]
    assert heads[1].env is None and (b"X-A", b"GET /evil HTTP/1.1") in heads[1].headers
    p.events.clear()
    p.feed(NGINX_HEAD)  # between messages again: the fast path takes it
    assert p.events[0].env is not None


_BYTES = st.sampled_from([bytes([c]) for c in range(256)] + [b"\r\n", b": ", b" ", b"%", b"%4", b"?"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(NGINX_HEAD)), st.booleans(), _BYTES),
                min_size=1, max_size=4),
       st.integers(min_value=0, max_value=40))
def test_fuzz_fast_path_on_mutated_heads(edits: list[tuple[int, bool, bytes]], split: int) -> None:
    data = bytearray(NGINX_HEAD)
    for pos, replace, piece in edits:
        pos = min(pos, len(data))
        data[pos : pos + (1 if replace else 0)] = piece
    same_either_way(bytes(data), split)
    same_either_way(bytes(data) + NGINX_HEAD, split, max_headers=5)


_TOKEN_CHARS = "!#$%&'*+-.^_`|~abcXYZ019"
_NAMES = st.one_of(st.sampled_from(["Host", "host", "Content-Type", "Connection", "Cookie", "X_A", "X-A",
                                    "X-Forwarded-For", "x-forwarded-proto",
                                    "Upgrade", "Expect", "Content-Length", "Transfer-Encoding"]),
                   st.text(alphabet=_TOKEN_CHARS + " :(", min_size=0, max_size=8))
_VALUES = st.one_of(st.sampled_from(["close", "keep-alive", "Close ", "chunked", "100-continue", "1", "https",
                                     " HTTP ", "1.2.3.4, 5.6.7.8", ",", "a ,\tb\t"]),
                    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=10))


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "CONNECT", "GE"]),
       st.text(alphabet="/abc%41?#=&*:@ \"", min_size=0, max_size=12),
       st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "http/1.1", "HTTP/2.0"]),
       st.lists(st.tuples(_NAMES, _VALUES), max_size=6),
       st.integers(min_value=0, max_value=30))
def test_fuzz_fast_path_on_generated_heads(method: str, target: str, version: str,
                                           fields: list[tuple[str, str]], split: int) -> None:
    head = f"{method} {target} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
    data = head.encode("latin-1")
    same_either_way(data, split)
    same_either_way(data + data, split, max_head=96, max_headers=4)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(["POST", "PUT", "PATCH", "GET"]),
       st.one_of(st.integers(min_value=0, max_value=40).map(str),
                 st.sampled_from(["", " 3", "3 ", "03", "+3", "3,3", "0x3", "1" * 19, "3\t"])),
       st.binary(max_size=50), st.booleans(), st.integers(min_value=0, max_value=30))
def test_fuzz_fast_path_on_content_length_bodies(method: str, length: str, body: bytes, close: bool,
                                                 split: int) -> None:
    """A Content-Length body after a head the fast path read is counted by the parser, not by
    llhttp: where it ends, and what follows it (a next request, junk, or bytes after a
    ``Connection: close``), must come out as llhttp would have it."""
    head = f"{method} /up HTTP/1.1\r\nContent-Length: {length}\r\n"
    head += "Connection: close\r\n" if close else ""
    data = head.encode() + b"\r\n" + body
    same_either_way(data, split)
    same_either_way(data + NGINX_HEAD, split)
    same_either_way(data + b"\r\n" + NGINX_HEAD, split, max_headers=5)


def test_a_body_received_by_the_consumer_is_counted_then_ended() -> None:
    """body_due / body_received: the consumer receives what is left of a fast-path head's
    Content-Length body itself (http_wire.recv_body); the parser counts it, adds END at its end,
    and parses what follows as the next request."""
    p = RequestParser()
    p.build_environ({}, FIELD_KEYS)
    p.feed(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n123")
    head = p.next_event()
    assert isinstance(head, Head) and head.env is not None and head.content_length == 10
    assert p.next_event() == b"123" and p.body_due == 7
    with pytest.raises(ValueError):
        p.body_received(8)
    p.body_received(4)
    assert p.body_due == 3 and not p.events
    p.body_received(3)
    assert p.body_due == 0 and p.next_event() is END
    p.feed(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    nxt = p.next_event()
    assert isinstance(nxt, Head) and nxt.target == "/next"
    assert RequestParser().body_due == 0  # llhttp counts the body of a head it read: nothing due here
    # a client waiting for 100 Continue: Expect is llhttp's, so the consumer never receives its body itself
    p = RequestParser()
    p.build_environ({}, FIELD_KEYS)
    p.feed(b"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
    head = p.next_event()
    assert isinstance(head, Head) and head.expect_continue and p.body_due == 0
