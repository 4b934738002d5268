"""Unit tests of the sans-IO codec (emperor.protocol.uwsgi) and the response-head checks
(emperor.protocol.wsgi): pure logic, no processes.

The packet corpus in tests/fixtures/packets/*.json is shared with tests/test_vassal_bad_input.py,
which replays it against a real vassal. Each file holds ``doc``, either ``vars`` (ordered
[key, value] pairs, latin-1) or ``raw_hex`` (a whole packet), optional ``body``, ``modifier1``,
``modifier2``, and ``expect``: ``{"status": N}`` (the ProtocolError status; 0 = close without a
reply) or ``{"env": {...}, "absent": [...], "content_length": N}``.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emperor.protocol import uwsgi
from emperor.protocol.uwsgi import (
    MAX_VARS,
    BlockTooLarge,
    ProtocolError,
    UnsupportedModifier,
    check_header,
    content_length,
    pack,
    parse_vars,
)
from emperor.protocol.wsgi import HeaderError, Input, body_allowed, serialize_head

CORPUS = Path(__file__).resolve().parent / "fixtures" / "packets"
BUF = 65535


def load_case(name: str) -> dict[str, Any]:
    return json.loads((CORPUS / f"{name}.json").read_text())  # type: ignore[no-any-return]


def case_packet(case: dict[str, Any]) -> bytes:
    """Header + vars (+ body) of a corpus case, as bytes on the wire."""
    if "raw_hex" in case:
        return bytes.fromhex(case["raw_hex"])
    pairs = [(k, v) for k, v in case["vars"]]
    body = case.get("body", "").encode("latin-1")
    return pack(pairs, case.get("modifier1", 0), case.get("modifier2", 0)) + body


CASES = sorted(p.stem for p in CORPUS.glob("*.json"))


def decode(packet: bytes, limit: int = 0, buffer_size: int = BUF) -> tuple[dict[str, str], int]:
    """What the worker does with the bytes, minus the socket: header, vars, body length."""
    size = check_header(packet, buffer_size)
    env = parse_vars(packet, 4, 4 + size)
    return env, content_length(env, limit)


def vars_(*pairs: tuple[str, str]) -> bytes:
    return pack(list(pairs))


# ---------------------------------------------------------------- the corpus
def test_corpus_is_not_empty() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", CASES)
def test_corpus(name: str) -> None:
    case = load_case(name)
    packet = case_packet(case)
    expect = case["expect"]
    if "status" in expect and not expect.get("codec_ok"):
        with pytest.raises(ProtocolError) as info:
            decode(packet)
        assert info.value.status == expect["status"], case["doc"]
        return
    env, length = decode(packet)
    for k, v in expect.get("env", {}).items():
        assert env[k] == v, case["doc"]
    for k in expect.get("absent", []):
        assert k not in env, case["doc"]
    if "content_length" in expect:
        assert length == expect["content_length"]


# ---------------------------------------------------------------- header
@pytest.mark.parametrize("m1", [0, 30])
def test_served_modifiers(m1: int) -> None:
    assert check_header(bytes([m1, 0x13, 0x02, 0]), BUF) == 0x213


@pytest.mark.parametrize("m1", [1, 5, 6, 9, 10, 14, 17, 31, 72, 99, 100, 200, 224, 255])
def test_other_modifier1_is_501(m1: int) -> None:
    with pytest.raises(UnsupportedModifier) as info:
        check_header(bytes([m1, 10, 0, 0]), BUF)
    assert info.value.status == 501
    assert str(m1) in str(info.value)


@pytest.mark.parametrize("m2", [1, 9, 255])
@pytest.mark.parametrize("m1", [0, 30])
def test_nonzero_modifier2_is_501(m1: int, m2: int) -> None:
    with pytest.raises(UnsupportedModifier) as info:
        check_header(bytes([m1, 10, 0, m2]), BUF)
    assert info.value.status == 501


@pytest.mark.parametrize("start", [b"GET ", b"POST", b"HEAD", b"PUT ", b"DELETE", b"OPTIONS", b"PATCH",
                                   b"CONNECT"])
def test_http_sent_to_uwsgi_socket(start: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        check_header(start + b" / HTTP/1.1\r\n", BUF)
    assert info.value.status == 400  # a real answer that says what to use instead
    assert info.value.body and b"uwsgi_pass" in info.value.body and b"http-socket" in info.value.body
    assert not isinstance(info.value, UnsupportedModifier)
    assert "HTTP sent to a uwsgi-protocol socket" in str(info.value)


def test_tls_handshake() -> None:
    with pytest.raises(ProtocolError) as info:
        check_header(b"\x16\x03\x01\x02\x00\x01", BUF)
    assert info.value.status == 0
    assert "TLS" in str(info.value)


def test_block_too_large() -> None:
    assert check_header(b"\x00\x00\x10\x00", 4096) == 4096
    with pytest.raises(BlockTooLarge) as info:
        check_header(b"\x00\x01\x10\x00", 4096)
    assert info.value.status == 0
    assert "4097" in str(info.value) and "4096" in str(info.value)


def test_default_buffer_accepts_the_protocol_maximum() -> None:
    assert check_header(b"\x00\xff\xff\x00", BUF) == 65535


def test_empty_block() -> None:
    with pytest.raises(ProtocolError) as info:
        check_header(b"\x00\x00\x00\x00", BUF)
    assert info.value.status == 400


def test_header_size_is_little_endian() -> None:
    assert uwsgi.check_header(b"\x1e\x6f\x01\x00", 65535) == 0x16F  # modifier1 30, 367 bytes


# ---------------------------------------------------------------- parse_vars
def test_round_trip_with_pack() -> None:
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/a b", "QUERY_STRING": "", "CONTENT_LENGTH": "",
           "HTTP_X": "\xff\x80"}
    packet = pack(env)
    assert parse_vars(packet, 4, len(packet)) == env


def test_block_inside_a_larger_buffer() -> None:
    """start/end select the block; bytes before and after (header, body) are not vars."""
    packet = pack({"A": "1", "B": "2"})
    buf = packet + b"\x05\x00HELLO"
    assert parse_vars(buf, 4, len(packet)) == {"A": "1", "B": "2"}


def test_empty_values_and_empty_block_content() -> None:
    packet = vars_(("CONTENT_LENGTH", ""), ("CONTENT_TYPE", ""), ("X", ""))
    assert parse_vars(packet, 4, len(packet)) == {"CONTENT_LENGTH": "", "CONTENT_TYPE": "", "X": ""}
    assert parse_vars(b"", 0, 0) == {}


@pytest.mark.parametrize("key", ["CONTENT_LENGTH", "REQUEST_METHOD", "PATH_INFO", "REQUEST_URI",
                                 "QUERY_STRING", "HTTP_HOST", "CONTENT_TYPE", "SCRIPT_NAME", "HTTPS",
                                 "REQUEST_SCHEME"])
@pytest.mark.parametrize("same", [True, False])
def test_duplicate_framing_keys_are_400(key: str, same: bool) -> None:
    packet = vars_((key, "1"), ("OTHER", "x"), (key, "1" if same else "2"))
    with pytest.raises(ProtocolError) as info:
        parse_vars(packet, 4, len(packet))
    assert info.value.status == 400 and key in str(info.value)


def test_duplicate_headers_are_joined() -> None:
    packet = vars_(("HTTP_COOKIE", "a=1"), ("HTTP_ACCEPT", "text/html"), ("HTTP_COOKIE", "b=2"),
                   ("HTTP_ACCEPT", "*/*"), ("HTTP_COOKIE", "c=3"), ("HTTP_X", ""), ("HTTP_X", "y"))
    env = parse_vars(packet, 4, len(packet))
    assert env["HTTP_COOKIE"] == "a=1; b=2; c=3"
    assert env["HTTP_ACCEPT"] == "text/html, */*"
    assert env["HTTP_X"] == ", y"


def test_other_duplicates_last_wins() -> None:
    packet = vars_(("SERVER_NAME", "a"), ("SERVER_NAME", "b"))
    assert parse_vars(packet, 4, len(packet)) == {"SERVER_NAME": "b"}


def test_uwsgi_vars_are_dropped_and_reported() -> None:
    packet = vars_(("UWSGI_FILE", "/tmp/x.py"), ("PATH_INFO", "/"), ("UWSGI_SETENV", "A=b"),
                   ("UWSGI_FILE", "/tmp/y.py"))
    env = parse_vars(packet, 4, len(packet))
    assert env == {"PATH_INFO": "/", "emperor.dropped_vars": "UWSGI_FILE,UWSGI_SETENV,UWSGI_FILE"}


def test_uwsgi_in_a_value_is_kept() -> None:
    packet = vars_(("HTTP_X", "UWSGI_FILE"), ("PATH_INFO", "/UWSGI_"))
    assert parse_vars(packet, 4, len(packet)) == {"HTTP_X": "UWSGI_FILE", "PATH_INFO": "/UWSGI_"}


def test_http_content_copies_are_dropped() -> None:
    packet = vars_(("CONTENT_LENGTH", "3"), ("HTTP_CONTENT_LENGTH", "3"), ("HTTP_CONTENT_TYPE", "a/b"),
                   ("CONTENT_TYPE", "a/b"))
    assert parse_vars(packet, 4, len(packet)) == {"CONTENT_LENGTH": "3", "CONTENT_TYPE": "a/b"}


def test_empty_key_is_400() -> None:
    for packet in (vars_(("", "x")), vars_(("A", "1"), ("", "")), vars_(("", ""), ("", ""))):
        with pytest.raises(ProtocolError, match="empty key"):
            parse_vars(packet, 4, len(packet))


def test_var_count_limit() -> None:
    ok = pack([(f"K{i}", "") for i in range(MAX_VARS)])
    assert len(parse_vars(ok, 4, len(ok))) == MAX_VARS
    over = pack([(f"K{i}", "") for i in range(MAX_VARS + 1)])
    with pytest.raises(ProtocolError, match="too many vars"):
        parse_vars(over, 4, len(over))
    tiny = pack([("", "")] * 10000)  # 10 000 empty vars: 40 000 bytes, still one 400
    with pytest.raises(ProtocolError):
        parse_vars(tiny, 4, len(tiny))


def test_truncation_anywhere_is_400() -> None:
    """Cutting a valid block at any byte (other than a var boundary) is a 400, never a shorter env."""
    pairs = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/x"), ("HTTP_X", "")]
    block = pack(pairs)[4:]
    boundaries = set()
    off = 0
    for k, v in pairs:
        off += 4 + len(k) + len(v)
        boundaries.add(off)
    for cut in range(1, len(block)):
        buf = block[:cut] + block[cut:]  # the rest stays in the buffer, as the body would
        if cut in boundaries:
            assert len(parse_vars(buf, 0, cut)) == sum(1 for b in boundaries if b <= cut)
            continue
        with pytest.raises(ProtocolError) as info:
            parse_vars(buf, 0, cut)
        assert info.value.status == 400, cut


def test_length_fields_pointing_past_the_block() -> None:
    for block in (b"\xff\xffAB", b"\x01\x00A\xff\xffB", b"\x01", b"\x01\x00A", b"\x01\x00A\x01"):
        body = b"\x00" * 70000  # plenty of bytes after the block: they must not be used
        with pytest.raises(ProtocolError):
            parse_vars(block + body, 0, len(block))


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", "a\r\nb", "x\x00"])
@pytest.mark.parametrize("key", ["PATH_INFO", "HTTP_X_FOO", "QUERY_STRING", "SERVER_NAME", "HTTP_COOKIE"])
def test_cr_lf_nul_in_any_value_is_400(key: str, bad: str) -> None:
    packet = vars_(("REQUEST_METHOD", "GET"), (key, bad))
    with pytest.raises(ProtocolError) as info:
        parse_vars(packet, 4, len(packet))
    assert info.value.status == 400 and key in str(info.value)
    # also on the slow path (duplicates present)
    packet = vars_(("HTTP_A", "1"), ("HTTP_A", "2"), (key, bad))
    with pytest.raises(ProtocolError):
        parse_vars(packet, 4, len(packet))


def test_latin1_bytes_are_kept_as_code_points() -> None:
    raw = bytes(range(0x20, 0x100)).replace(b"\x7f", b"")
    block = b"\x06\x00HTTP_X" + len(raw).to_bytes(2, "little") + raw
    env = parse_vars(block, 0, len(block))
    assert env["HTTP_X"].encode("latin-1") == raw
    utf8 = "é".encode()
    block = b"\x09\x00PATH_INFO" + len(utf8).to_bytes(2, "little") + utf8
    assert parse_vars(block, 0, len(block))["PATH_INFO"] == "Ã©"


# ---------------------------------------------------------------- content_length
@pytest.mark.parametrize("value", ["12abc", "-1", "+5", " 5", "5 ", "0x10", "1e3", "5, 5", "5,5", "1_000",
                                   "9" * 25, "1" * 19, "\u00b2", "\u0665", "\uff15", "\t5", "5\t", "5.0",
                                   "\x0b5"])
def test_content_length_strict(value: str) -> None:
    with pytest.raises(ProtocolError) as info:
        content_length({"CONTENT_LENGTH": value}, 0)
    assert info.value.status == 400


@pytest.mark.parametrize(("value", "n"), [("", 0), ("0", 0), ("5", 5), ("007", 7), ("9" * 18, 10**18 - 1)])
def test_content_length_valid(value: str, n: int) -> None:
    assert content_length({"CONTENT_LENGTH": value}, 0) == n


def test_content_length_absent() -> None:
    assert content_length({}, 100) == 0


def test_limit_post_is_413() -> None:
    assert content_length({"CONTENT_LENGTH": "100"}, 100) == 100
    with pytest.raises(ProtocolError) as info:
        content_length({"CONTENT_LENGTH": "101"}, 100)
    assert info.value.status == 413
    with pytest.raises(ProtocolError) as info:  # a non-number is a 400 even over the limit
        content_length({"CONTENT_LENGTH": "1e9"}, 100)
    assert info.value.status == 400


# ---------------------------------------------------------------- pack
def test_pack_refuses_oversized_block() -> None:
    with pytest.raises(ValueError):
        pack({"A": "x" * 65535})


def test_pack_header_fields() -> None:
    assert pack({"A": "b"}, 30, 0)[:4] == b"\x1e\x06\x00\x00"


# ---------------------------------------------------------------- the response head
def test_serialize_head_ok() -> None:
    head = serialize_head("200 OK", [("Content-Type", "text/plain"), ("X-Empty", ""), ("Set-Cookie", "a=é")])
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Empty: \r\nSet-Cookie: a=\xe9\r\n\r\n"
    assert serialize_head("404 Not Found", []) == b"HTTP/1.1 404 Not Found\r\n\r\n"
    assert serialize_head("599 ", []) == b"HTTP/1.1 599 \r\n\r\n"


@pytest.mark.parametrize("value", [
    "a\r\nSet-Cookie: pwned=1",  # a valid-looking extra header: must still be refused
    "a\nSet-Cookie: pwned=1",
    "a\rb", "a\x00b", "\r\n", "x\r\n\r\n<html>",
])
def test_header_value_injection(value: str) -> None:
    with pytest.raises(HeaderError, match=r"CR, LF or NUL|malformed"):
        serialize_head("200 OK", [("X-Evil", value)])


def test_header_name_injection_forming_valid_lines() -> None:
    with pytest.raises(HeaderError):
        serialize_head("200 OK", [("X-A: b\r\nX-B", "c")])


@pytest.mark.parametrize("name", ["Bad Name", "", "X:Y", "X\tY", "Ä", "X(", "X\r\n", "x\x00", " X", "X "])
def test_bad_header_names(name: str) -> None:
    with pytest.raises(HeaderError):
        serialize_head("200 OK", [(name, "v")])


@pytest.mark.parametrize("headers", [
    [("X", "€")],  # not latin-1
    [("X", b"bytes")],  # PEP 3333: str only
    [(b"X", "v")],
    [("X", 5)],
    [("X", None)],
    [("X", "a", "b")],
    [("X",)],
])
def test_headers_must_be_latin1_str_pairs(headers: list[Any]) -> None:
    with pytest.raises(HeaderError):
        serialize_head("200 OK", headers)


@pytest.mark.parametrize("headers", [
    [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
    [("transfer-encoding", "chunked"), ("CONTENT-LENGTH", "5")],
    [("Content-Length", "5"), ("Content-Length", "5")],
    [("Content-Length", "5"), ("X", "y"), ("content-length", "6")],
    [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
])
def test_ambiguous_framing(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(HeaderError, match="framing"):
        serialize_head("200 OK", headers)


def test_single_framing_header_is_fine() -> None:
    head = serialize_head("200 OK", [("Content-Length", "5"), ("X-Content-Length", "1")])
    assert b"Content-Length: 5" in head


@pytest.mark.parametrize("status", ["200", "OK", "2000 OK", "20 OK", "abc OK", "200OK", "200 OK\r\nX: y",
                                    "200 OK\n", "200 \x00", " 200 OK", "²00 OK", "٢٠٠ OK", "200 €", ""])
def test_bad_status_lines(status: str) -> None:
    with pytest.raises(HeaderError):
        serialize_head(status, [])


@pytest.mark.parametrize(("method", "status", "allowed"), [
    ("GET", "200 OK", True), ("POST", "500 Internal Server Error", True), ("HEAD", "200 OK", False),
    ("HEAD", "404 Not Found", False), ("GET", "204 No Content", False), ("GET", "304 Not Modified", False),
    ("GET", "100 Continue", False), ("GET", "101 Switching Protocols", False), ("GET", "205 Reset", True),
    ("get", "200 OK", True),
])
def test_body_allowed(method: str, status: str, allowed: bool) -> None:
    assert body_allowed(method, status) is allowed


# ---------------------------------------------------------------- properties
_latin1 = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255,
                                         blacklist_characters="\r\n"), max_size=40)
_keys = st.text(alphabet=string.ascii_uppercase + string.digits + "_", min_size=1, max_size=30).filter(
    lambda k: not k.startswith("UWSGI_") and k not in ("HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"))


@given(st.dictionaries(_keys, _latin1, min_size=1, max_size=60))
def test_property_round_trip(env: dict[str, str]) -> None:
    packet = pack(env)
    assert check_header(packet, BUF) == len(packet) - 4
    assert parse_vars(packet, 4, len(packet)) == env


@given(st.dictionaries(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=255), min_size=1,
                               max_size=20).filter(lambda k: not k.startswith(("UWSGI_", "HTTP_CONTENT_"))),
                       _latin1, max_size=30))
def test_property_round_trip_any_latin1_keys(env: dict[str, str]) -> None:
    packet = pack(env)
    assert parse_vars(packet, 4, len(packet)) == env


@settings(deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(m1=st.sampled_from([0, 30]), block=st.binary(max_size=2000), tail=st.binary(max_size=300))
def test_property_arbitrary_block_only_protocol_errors(m1: int, block: bytes, tail: bytes) -> None:
    """Any bytes as a vars block: an env or a ProtocolError; the bytes after the block never matter."""
    packet = bytes([m1]) + len(block).to_bytes(2, "little") + b"\x00" + block
    results: list[tuple[str, object, int]] = []
    for buf in (packet, packet + tail, packet + b"\xff" * 70000):
        try:
            env, n = decode(buf, limit=1000)
            results.append(("ok", env, n))
        except ProtocolError as exc:
            assert exc.status in (0, 400, 413, 501)
            results.append(("error", type(exc), exc.status))
    assert results[0] == results[1] == results[2]


@settings(deadline=500)
@given(st.lists(st.tuples(_keys, _latin1), min_size=1, max_size=20), st.data())
def test_property_mutated_lengths(pairs: list[tuple[str, str]], data: st.DataObject) -> None:
    """Corrupt one byte of a valid block: the outcome is still an env or a ProtocolError."""
    packet = bytearray(pack(pairs))
    i = data.draw(st.integers(4, len(packet) - 1))
    packet[i] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(packet) + b"\x00" * 1000)
    except ProtocolError:
        pass


@given(st.text(max_size=30))
def test_property_content_length(value: str) -> None:
    try:
        n = content_length({"CONTENT_LENGTH": value}, 0)
    except ProtocolError as exc:
        assert exc.status == 400
        assert not (value.isascii() and value.isdigit() and len(value) <= 18)
    else:
        assert (value == "" and n == 0) or (value.isascii() and value.isdigit() and n == int(value))


@given(st.text(max_size=20), st.text(max_size=40))
def test_property_serialized_head_never_splits(name: str, value: str) -> None:
    try:
        head = serialize_head("200 OK", [(name, value)])
    except HeaderError:
        return
    assert head.count(b"\r\n") == 3 and head.count(b"\n") == 3 and b"\x00" not in head
    assert head.endswith(b"\r\n\r\n")


# ---------------------------------------------------------------- the C fast path vs Python
def pack_vars(pairs: list[tuple[str, str]]) -> bytes:
    return uwsgi.pack(pairs)[4:]


def test_c_speedups_are_built() -> None:
    """The optional extension must build wherever the package is installed with a compiler
    (CI has one): without it every request pays the Python parser's cost."""
    assert uwsgi._c_parse_vars is not None


def _both(block: bytes, tail: bytes = b"") -> tuple[object, object]:
    """(C result or None, Python result or the ProtocolError's status) for one block."""
    buf = block + tail
    c = uwsgi._c_parse_vars(buf, 0, len(block), uwsgi.MAX_VARS) if uwsgi._c_parse_vars else None
    try:
        py: object = uwsgi.parse_vars_py(buf, 0, len(block))
    except ProtocolError as exc:
        py = exc.status
    return c, py


@settings(deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.text(alphabet=string.ascii_uppercase + "_", min_size=0, max_size=12),
                          st.text(alphabet=st.characters(max_codepoint=255), max_size=30)), max_size=30),
       st.binary(max_size=40), st.integers(min_value=0, max_value=8))
def test_c_and_python_parsers_agree(pairs: list[tuple[str, str]], tail: bytes, cut: int) -> None:
    """Whatever the C parser accepts, Python parses identically; whatever Python refuses, C
    hands back (None) instead of accepting. Blocks are also cut short to hit truncation."""
    block = pack_vars(pairs) if pairs else b""
    block = block[: len(block) - cut] if cut < len(block) else block
    c, py = _both(block, tail)
    if c is not None:
        assert c == py
    if not isinstance(py, dict):
        assert c is None


@pytest.mark.parametrize("block", [
    b"\x00\x00\x01\x00x",  # empty key
    pack_vars([("A", "1"), ("A", "2")]),  # repeated key
    pack_vars([("UWSGI_FILE", "/x")]),
    pack_vars([("X", "a\rb")]), pack_vars([("X", "a\nb")]), pack_vars([("X", "a\0b")]),
    pack_vars([("A", "1")] * 1) + b"\x05\x00",  # truncated length
])
def test_c_parser_defers_every_unusual_block(block: bytes) -> None:
    assert _both(block)[0] is None


# ---------------------------------------------------------------- the whole usual request in C
NGINX_GET = [("QUERY_STRING", ""), ("REQUEST_METHOD", "GET"), ("CONTENT_TYPE", ""), ("CONTENT_LENGTH", ""),
             ("REQUEST_URI", "/a?b"), ("PATH_INFO", "/a"), ("DOCUMENT_ROOT", "/srv"),
             ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_SCHEME", "http"), ("HTTPS", ""),
             ("REMOTE_ADDR", "127.0.0.1"), ("REMOTE_PORT", "5"), ("SERVER_PORT", "80"),
             ("SERVER_NAME", "x"), ("HTTP_HOST", "x"), ("HTTP_CONTENT_TYPE", "t")]
BASE = {"wsgi.version": (1, 0), "wsgi.multiprocess": True}
EMPTY = object()  # stands for the worker's EMPTY_INPUT


def _c_request(packet: bytes, buffer_size: int = 4096) -> Any:
    from emperor.protocol._speedups import uwsgi_request

    return uwsgi_request(packet, uwsgi.MAX_VARS, buffer_size, dict(BASE), EMPTY)


def _py_request(packet: bytes) -> dict[str, Any]:
    """What the worker's Python path makes of the same packet (worker._read_request)."""
    from emperor.protocol.wsgi import environ_from_uwsgi

    end = 4 + uwsgi.check_header(packet, 4096)
    env = uwsgi.parse_vars(packet, 4, end)
    uwsgi.request_method(env, uwsgi.content_length(env, 0))
    environ_from_uwsgi(env, packet[0], dict(BASE), None, lambda peer, claim: False)
    env["wsgi.input"] = EMPTY
    return env


def test_c_request_builds_the_python_environ() -> None:
    packet = uwsgi.pack(NGINX_GET)
    got = _c_request(packet)
    assert got is not None, "the usual nginx GET must take the C path"
    env, method = got
    assert method == "GET"
    assert env == _py_request(packet)
    assert env["wsgi.url_scheme"] == "http" and env["SCRIPT_NAME"] == "" and env["wsgi.input"] is EMPTY
    assert "HTTP_CONTENT_TYPE" not in env  # nginx's copy of a CGI var: one source


def test_c_request_keeps_script_name_and_takes_no_scheme_claim() -> None:
    pairs = [*NGINX_GET, ("SCRIPT_NAME", "/app")]
    env, _ = _c_request(uwsgi.pack(pairs))
    assert env == _py_request(uwsgi.pack(pairs)) and env["SCRIPT_NAME"] == "/app"
    # HTTPS set but REQUEST_SCHEME http: url_scheme() says http before it looks at HTTPS
    pairs = [(k, "on") if k == "HTTPS" else (k, v) for k, v in NGINX_GET]
    env, _ = _c_request(uwsgi.pack(pairs))
    assert env["wsgi.url_scheme"] == "http" == _py_request(uwsgi.pack(pairs))["wsgi.url_scheme"]


def _without(*keys: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in NGINX_GET if k not in keys]


def _with(**vals: str) -> list[tuple[str, str]]:
    return [(k, vals.get(k, v)) for k, v in NGINX_GET] + [(k, v) for k, v in vals.items()
                                                          if k not in dict(NGINX_GET)]


@pytest.mark.parametrize("packet", [
    uwsgi.pack(_with(CONTENT_LENGTH="5")) + b"hello",  # a body
    uwsgi.pack(_with(CONTENT_LENGTH="0")),  # a length to check
    uwsgi.pack(_with(CONTENT_LENGTH="5x")),  # a bad one: the Python path's 400
    uwsgi.pack(NGINX_GET) + b"more",  # bytes after the block
    uwsgi.pack(NGINX_GET)[:-3],  # not all here yet
    uwsgi.pack(NGINX_GET, modifier1=30),  # SCRIPT_NAME stripping
    uwsgi.pack(NGINX_GET, modifier1=5),  # unsupported: the Python path's 501
    uwsgi.pack(NGINX_GET, modifier2=1),
    uwsgi.pack(_with(REQUEST_SCHEME="https")),  # a claim: the peer must be judged
    uwsgi.pack([*_without("REQUEST_SCHEME", "HTTPS"), ("HTTPS", "on")]),
    uwsgi.pack([*_without("REQUEST_SCHEME", "HTTPS"), ("HTTPS", "1")]),
    uwsgi.pack([*NGINX_GET, ("UWSGI_SCHEME", "https")]),
    uwsgi.pack([*NGINX_GET, ("UWSGI_FILE", "/x")]),  # dropped and reported by the Python path
    uwsgi.pack(_without("REQUEST_METHOD")),  # the Python path's 400
    uwsgi.pack(_without("PATH_INFO")),
    uwsgi.pack([*NGINX_GET, ("HTTP_COOKIE", "a"), ("HTTP_COOKIE", "b")]),  # joined by Python
    b"GET / HTTP/1.1\r\n\r\n",  # HTTP on a uwsgi socket: the Python path's helpful 400
    b"\x00\x00\x00\x00",  # an empty block
    b"\x00",
])
def test_c_request_defers_everything_unusual(packet: bytes) -> None:
    assert _c_request(packet) is None


@settings(deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["REQUEST_SCHEME", "HTTPS", "SCRIPT_NAME", "CONTENT_LENGTH",
                                           "HTTP_CONTENT_LENGTH", "PATH_INFO", "HTTP_X", "wsgi.version"]),
                          st.sampled_from(["", "http", "https", "on", "1", "0", "/a", "x"])),
                max_size=4, unique_by=lambda kv: kv[0]))
def test_c_request_agrees_with_python(changes: list[tuple[str, str]]) -> None:
    """Whatever the C path accepts, the Python path builds the same environ from."""
    pairs = [(k, dict(changes).get(k, v)) for k, v in NGINX_GET]
    pairs += [(k, v) for k, v in changes if k not in dict(NGINX_GET)]
    packet = uwsgi.pack(pairs)
    got = _c_request(packet)
    if got is not None:
        assert got[0] == _py_request(packet)
        assert got[1] == got[0]["REQUEST_METHOD"]


def test_c_request_defers_a_block_over_buffer_size() -> None:
    packet = uwsgi.pack(NGINX_GET)
    assert _c_request(packet, buffer_size=len(packet) - 5) is None  # BlockTooLarge, from Python
    assert _c_request(packet, buffer_size=len(packet) - 4) is not None


# ---------------------------------------------------------------- wsgi.input
def _input(body: bytes, prefetched: int, chunk: int) -> tuple[Input, list[int]]:
    """An Input over ``body``: ``prefetched`` bytes came with the vars, the rest arrives from a
    fake socket ``chunk`` bytes per recv (the calls are recorded)."""
    rest = memoryview(body)[prefetched:]
    pos = 0
    calls: list[int] = []

    def recv_into(view: memoryview) -> int:
        nonlocal pos
        n = min(len(view), chunk, len(rest) - pos)
        view[:n] = rest[pos : pos + n]
        pos += n
        calls.append(len(view))
        return n

    return Input(body[:prefetched], len(body) - prefetched, recv_into), calls


@pytest.mark.parametrize("prefetched", [0, 10, 5000])
def test_input_read_all_and_in_pieces(prefetched: int) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    inp, calls = _input(body, prefetched, 65536)
    assert inp.read(100) + inp.read(-1) == body
    assert inp.read(10) == b"" and inp.unread == 0 and inp.pending == 0
    assert max(calls) <= len(body)  # never a buffer larger than the body
    inp, _ = _input(body, prefetched, 7000)
    parts = []
    while chunk := inp.read(12345):
        parts.append(chunk)
    assert b"".join(parts) == body and all(len(p) == 12345 for p in parts[:-1])


def test_input_lines_and_limits() -> None:
    body = b"one\ntwo\n" + b"x" * 100 + b"\nlast"
    inp, _ = _input(body, 3, 5)
    assert inp.readline() == b"one\n"
    assert inp.readline(2) == b"tw"
    assert inp.read(2) == b"o\n"
    assert inp.readlines() == [b"x" * 100 + b"\n", b"last"]
    inp, _ = _input(b"abc", 0, 1)
    assert inp.read(100) == b"abc"  # never more than CONTENT_LENGTH, and no wait for more


def test_input_peer_gone_mid_body() -> None:
    inp = Input(b"ab", 10, lambda view: 0)  # the peer closed after 2 of 12 bytes
    with pytest.raises(ConnectionError, match="10 body bytes unsent"):
        inp.read()
