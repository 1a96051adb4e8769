"""Which simplex instance publishes: an active one and a hot standby, without ROS.

Both instances take every input and decide every cycle; only the active one publishes. The
active one announces itself (instance, role, term) every heartbeat period. A standby takes over
when no active heartbeat has come for ``takeover_timeout_s``, with a term one higher than any it
has seen; an active instance that hears an active of a higher term (or of the same term and a
smaller name) steps down, so two actives never persist. An instance that was stopped (a hung
process, SIGSTOP) notices the gap in its own ticks, steps down and may not publish until it has
ticked again: a resumed process stands by. An instance starts as standby and becomes active only
after ``startup_listen_s`` without hearing an active one (a respawned instance therefore comes
back as the standby), the configured start role deciding which of two fresh instances waits
longer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from airside_perception.errors import ConfigError

ACTIVE, STANDBY = "active", "standby"


@dataclass(frozen=True)
class RoleParams:
    takeover_timeout_s: float = 0.05  # silence of the active heartbeat after which a standby takes over
    startup_listen_s: float = 1.5  # a fresh instance listens this long for an active one
    heartbeat_period_s: float = 0.01

    def __post_init__(self):
        if not 3 * self.heartbeat_period_s <= self.takeover_timeout_s <= 0.2:
            raise ConfigError(f"takeover_timeout_ms {self.takeover_timeout_s * 1e3:g} must lie in "
                              f"[{3e3 * self.heartbeat_period_s:g}, 200]: at least three heartbeats, well under "
                              "one cycle")


class Roles:
    def __init__(self, instance: str, start_role: str, params: RoleParams, now: float):
        if start_role not in (ACTIVE, STANDBY):
            raise ConfigError(f"role '{start_role}' must be '{ACTIVE}' or '{STANDBY}'")
        self.instance, self.start_role, self.params = instance, start_role, params
        self.role = STANDBY
        self.term = 0
        self.started = now
        self.last_active_heard: Optional[float] = None
        self.active_instance = ""
        self.takeovers = 0
        self.last_tick = now

    # ------------------------------------------------------------------ inputs
    def on_heartbeat(self, instance: str, role: str, term: int, now: float) -> Optional[str]:
        """A heartbeat of another instance; returns why this one stepped down, or None."""
        if instance == self.instance or role != ACTIVE:
            return None
        if term >= self.term:
            self.last_active_heard = now
            self.active_instance = instance
        stepped = None
        if self.role == ACTIVE and (term, self.instance) > (self.term, instance):
            self.role = STANDBY
            stepped = f"{instance} is active with term {term} (this instance's term {self.term}): standing by"
        self.term = max(self.term, term)
        return stepped

    def tick(self, now: float) -> Optional[str]:
        """Called every heartbeat period and before every publish; returns what changed (a takeover
        or a step-down), or None. A gap in the ticks as long as the takeover timeout means this
        process was stopped or starved: a standby may have taken over meanwhile, so an active one
        stands by, and a standby does not take over on what it missed while it was not running."""
        gap, self.last_tick = now - self.last_tick, now
        if gap > self.params.takeover_timeout_s:
            self.last_active_heard = now  # hear the others first: a full timeout before any takeover
            if self.role == ACTIVE:
                self.role = STANDBY
                return f"this process stalled for {gap * 1e3:.0f} ms: standing by"
            return None
        if self.role == ACTIVE:
            return None
        if self.last_active_heard is not None:
            silent = now - self.last_active_heard > self.params.takeover_timeout_s
        else:  # nobody heard yet: the configured active waits the listening time, the standby twice that
            wait = self.params.startup_listen_s * (1 if self.start_role == ACTIVE else 2)
            silent = now - self.started > wait
        if not silent:
            return None
        self.role, self.term = ACTIVE, self.term + 1
        self.takeovers += 1 if self.last_active_heard is not None else 0
        previous, self.active_instance = self.active_instance, self.instance
        if previous:
            return f"took over from {previous} (no heartbeat for {(now - self.last_active_heard) * 1e3:.0f} ms)"
        return "active (no other active instance heard)"

    # ------------------------------------------------------------------ outputs
    def may_publish(self, now: float) -> Optional[str]:
        """Ticks, then: None when this instance may publish now, else why not (standing by, or it
        has just noticed that it was stopped)."""
        change = self.tick(now)
        if self.role != ACTIVE:
            return change or "standing by"
        return None
