"""The channel's payload codecs: what one side encodes, the other decodes; malformed is "nothing usable"."""

from __future__ import annotations

import pytest

from emperor import channel
from emperor.channel import Msg


@pytest.mark.parametrize(("backlog", "threshold", "payload"), [
    (37, 10, "37 10"),  # vassal-sos-backlog: the emperor sizes its answer by both
    (None, None, "busy"),  # vassal-sos: every worker busy, no backlog figure
    (5, None, "5"),
])
def test_sos_roundtrip(backlog: int | None, threshold: int | None, payload: str) -> None:
    assert channel.sos_payload(backlog, threshold) == payload
    assert channel.parse_sos(payload) == (backlog, threshold)


@pytest.mark.parametrize("junk", ["", "lots", "-3 x", "\x00"])
def test_malformed_sos_gives_no_figures(junk: str) -> None:
    assert channel.parse_sos(junk) == (None, None)
    assert channel.parse_sos("1e3 2") == (None, 2)  # each figure stands alone


def test_heartbeat_and_scale_roundtrip() -> None:
    assert channel.parse_heartbeat(channel.heartbeat_payload(5)) == 5.0
    assert channel.parse_heartbeat("soon") == 0.0 and channel.parse_heartbeat("-4") == 0.0
    assert channel.parse_scale_request(channel.scale_request(12)) == 12
    assert channel.parse_scale_request("12 please") is None and channel.parse_scale_request("") is None
    assert channel.parse_scale_reply(channel.scale_reply(True, "12")) == (True, "12")
    assert channel.parse_scale_reply(channel.scale_reply(False, "no room")) == (False, "no room")
    accepted, why = channel.parse_scale_reply("ok many")
    assert not accepted and "malformed" in why


def test_a_payload_travels_in_one_packet() -> None:
    packet = channel.encode(Msg.SOS, channel.sos_payload(37, 10))
    assert channel.decode(packet) == (Msg.SOS, "37 10")
    assert channel.decode(bytes((250,))) is None and channel.decode(b"") is None


def test_workers_payload_round_trip() -> None:
    """WORKERS: the vassal's counts (running, minimum, ceiling, spawns, cheaps) both ways."""
    assert channel.parse_workers(channel.workers_payload(3, 1, 8, 5, 2)) == (3, 1, 8, 5, 2)
    assert channel.parse_workers("3 1 8") is None
    assert channel.parse_workers("3 1 8 x 2") is None
