"""Secrets out of everything we write: URL credentials and secret-looking keys.

One helper for every place a config, a base URL or a provenance dict lands (Parquet provenance,
results JSON and sidecars, the model folder's ``multicsr_training.json``, run summaries,
fingerprints, logs). A base URL such as ``http://user:key@host/v1?api_key=...`` keeps its scheme,
host, port and path; the user info, query and fragment go (they are where credentials hide).
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"

# keys whose values are secrets whatever they hold
SECRET_KEY = re.compile(r"(api[_-]?key|secret|passw(or)?d|authorization|credential|(^|_)token$)", re.IGNORECASE)
# ...except these names, which say *where* a key comes from, not the key itself
_NOT_SECRET_KEYS = {"api_key_env", "api_key_secret_block"}
# a URL with user info: scheme://user[:password]@host...
_URL_WITH_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@:]*(?::[^\s/@]*)?@")


def redact_url(url: str | None) -> str | None:
    """``url`` without user:password, query string or fragment: safe for fingerprints and logs."""
    if not url:
        return url
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:  # not a URL (a path, a model name): nothing to strip
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_text(text: str) -> str:
    """Free text (an error message, a log line) with the credentials of any URL in it removed."""
    return _URL_WITH_USERINFO.sub(r"\1", text)


def _is_secret_key(key: Any) -> bool:
    name = str(key)
    return name not in _NOT_SECRET_KEYS and bool(SECRET_KEY.search(name))


def redact_secrets(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, strings) safe to write: secret-looking keys hold
    ``<redacted>``, URLs (``*url*`` keys) lose their credentials and query, and any other string
    loses the user info of the URLs it contains."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if _is_secret_key(key) and item:
                out[key] = REDACTED
            elif "url" in str(key).lower() and isinstance(item, str):
                out[key] = redact_url(item)
            else:
                out[key] = redact_secrets(item)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v) for v in value]
    if isinstance(value, str) and "@" in value:
        return redact_text(value)
    return value


#: Environment variable through which ``run`` hands URL credentials to its own process and its
#: Dask workers: the flow's parameters (stored by Prefect in its database and shown in the UI)
#: carry only the redacted URLs.
SECRET_URLS_ENV = "MULTICSR_SECRET_URLS"
_URL_SECTIONS = ("generation", "scoring")


def hold_url_credentials(config: dict) -> dict:
    """A copy of ``config`` whose base URLs are redacted; the full URLs are kept, keyed by their
    redacted form, in this process's environment (``SECRET_URLS_ENV``), never in a file.
    :func:`restore_url` gives them back where a client is built."""
    import json
    import os

    held = json.loads(os.environ.get(SECRET_URLS_ENV) or "{}")
    out = {**config}
    for section in _URL_SECTIONS:
        url = (config.get(section) or {}).get("base_url")
        safe = redact_url(url)
        if url and safe != url:
            held[safe] = url
            out[section] = {**config[section], "base_url": safe}
    if held:
        os.environ[SECRET_URLS_ENV] = json.dumps(held)
    return out


def restore_url(url: str | None) -> str | None:
    """The full URL that :func:`hold_url_credentials` redacted to ``url`` (else ``url`` itself)."""
    import json
    import os

    if not url:
        return url
    return json.loads(os.environ.get(SECRET_URLS_ENV) or "{}").get(url, url)
