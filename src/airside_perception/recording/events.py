"""Recorded events: a triggered cloud with a few clouds of context before and after.

The ring keeps everything heard about the last ``ring_clouds`` clouds, keyed by the cloud's
stamp (the input cloud itself, every output and status that carries its stamp). A trigger
opens an event from ``before`` clouds ahead of it; further triggers inside the event extend
it (up to ``max_event_clouds``); the event is ready once ``after`` clouds have followed its
last trigger, and one more for their outputs to arrive, or after ``flush_s`` without clouds.
Memory stays bounded: the ring drops its oldest cloud, an event holds only references.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from airside_perception.errors import ConfigError


@dataclass(frozen=True)
class ContextParams:
    before: int = 5
    after: int = 5
    ring_clouds: int = 30
    max_event_clouds: int = 60
    flush_s: float = 2.0

    def __post_init__(self):
        if not (0 <= self.before < self.ring_clouds and 0 <= self.after < self.ring_clouds):
            raise ConfigError(f"context before {self.before} and after {self.after} must each be below ring_clouds "
                              f"{self.ring_clouds} (the ring holds the context)")
        if self.max_event_clouds < self.before + self.after + 1:
            raise ConfigError(f"max_event_clouds {self.max_event_clouds} must hold before + after + 1 clouds")
        if not self.flush_s > 0:
            raise ConfigError(f"flush_s {self.flush_s} must be positive")


@dataclass
class Frame:
    """Everything heard about one cloud: topic -> [(message, receive time s)]."""

    stamp_ns: int
    parts: Dict[str, List[Tuple[Any, float]]] = field(default_factory=dict)

    def add(self, topic: str, message: Any, received_s: float) -> None:
        self.parts.setdefault(topic, []).append((message, received_s))

    def first(self, topic: str) -> Optional[Any]:
        items = self.parts.get(topic)
        return items[0][0] if items else None


@dataclass
class Event:
    """One recording: its frames in stamp order, the triggers by stamp, an operator's note."""

    start_ns: int
    end_ns: int  # the last cloud that must be recorded (mark: start + duration)
    triggers: Dict[int, List[str]] = field(default_factory=dict)
    note: str = ""
    frames: List[Frame] = field(default_factory=list)
    updated_s: float = 0.0
    messages: List[Tuple[str, Any]] = field(default_factory=list)  # (topic, message), copied when ready
    info: Dict[str, Any] = field(default_factory=dict)  # what the index says of it, taken when ready

    @property
    def first_trigger_ns(self) -> int:
        return min(self.triggers) if self.triggers else self.start_ns

    def trigger_names(self) -> List[str]:
        return sorted({t for names in self.triggers.values() for t in names})


class EventAssembler:
    """The ring of recent clouds and the events being assembled from it."""

    def __init__(self, params: ContextParams):
        self.params = params
        self._ring: "collections.OrderedDict[int, Frame]" = collections.OrderedDict()
        self._open: Optional[Event] = None
        self._ready: Deque[Event] = collections.deque()
        self.truncated = 0  # events closed at max_event_clouds

    def add(self, stamp_ns: int, topic: str, message: Any, now_s: float, is_cloud: bool = True) -> None:
        """Files a message under its cloud's stamp. Only a cloud opens a frame: an output whose
        cloud is not in the ring (older than it, or a status of no cloud) is dropped; a new cloud
        may evict the ring's oldest."""
        frame = self._ring.get(stamp_ns)
        if frame is None and not is_cloud:
            return
        if frame is None:
            if self._ring and stamp_ns < next(iter(self._ring)):
                return  # older than anything kept: its context is gone
            frame = self._ring[stamp_ns] = Frame(stamp_ns)
            if len(self._ring) > 1 and stamp_ns < next(reversed(self._ring)):
                self._ring = collections.OrderedDict(sorted(self._ring.items()))
            while len(self._ring) > self.params.ring_clouds:
                self._ring.popitem(last=False)
        frame.add(topic, message, now_s)
        event = self._open
        if event is not None:
            if stamp_ns >= event.start_ns and all(f is not frame for f in event.frames):
                event.frames.append(frame)
                event.frames.sort(key=lambda f: f.stamp_ns)
            event.updated_s = now_s
            self._close_if_done()

    def trigger(self, stamp_ns: int, triggers: List[str], now_s: float) -> None:
        """Records the cloud ``stamp_ns`` for ``triggers`` (already rate limited)."""
        if not triggers or stamp_ns not in self._ring:  # no cloud of that stamp kept: nothing to record
            return
        if self._open is not None and len(self._open.frames) >= self.params.max_event_clouds:
            self.truncated += 1
            self._finish()
        if self._open is None:
            self._open = self._new_event(stamp_ns, stamp_ns, now_s)
        event = self._open
        event.triggers[stamp_ns] = sorted(set(event.triggers.get(stamp_ns, [])) | set(triggers))
        event.end_ns = max(event.end_ns, stamp_ns)
        event.updated_s = now_s
        self._close_if_done()

    def mark(self, stamp_ns: int, duration_ns: int, note: str, now_s: float) -> None:
        """An operator's recording: from ``before`` clouds ahead of ``stamp_ns`` to ``duration_ns`` after it."""
        if self._open is not None:
            self._finish()
        event = self._open = self._new_event(stamp_ns, stamp_ns + duration_ns, now_s)
        event.triggers[stamp_ns] = ["mark"]
        event.note = note

    def _new_event(self, stamp_ns: int, end_ns: int, now_s: float) -> Event:
        stamps = [s for s in self._ring if s <= stamp_ns]
        start = stamps[max(len(stamps) - 1 - self.params.before, 0)] if stamps else stamp_ns
        event = Event(start, end_ns, updated_s=now_s)
        event.frames = [f for s, f in self._ring.items() if s >= start]
        return event

    def _close_if_done(self) -> None:
        event = self._open
        later = [s for s in self._ring if s > event.end_ns]
        if len(later) > self.params.after:  # the after-context and one cloud more (its outputs are in)
            self._finish()
        elif len(event.frames) >= self.params.max_event_clouds:
            self.truncated += 1
            self._finish()

    def _finish(self) -> None:
        event, self._open = self._open, None
        later = [s for s in self._ring if s > event.end_ns]
        keep_until = later[self.params.after - 1] if self.params.after and len(later) >= self.params.after \
            else (later[-1] if later and self.params.after else event.end_ns)
        event.frames = [f for f in event.frames if f.stamp_ns <= keep_until]
        self._ready.append(event)

    def tick(self, now_s: float) -> None:
        """Closes the open event after ``flush_s`` without news (clouds stopped)."""
        if self._open is not None and now_s - self._open.updated_s > self.params.flush_s:
            self._finish()

    def frame(self, stamp_ns: int) -> Optional[Frame]:
        """What the ring holds for the cloud ``stamp_ns`` (None: not, or no longer)."""
        return self._ring.get(stamp_ns)

    def pop_ready(self) -> List[Event]:
        out = list(self._ready)
        self._ready.clear()
        return out

    @property
    def is_recording(self) -> bool:
        return self._open is not None
