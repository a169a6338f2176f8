"""Token and cost accounting with a budget cap.

Prices are per million tokens, set by the user (providers change them; no price list is
built in). The ledger counts what this process spent; the response cache keeps per-row token
counts so the total across runs can be summed from it (``ResponseCache.token_totals``).

The budget is enforced before each request: a request is sent only if the money already
spent, plus the reserved estimates of the requests in flight, plus this request's estimate,
stays within the cap. The estimate is deliberately pessimistic (prompt characters / 3 for
the prompt, ``max_tokens`` for the reply), so concurrent requests cannot overshoot the cap
by more than the estimation error. When the cap is reached no new request starts; those in
flight finish and are cached, and the caller gets a report saying the budget stopped the
run. Nothing is lost: the next run (with a larger budget) starts where this one stopped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


class BudgetExceeded(RuntimeError):
    """Raised by ``BatchReport.raise_for_budget`` when a run stopped at its budget cap."""


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens, for prompt (input) and completion (output) tokens."""

    prompt_per_million: float = 0.0
    completion_per_million: float = 0.0

    def __post_init__(self) -> None:
        if self.prompt_per_million < 0 or self.completion_per_million < 0:
            raise ValueError(f"prices must not be negative: {self}")

    @property
    def free(self) -> bool:
        return self.prompt_per_million == 0 and self.completion_per_million == 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_million + completion_tokens * self.completion_per_million) / 1e6


def estimate_prompt_tokens(text_chars: int) -> int:
    """A pessimistic token estimate for text of this many characters (English runs ~4 chars/token)."""
    return text_chars // 3 + 8


@dataclass
class UsageTotals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class UsageLedger:
    """Thread-safe running totals, with reservations for the budget check."""

    def __init__(self, pricing: Pricing, budget_usd: float | None = None):
        if budget_usd is not None and budget_usd < 0:
            raise ValueError(f"budget_usd must not be negative, not {budget_usd}")
        if budget_usd is not None and pricing.free:
            raise ValueError("budget_usd needs prices (prompt_per_million / completion_per_million) to mean anything")
        self.pricing = pricing
        self.budget_usd = budget_usd
        self._totals = UsageTotals()
        self._reserved = 0.0
        self._lock = threading.Lock()

    def try_reserve(self, estimate_usd: float) -> bool:
        """Reserve ``estimate_usd`` for a request about to start; False if it would pass the cap."""
        with self._lock:
            if self.budget_usd is not None and self._totals.cost_usd + self._reserved + estimate_usd > self.budget_usd:
                return False
            self._reserved += estimate_usd
            return True

    def settle(self, estimate_usd: float, prompt_tokens: int, completion_tokens: int,
               price_factor: float = 1.0) -> float:
        """Release a reservation and book what the request really used; returns its cost.

        ``price_factor`` scales the prices (the Batch API's discount, ``batch_api.py``)."""
        cost = price_factor * self.pricing.cost(prompt_tokens, completion_tokens)
        with self._lock:
            self._reserved -= estimate_usd
            self._totals.requests += 1
            self._totals.prompt_tokens += prompt_tokens
            self._totals.completion_tokens += completion_tokens
            self._totals.cost_usd += cost
        return cost

    def release(self, estimate_usd: float) -> None:
        """Drop a reservation whose request was never made."""
        with self._lock:
            self._reserved -= estimate_usd

    def totals(self) -> UsageTotals:
        with self._lock:
            return UsageTotals(**vars(self._totals))
