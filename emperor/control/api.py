"""What a control command may ask of the emperor: the one face the control plane sees.

``control/`` never imports ``empire/``: the commands and the server are written against
``EmperorAPI``, a ``typing.Protocol``. The emperor side (``emperor/empire/operator.py``)
implements it with the emperor's public verbs; the unit tests implement it with a small
fake (tests/test_control_commands.py), so every command's checks and replies are tested
without a process. Vassals are named by their id (``app.ini``); every method receives a
name that the command already resolved against ``records``/``files``/``held``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from emperor.control.protocol import ControlError, Errno


@dataclass
class Later:
    """A reply that waits for a vassal (``scale``): the server binds ``send``, the emperor finishes it.

    ``finish`` sends the result dict, ``fail`` an error reply; the first call wins, later
    ones are ignored (an answer that arrives after the deadline is simply dropped).
    """

    deadline: float
    request_id: Any = None
    send: Callable[[dict[str, Any] | ControlError], None] | None = field(default=None, repr=False)
    done: bool = False

    def finish(self, result: dict[str, Any] | ControlError) -> None:
        if self.done:
            return
        self.done = True
        if self.send is not None:
            self.send(result)

    def fail(self, errno: Errno, reason: str) -> None:
        self.finish(ControlError(errno, reason))


class EmperorAPI(Protocol):
    """The verbs and views a command uses; each acts only as the emperor's own loop would."""

    # ---- views ----------------------------------------------------------------------------
    def records(self) -> Collection[str]:
        """Names with a vassal record (running, starting, stopping, throttled, failed...)."""
        ...

    def files(self) -> Collection[str]:
        """Names whose file the last scan found (held ones excluded)."""
        ...

    def held(self) -> Collection[str]:
        """Names stopped with ``emperor ctl stop`` (held until ``start``)."""
        ...

    def state(self, name: str) -> str:
        """The record's state as its word (``ready``, ``failed``...), ``not started`` without one."""
        ...

    def shutting_down(self) -> bool:
        ...

    def document(self) -> dict[str, Any]:
        """The whole emperor-stats document (``vassals``, ``refused``, ...)."""
        ...

    def entry(self, name: str) -> dict[str, Any]:
        """One record's entry of that document."""
        ...

    def pool(self) -> dict[str, Any] | None:
        """The broodlord pool as broodlord describes it; None when broodlord is off."""
        ...

    def events_endpoint(self) -> str:
        """Where the PUB socket of the event stream listens ("" without a control plane)."""
        ...

    # ---- verbs ----------------------------------------------------------------------------
    def reload(self, name: str) -> bool:
        """Like touching the file: reload a running vassal, retry a dead one now; False: cannot now."""
        ...

    def reload_all(self) -> None:
        """As SIGHUP: reload every vassal."""
        ...

    def hold(self, name: str) -> None:
        """Stop the vassal gracefully and keep it stopped until ``start``."""
        ...

    def start(self, name: str) -> bool:
        """Release a held vassal, or retry a dead one now; False: it is neither."""
        ...

    def scale(self, name: str, count: int, wait: float) -> Later | None:
        """Ask the vassal for ``count`` workers; the ``Later`` is finished with its answer (or after
        ``wait`` seconds). None: the vassal cannot be asked now."""
        ...
