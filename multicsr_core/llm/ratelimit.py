"""An asyncio token bucket for requests-per-minute and tokens-per-minute limits.

API providers publish limits per minute (RPM, TPM). A token bucket refills at ``per_minute / 60``
units per second up to ``burst`` units; a request takes ``amount`` units (1 for RPM, its
estimated token count for TPM) and waits while the bucket is short. Waiters are served in
arrival order (they queue on one lock), so a large request is not starved by small ones.

``burst`` defaults to one second's worth: starting with a full minute's allowance would send
a minute of traffic at once, which is exactly what trips a provider's own limiter.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


class TokenBucket:
    """``await bucket.acquire(n)`` waits until ``n`` units are available and takes them."""

    def __init__(self, per_minute: float, *, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        if per_minute <= 0:
            raise ValueError(f"a rate limit must be positive, not {per_minute}")
        self.rate_per_s = per_minute / 60.0
        self.capacity = float(burst) if burst is not None else max(1.0, self.rate_per_s)
        if self.capacity <= 0:
            raise ValueError(f"burst must be positive, not {burst}")
        self._clock = clock
        self._level = self.capacity
        self._updated = clock()
        # asyncio.Lock binds to the event loop that first waits on it; the synchronous facade
        # runs a fresh loop per call, so the lock is made per loop while the level carries over.
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate_per_s)
        self._updated = now

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def acquire(self, amount: float = 1.0) -> None:
        # A request bigger than the bucket waits for a full bucket, then drives the level
        # negative, so the units it used beyond the capacity delay the requests after it.
        needed = min(float(amount), self.capacity)
        async with self._loop_lock():
            while True:
                self._refill()
                if self._level >= needed:
                    self._level -= amount
                    return
                await asyncio.sleep((needed - self._level) / self.rate_per_s)

    def adjust(self, delta: float) -> None:
        """Correct an estimate once the real amount is known (positive: it used more)."""
        self._refill()
        self._level -= delta
