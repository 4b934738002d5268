"""Crash back-off for one vassal: pure policy, the caller passes the clock.

uWSGI blacklists a vassal that dies before it has been loyal and delays its next start by
one more ``emperor-throttle`` step per death, up to ``emperor-max-throttle``. emperor
doubles the delay instead (1, 2, 4, 8 ... s, capped), so a vassal that can never boot
costs a handful of spawns per minute, and a loyal vassal that crashes once comes back at
once. A manual action (touching the file, SIGHUP, SIGURG) resets the throttle.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Throttle:
    step: float = 1.0  # seconds: the first delay (emperor-throttle)
    cap: float = 180.0  # seconds: the largest delay (emperor-max-throttle)
    level: float = 0.0  # the delay given after the last death, 0 when not throttled
    attempts: int = 0  # unloyal deaths in a row

    def death(self, loyal: bool, uptime: float) -> float:
        """Record a death and return the delay before the next spawn, in seconds.

        ``loyal`` means the vassal served since it was (re)started. A loyal vassal that
        lived at least one step is respawned at once and forgiven; any other death grows
        the delay, so a vassal crashing right after its first request cannot spin either.
        """
        if loyal and uptime >= self.step:
            self.reset()
            return 0.0
        self.attempts += 1
        self.level = min(self.cap, self.step if self.level <= 0 else self.level * 2)
        return self.level

    def reset(self) -> None:
        self.level = 0.0
        self.attempts = 0

    @property
    def throttled(self) -> bool:
        return self.level > 0
