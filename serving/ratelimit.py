"""Per-key request rate limits, shared by every worker of one server.

``WINBACK_RATE_LIMIT=600/60s`` gives each API key 600 requests per 60 seconds as a token bucket:
a key may spend its 600 at once, and earns them back at 10 a second. A request with no token
left is answered 429 with ``Retry-After`` (whole seconds until a token is back). The buckets live
in a small memory-mapped file that the workers of one ``bentoml serve`` share (named after that
parent process), updated under a file lock, so a key has one limit however many workers answer
it. Unset (the default), nothing is counted.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import re
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_SLOT = struct.Struct("dd")                         # tokens left, when they were counted (monotonic)
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(s|sec|second|seconds|m|min|minute|minutes|h|hour|hours)?\s*$")
_UNITS = {"s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
          "h": 3600, "hour": 3600, "hours": 3600}


@dataclass(frozen=True)
class RateLimit:
    """``requests`` per ``seconds`` for each key."""

    requests: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> "RateLimit":
        """``600/60s``, ``10/s``, ``1000/min``, ``5000/h`` (a number before the unit is optional)."""
        match = _LIMIT.match(text)
        if not match:
            raise ValueError(f"expected requests per period like 600/60s, 10/s or 1000/min, got {text!r}")
        count, number, unit = match.groups()
        seconds = float(number or 1) * _UNITS[unit or "s"]
        if int(count) < 1 or seconds <= 0:
            raise ValueError(f"expected at least 1 request per a positive period, got {text!r}")
        return cls(int(count), seconds)

    def __str__(self) -> str:
        return f"{self.requests}/{self.seconds:g}s"


class RateLimiter:
    """Token buckets for ``slots`` keys in the file ``path`` (default: one per server, see the module)."""

    def __init__(self, limit: RateLimit, slots: int, path: Path | None = None) -> None:
        self.limit = limit
        self.rate = limit.requests / limit.seconds
        self.path = path or Path(tempfile.gettempdir()) / f"winback-ratelimit-{os.getuid()}-{os.getppid()}"
        size = _SLOT.size * max(slots, 1)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)                # zero slots: a key starts with a full bucket
        self._map = mmap.mmap(self._fd, size)
        self._slots = slots

    def take(self, slot: int) -> int:
        """Spend one of key ``slot``'s tokens: 0 if there was one, else the whole seconds to wait."""
        if not 0 <= slot < self._slots:
            return 0
        offset = slot * _SLOT.size
        now = time.monotonic()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            tokens, counted = _SLOT.unpack_from(self._map, offset)
            if counted == 0.0 or counted > now:         # a new slot, or a clock from another boot
                tokens = float(self.limit.requests)
            else:
                tokens = min(float(self.limit.requests), tokens + (now - counted) * self.rate)
            if tokens >= 1.0:
                _SLOT.pack_into(self._map, offset, tokens - 1.0, now)
                return 0
            _SLOT.pack_into(self._map, offset, tokens, now)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def close(self) -> None:
        """Close the shared file (its buckets stay for the other workers)."""
        self._map.close()
        os.close(self._fd)
