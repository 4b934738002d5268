"""Pure logic of the fleet: payload parsing, names, the template language, key checking."""

from __future__ import annotations

import pytest

from emperor import etcdkv
from emperor.empire import fleet
from emperor.upstreams import DEFAULT_TEMPLATE, Server, TemplateError, parse_key, parse_template, render


def test_endpoints_payload() -> None:
    ep = fleet.parse_endpoints("app=shop weight=3 127.0.0.1:8001 [::1]:8002 0.0.0.0:8003")
    assert ep == fleet.Endpoints("shop", 3, (("127.0.0.1", 8001), ("::1", 8002), ("0.0.0.0", 8003)))
    assert fleet.parse_endpoints("app= weight=1") == fleet.Endpoints("", 1, ())
    assert fleet.parse_endpoints("weight=x 1.2.3.4:80") is None
    assert fleet.parse_endpoints("app=a/b 1.2.3.4:80") is None  # would escape its key level
    assert fleet.parse_endpoints("1.2.3.4:99999") is None
    # HTTP listeners carry their protocol: they go to their own upstream (<app>-http)
    ep = fleet.parse_endpoints("app=shop weight=1 127.0.0.1:8001 127.0.0.1:8080/http [::1]:8443/https")
    assert ep == fleet.Endpoints("shop", 1, (("127.0.0.1", 8001),),
                                 (("127.0.0.1", 8080, "http"), ("::1", 8443, "https")))
    assert fleet.parse_endpoints("1.2.3.4:80/ftp") is None


def test_default_app_name_is_safe() -> None:
    assert fleet.default_app("shop.ini") == "shop"
    assert fleet.default_app("my shop;{x}.ini") == "my_shop__x_"
    assert fleet.default_app(".ini") == "app"
    assert fleet.format_addr("::1", 80) == "[::1]:80"


def test_endpoint_list_and_range_end() -> None:
    assert etcdkv.parse_endpoints("http://a:1, https://b") == [("http", "a", 1), ("https", "b", 2379)]
    with pytest.raises(ValueError, match="ftp://x"):
        etcdkv.parse_endpoints("ftp://x")
    assert etcdkv.range_end("/e/") == "L2Uw"  # base64 of "/e0"


def test_template_renders_apps_and_servers() -> None:
    tpl = parse_template(DEFAULT_TEMPLATE)
    out = render(tpl, {"b": [Server("10.0.0.2:1", 2, "b.ini", "ready"), Server("10.0.0.1:1", 1, "b.ini", "")],
                       "a": [Server("10.0.0.3:1", 1, "a.ini", "loyal")], "empty": []})
    assert out.index("upstream a {") < out.index("upstream b {") and "empty" not in out
    assert out.index("10.0.0.1:1 weight=1") < out.index("10.0.0.2:1 weight=2")


@pytest.mark.parametrize(("text", "error"), [
    ("@server\n@end\n", "@server must be directly inside an @app block"),
    ("@app\n@app\n@end\n@end\n", "@app inside another block"),
    ("@end\n", "@end without"),
    ("@app\n", "not closed"),
    ("$oops\n", "oops"),
    ("@app\n@server\n$app $bad\n@end\n@end\n", "bad"),
])
def test_template_errors_name_the_line(text: str, error: str) -> None:
    with pytest.raises(TemplateError, match=error):
        parse_template(text, "t.tmpl")


@pytest.mark.parametrize("key", [
    "/e/upstreams/app/1.2.3.4:80;include x",
    "/e/upstreams/app/1.2.3.4",
    "/e/upstreams/a pp/1.2.3.4:80",
    "/e/upstreams/app/host name:80",
    "/e/upstreams/app/{x}:80",
])
def test_rogue_keys_are_skipped(key: str) -> None:
    assert parse_key("/e", key, b"{}") is None


def test_rogue_values_are_skipped() -> None:
    assert parse_key("/e", "/e/upstreams/app/1.2.3.4:80", b'{"weight": 0}') is None
    assert parse_key("/e", "/e/upstreams/app/1.2.3.4:80", b'{"vassal": "x;}"}') is None
    assert parse_key("/e", "/e/upstreams/app/1.2.3.4:80", b"not json") is None
    ok = parse_key("/e", "/e/upstreams/app/[::1]:80", b'{"weight": 7, "vassal": "a.ini"}')
    assert ok == ("app", Server("[::1]:80", 7, "a.ini", ""))
