"""The control commands against a fake emperor: every check and reply without a process.

The commands see the emperor only through ``emperor.control.api.EmperorAPI``; ``Fake``
implements it with plain dicts and records the verbs it was asked for. The live
behaviour (real emperor, real vassals, ``emperor ctl``) is tested in tests/test_control.py.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import pytest

from emperor.control.api import EmperorAPI, Later
from emperor.control.commands import MAX_PROCESSES, REGISTRY, SCALE_WAIT, validate
from emperor.control.protocol import ControlError, Errno


@dataclass
class Fake:
    """An emperor with vassal records ``states`` (name -> state word), files, held names."""

    states: dict[str, str] = field(default_factory=dict)
    found: set[str] = field(default_factory=set)
    held_names: set[str] = field(default_factory=set)
    stopping_all: bool = False
    brood: dict[str, Any] | None = None
    endpoint: str = "ipc:///run/x.events"
    accepts: bool = True  # what reload/start/scale answer
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def records(self) -> Collection[str]:
        return self.states.keys()

    def files(self) -> Collection[str]:
        return self.found

    def held(self) -> Collection[str]:
        return self.held_names

    def state(self, name: str) -> str:
        return self.states.get(name, "not started")

    def shutting_down(self) -> bool:
        return self.stopping_all

    def document(self) -> dict[str, Any]:
        return {"vassals": [self.entry(n) for n in sorted(self.states)], "refused": [{"id": "x y.ini"}]}

    def entry(self, name: str) -> dict[str, Any]:
        return {"id": name, "pid": 10, "state": self.states[name]}

    def pool(self) -> dict[str, Any] | None:
        return self.brood

    def events_endpoint(self) -> str:
        return self.endpoint

    def reload(self, name: str) -> bool:
        self.calls.append(("reload", name))
        return self.accepts

    def reload_all(self) -> None:
        self.calls.append(("reload_all",))

    def hold(self, name: str) -> None:
        self.calls.append(("hold", name))

    def start(self, name: str) -> bool:
        self.calls.append(("start", name))
        return self.accepts

    def scale(self, name: str, count: int, wait: float) -> Later | None:
        self.calls.append(("scale", name, count, wait))
        return Later(100.0) if self.accepts else None


def run(api: EmperorAPI, command: str, **props: Any) -> Any:
    cmd = REGISTRY[command]
    return cmd.run(api, validate(cmd, props))


def refused(api: EmperorAPI, command: str, **props: Any) -> ControlError:
    with pytest.raises(ControlError) as info:
        run(api, command, **props)
    return info.value


def test_the_fake_is_an_emperor_api() -> None:
    api: EmperorAPI = Fake()  # mypy checks the Protocol; this checks the names at run time
    for name in ("records", "files", "held", "state", "shutting_down", "document", "entry", "pool",
                 "events_endpoint", "reload", "reload_all", "hold", "start", "scale"):
        assert callable(getattr(api, name))


def test_list_stats_zergs_events_read_the_views() -> None:
    api = Fake(states={"b.ini": "ready", "a.ini": "failed"}, held_names={"c.ini"})
    reply = run(api, "list")
    assert [v["id"] for v in reply["vassals"]] == ["a.ini", "b.ini"]
    assert reply["held"] == ["c.ini"] and reply["refused"] == [{"id": "x y.ini"}]
    assert run(api, "stats") == {"stats": api.document()}
    assert run(api, "zergs") == {"enabled": False, "pool": {}}
    api.brood = {"pool": 4, "zergs_max": 4}
    assert run(api, "zergs") == {"enabled": True, "pool": {"pool": 4, "zergs_max": 4}}
    assert run(api, "events") == {"endpoint": "ipc:///run/x.events"}
    assert api.calls == []  # views only


def test_status_by_id_or_stem_held_and_unknown() -> None:
    api = Fake(states={"app.ini": "loyal", "going.ini": "stopping"}, held_names={"going.ini", "off.ini"})
    assert run(api, "status", name="app") == {"vassal": {"id": "app.ini", "pid": 10, "state": "loyal"}}
    assert run(api, "status", name="app.ini")["vassal"]["id"] == "app.ini"
    assert run(api, "status", name="off")["vassal"]["state"] == "held"
    assert run(api, "status", name="going.ini")["vassal"] == {"id": "going.ini", "pid": 10,
                                                              "state": "stopping", "held": True}
    assert refused(api, "status", name="nope").errno == Errno.UNKNOWN_VASSAL


def test_reload_one_all_and_the_refusals() -> None:
    api = Fake(states={"b.ini": "ready", "a.ini": "loyal"})
    assert run(api, "reload", name="a") == {"reloaded": ["a.ini"]}
    assert run(api, "reload", all=True) == {"reloaded": ["a.ini", "b.ini"]}
    assert api.calls == [("reload", "a.ini"), ("reload_all",)]
    assert refused(api, "reload").errno == Errno.MESSAGE_ERROR
    assert refused(api, "reload", name="a", all=True).errno == Errno.MESSAGE_ERROR
    api.stopping_all = True
    err = refused(api, "reload", all=True)
    assert err.errno == Errno.BAD_STATE and "shutting down" in err.reason
    api.accepts = False
    err = refused(api, "reload", name="b")
    assert err.errno == Errno.BAD_STATE and err.reason == "reload: b.ini is ready"


def test_a_held_vassal_is_bad_state_not_unknown() -> None:
    api = Fake(states={"app.ini": "stopping"}, held_names={"app.ini"})
    err = refused(api, "reload", name="app")
    assert err.errno == Errno.BAD_STATE and "emperor ctl start app.ini" in err.reason
    assert refused(api, "stop", name="app").errno == Errno.BAD_STATE
    assert refused(api, "scale", name="app", processes=2).errno == Errno.BAD_STATE
    assert api.calls == []


def test_stop_holds_the_record() -> None:
    api = Fake(states={"app.ini": "ready"})
    assert run(api, "stop", name="app") == {"stopping": "app.ini"}
    assert api.calls == [("hold", "app.ini")]
    assert refused(api, "stop", name="other").errno == Errno.UNKNOWN_VASSAL


def test_start_knows_records_files_and_held_names() -> None:
    api = Fake(states={"dead.ini": "failed"}, found={"new.ini"}, held_names={"held.ini"})
    for name in ("dead", "new.ini", "held"):
        run(api, "start", name=name)
    assert api.calls == [("start", "dead.ini"), ("start", "new.ini"), ("start", "held.ini")]
    assert refused(api, "start", name="ghost").errno == Errno.UNKNOWN_VASSAL
    api.accepts = False
    assert refused(api, "start", name="dead").reason == "start: dead.ini is failed"
    assert refused(api, "start", name="new").reason == "start: new.ini is not startable"


def test_scale_checks_the_count_and_waits_for_the_vassal() -> None:
    api = Fake(states={"app.ini": "ready"})
    later = run(api, "scale", name="app", processes=3)
    assert isinstance(later, Later) and api.calls == [("scale", "app.ini", 3, SCALE_WAIT)]
    for bad in (0, MAX_PROCESSES + 1):
        assert refused(api, "scale", name="app", processes=bad).errno == Errno.MESSAGE_ERROR
    assert refused(api, "scale", name="app", processes="3").errno == Errno.MESSAGE_ERROR
    api.accepts = False
    err = refused(api, "scale", name="app", processes=3)
    assert err.errno == Errno.BAD_STATE and err.reason == "scale: app.ini is ready"


def test_later_sends_once() -> None:
    sent: list[Any] = []
    later = Later(1.0, request_id="r", send=sent.append)
    later.finish({"scaled": "a.ini"})
    later.fail(Errno.BAD_STATE, "too late")
    assert sent == [{"scaled": "a.ini"}]


def test_validate_rejects_unknown_and_mistyped_properties() -> None:
    cmd = REGISTRY["status"]
    with pytest.raises(ControlError, match="unknown properties: extra"):
        validate(cmd, {"name": "a", "extra": 1})
    with pytest.raises(ControlError, match="required"):
        validate(cmd, {})
    with pytest.raises(ControlError, match="1 to 255 characters"):
        validate(cmd, {"name": "x" * 256})
    with pytest.raises(ControlError, match="JSON object"):
        validate(cmd, [1])
    assert validate(REGISTRY["reload"], None) == {"name": None, "all": False}


def test_the_reference_page_says_what_happens_to_an_oversized_request() -> None:
    from emperor.control import reference

    page = reference.render()
    assert "never read" not in page
    assert "gets a `TOO_LARGE` error reply without being parsed" in page
    assert "drops the connection" in page
