"""Pack events into batch envelopes (`monitor.contracts.envelope`) before they are sent.

One Kafka message per event costs the worker a record and its decoding each; one message per
batch of events bound for the same place (a model's predictions, the outcomes of one partition)
costs them once. `EnvelopePacker` holds each key's events until `max_events` of them,
`max_bytes` of them, or `linger_ms` since the first; each event gets a future that the
envelope's delivery resolves. No broker here: the publisher sends what the packer hands over.

>>> packer = EnvelopePacker(max_events=2, linger_ms=20)
>>> first, ready = packer.add("fraud", b'{"n": 1}', now=0.0)
>>> ready, packer.held
([], 1)
>>> second, ready = packer.add("fraud", b'{"n": 2}', now=0.001)
>>> [(key, envelope) for key, envelope, _ in ready]
[('fraud', b'{"batch_version":1,"events":[{"n": 1},{"n": 2}]}')]
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

from monitor.contracts.envelope import BATCH_VERSION, MAX_ENVELOPE_EVENTS

_HEAD = b'{"batch_version":%d,"events":[' % BATCH_VERSION
_TAIL = b"]}"

Packed = tuple[Hashable, bytes, list["Future[object]"]]
"""A full envelope: its key (where it goes: the publisher's topic, Kafka key and partition), its
bytes, one future per event in it."""


@dataclass(slots=True)
class _Open:
    started: float
    raws: list[bytes] = field(default_factory=list)
    futures: list[Future[object]] = field(default_factory=list)
    size: int = len(_HEAD) + len(_TAIL)


class EnvelopePacker:
    """Events per key, packed into envelopes of at most `max_events` events and `max_bytes`
    bytes, each envelope due `linger_ms` after its first event. Thread-safe."""

    def __init__(self, *, max_events: int = 100, max_bytes: int = 512 * 1024, linger_ms: float = 20.0):
        if not 1 <= max_events <= MAX_ENVELOPE_EVENTS:
            raise ValueError(f"max_events: {max_events} is not between 1 and {MAX_ENVELOPE_EVENTS}")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.linger = linger_ms / 1000
        self._open: dict[Hashable, _Open] = {}
        self._lock = threading.Lock()

    def add(self, key: Hashable, raw: bytes, *, now: float) -> tuple[Future[object], list[Packed]]:
        """Hold `raw` under `key`. Returns its future and the envelopes now full (the one it
        closed, or the one it did not fit in)."""
        future: Future[object] = Future()
        ready: list[Packed] = []
        with self._lock:
            current = self._open.get(key)
            if current is not None and current.size + len(raw) + 1 > self.max_bytes:
                ready.append(self._close(key))
                current = None
            if current is None:
                current = self._open[key] = _Open(now)
            current.raws.append(raw)
            current.futures.append(future)
            current.size += len(raw) + 1
            if len(current.raws) >= self.max_events or current.size >= self.max_bytes:
                ready.append(self._close(key))
        return future, ready

    def due(self, now: float) -> list[Packed]:
        """The envelopes whose first event waited `linger_ms` or longer."""
        with self._lock:
            return [self._close(key) for key, held in list(self._open.items()) if now - held.started >= self.linger]

    def drain(self) -> list[Packed]:
        """Every envelope held, due or not (on flush and close)."""
        with self._lock:
            return [self._close(key) for key in list(self._open)]

    @property
    def held(self) -> int:
        """Events waiting in envelopes not yet handed over."""
        with self._lock:
            return sum(len(held.raws) for held in self._open.values())

    def _close(self, key: Hashable) -> Packed:
        held = self._open.pop(key)
        return key, _HEAD + b",".join(held.raws) + _TAIL, held.futures
