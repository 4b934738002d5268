"""The watchdog thread: it only says "something changed" to the main loop.

The observer never spawns, stops or reads anything itself: a file event only posts to the
:class:`Inbox`, a socketpair the main loop polls, and the main loop rescans. The watched
set is the vassal directories plus the directories that their symlinks point into
(apps-available), so that editing or touching a link's target is seen at once, not at
the next periodic rescan.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_OPENED,
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

log = logging.getLogger("emperor")

# Reading a file is not a change; without this filter the scan's own open() would wake the
# loop again, forever. The inotify watch is also asked only for the events below, so the
# kernel never queues the opens and read-only closes the rescan itself causes (about two per
# vassal per rescan, which watchdog would otherwise read and decode in Python to drop them).
# Attribute changes (IN_ATTRIB) are wanted: since watchdog 5 they are their own event type, and
# ``os.utime`` (Python's ``Path.touch``, Ansible's ``state=touch``), ``touch -h`` on a link, a
# chmod or a chown (tyrant mode: a new owner) change nothing else. The scan never changes an
# attribute (reading updates atime without IN_ATTRIB), so this cannot wake the loop forever.
_IGNORED = frozenset({EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE})
_WANTED: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent,
    FileAttribEvent, DirCreatedEvent, DirDeletedEvent, DirModifiedEvent, DirMovedEvent, DirAttribEvent,
]


class Inbox:
    """A wake-up the monitor thread can post to and the main loop can select on."""

    def __init__(self) -> None:
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self._lock = threading.Lock()
        self._posted = False

    def post(self) -> None:
        with self._lock:
            if self._posted:
                return
            self._posted = True
        with contextlib.suppress(OSError):
            self._writer.send(b"!")

    def take(self) -> bool:
        """True if something was posted since the last call; drains the wake-up bytes."""
        with contextlib.suppress(OSError):
            while self.reader.recv(4096):
                pass
        with self._lock:
            posted, self._posted = self._posted, False
        return posted

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _IGNORED:
            self.inbox.post()


class Monitor:
    """Owns the watchdog observer; ``watch()`` is called by the main loop after each scan."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self._handler = _Handler(inbox)
        self._observer: BaseObserver | None = None
        self._watches: dict[str, ObservedWatch] = {}

    def start(self) -> None:
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        self._watches = {}

    def alive(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def restart(self) -> set[str]:
        """Replace the observer thread (after it died, or on SIGWINCH). Returns the dirs to re-watch."""
        dirs = set(self._watches)
        self.stop()
        self.start()
        return dirs

    def watch(self, dirs: set[str]) -> None:
        if self._observer is None:
            return
        for d in set(self._watches) - dirs:
            with contextlib.suppress(Exception):
                self._observer.unschedule(self._watches.pop(d))
        for d in sorted(dirs - set(self._watches)):
            try:
                self._watches[d] = self._observer.schedule(self._handler, d, recursive=False,
                                                           event_filter=_WANTED)
            except OSError as exc:
                log.warning("monitor: cannot watch %s: %s (the periodic rescan still sees it)", d, exc)

    def stop(self) -> None:
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                self._observer.join(timeout=2)
            self._observer = None
        self._watches = {}
