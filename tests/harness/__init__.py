"""Test harness shared by every integration test: real nginx, a uwsgi client, process control.

Test modules import it as ``from harness import Nginx, request, http_get, wait_for, ...``
(tests/ is on sys.path: conftest.py makes sure of it).
"""

from .nginx import Nginx, Server, nginx_binary, upstream_target, uwsgi_params_directive
from .procs import (
    MARKER_VAR,
    BackgroundLoad,
    LoadResult,
    Proc,
    ProcGroup,
    WaitTimeout,
    assert_no_orphans,
    descendants,
    free_port,
    load_loop,
    pid_alive,
    start,
    stop,
    wait_for,
    wait_for_log,
    wait_for_socket,
)
from .uwsgi_client import (
    BadResponse,
    Exchange,
    Received,
    TinyUwsgiServer,
    UwsgiTimeout,
    connect,
    exchange,
    header,
    http_get,
    http_request,
    pack,
    pack_header,
    pack_vars,
    parse_http_response,
    raw_exchange,
    read_request,
    request,
    unpack_vars,
    wsgi_vars,
)

__all__ = [
    "MARKER_VAR", "BackgroundLoad", "BadResponse", "Exchange", "LoadResult", "Nginx", "Proc", "ProcGroup",
    "Received", "Server", "TinyUwsgiServer", "UwsgiTimeout", "WaitTimeout", "assert_no_orphans", "connect",
    "descendants", "exchange", "free_port", "header", "http_get", "http_request", "load_loop", "nginx_binary",
    "pack", "pack_header", "pack_vars", "parse_http_response", "pid_alive", "raw_exchange", "read_request",
    "request", "start", "stop", "unpack_vars", "upstream_target", "uwsgi_params_directive", "wait_for",
    "wait_for_log", "wait_for_socket", "wsgi_vars",
]
