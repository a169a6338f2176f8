"""The settings of the OpenAI-compatible client, checked once where they are built.

:class:`APISettings` is everything about how the client talks to one endpoint and spends money;
:class:`BatchAPISettings`, when set, sends the uncached requests through the OpenAI Batch API
instead of as direct requests (``batch_api.py``). Neither holds the API key: the key is given to
the client object alone, so a settings object can be printed, logged or compared freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from multicsr_core.llm.accounting import Pricing
from multicsr_core.llm.chat import MAX_TOKENS_FIELDS

MAX_REQUESTS_PER_BATCH = 50_000  # OpenAI's limit per batch input file
# OpenAI: an input file "can be up to 200 MB". 190 * 10**6 stays under it whether a MB is 10**6
# or 2**20 bytes, with 5% to spare.
OPENAI_MAX_FILE_BYTES = 200 * 10**6
MAX_BYTES_PER_BATCH = 190 * 10**6


@dataclass(frozen=True)
class BatchAPISettings:
    """Where batch state lives and how batches are run.

    Args:
        state_dir: the workdir's ``.multicsr/batches`` folder (batch store and request files).
        poll_interval_s: seconds between two status checks of the running batches.
        max_wait_s: stop waiting after this long (None: until every batch ends, at most the 24 h
            window); unfinished requests come back ``not_requested`` and the next run picks the
            same batches up again.
        price_factor: the Batch API's price as a fraction of the synchronous one (0.5).
        max_requests_per_batch: requests per submitted batch (at most OpenAI's 50,000).
        max_bytes_per_batch: bytes per submitted input file (at most 200 MB; default 190 MB).
    """

    state_dir: Path
    poll_interval_s: float = 30.0
    max_wait_s: float | None = None
    price_factor: float = 0.5
    max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH
    max_bytes_per_batch: int = MAX_BYTES_PER_BATCH

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, not {self.poll_interval_s}")
        if not 1 <= self.max_requests_per_batch <= MAX_REQUESTS_PER_BATCH:
            raise ValueError(f"max_requests_per_batch must be in 1..{MAX_REQUESTS_PER_BATCH}")
        if not 1 <= self.max_bytes_per_batch <= OPENAI_MAX_FILE_BYTES:
            raise ValueError(f"max_bytes_per_batch must be in 1..{OPENAI_MAX_FILE_BYTES}")
        if not 0 <= self.price_factor <= 1:
            raise ValueError(f"price_factor must be in [0, 1], not {self.price_factor}")


@dataclass(frozen=True)
class APISettings:
    """How the client reaches one endpoint, how fast, and at what price.

    Args:
        base_url: the endpoint (``http://host:8000/v1``); None means api.openai.com.
        api_key_env: the environment variable the key is read from when the client is given none.
            A local server (``base_url`` set) may need none: the placeholder ``"EMPTY"`` is sent then.
        concurrency: requests in flight at once (direct transport).
        timeout_s: per-request timeout (each attempt).
        max_retries: the openai client's transport retries (429, 5xx, timeouts, connection).
        invalid_reply_retries: extra attempts for 200 responses that are not a completion.
        requests_per_minute, tokens_per_minute: client-side limits (None: unlimited).
        pricing: USD per million prompt / completion tokens, for cost accounting.
        budget_usd: stop starting requests once this much would be spent (None: no cap).
        max_tokens_field: the body field the reply-length limit is sent as: ``max_tokens``, or
            ``max_completion_tokens`` (reasoning models); see ``openai_backend.py``.
        batch_api: set: the uncached requests go through the OpenAI Batch API (``batch_api.py``).
    """

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 5
    invalid_reply_retries: int = 2
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    pricing: Pricing = Pricing()
    budget_usd: float | None = None
    max_tokens_field: str = "max_tokens"
    batch_api: BatchAPISettings | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {self.timeout_s}")
        if self.max_retries < 0 or self.invalid_reply_retries < 0:
            raise ValueError("max_retries and invalid_reply_retries must not be negative")
        if self.max_tokens_field not in MAX_TOKENS_FIELDS:
            raise ValueError(f"max_tokens_field must be one of {MAX_TOKENS_FIELDS}, not {self.max_tokens_field!r}")
