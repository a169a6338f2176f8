"""Checks that run before a stage does any work, so a bad path or model fails in a second, not
after an hour of scoring.

Each check raises a :class:`~multicsr_core.errors.UserError` subclass whose one-line message names
the file (or option, or model) and what to do; nothing is written. ``preflight_<command>`` bundles
the checks of one CLI command; :func:`preflight_run` those of the whole pipeline (``multicsr run``
calls it before the flow starts).

- inputs exist, are files, are readable, and yield at least one usable row after cleaning (the
  readers of ``io.inputs``, stopped at the first usable row: the load stage reads the rest);
- outputs can be written: not a directory where a file is wanted (or the reverse), and the
  nearest existing folder takes a new file (probed with a temporary file, since ``os.access``
  says yes to root even on a read-only mount);
- models resolve: a ``bundled:`` name is known and installed, a local path exists, a hub id is in
  the Hugging Face cache or (unless ``HF_HUB_OFFLINE``) answers on the hub;
- the SentEval data is where evaluation looks;
- a configured Prefect server answers.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from multicsr_core.config import default_data_root, expand_path
from multicsr_core.config_facts import effective_loss, guide_ref_for_scoring, is_prompt_file, scoring_llm_ref
from multicsr_core.errors import (NO_PERMISSION, READ_ONLY, DataDirError, InputError, ModelRefError, OutputError,
                                  ServerError, access_error)
from multicsr_core.io.download import data_root_hint
from multicsr_core.io.inputs import check_has_rows, has_score_columns, input_stat
from multicsr_core.prompts import PROMPT_SETS
from multicsr_core.redaction import redact_url

FALLBACK_MODEL = "bundled:all-MiniLM-L6-v2"


# ------------------------------------------------------------------------------ files
def check_input_file(path: str | Path, flag: str = "input") -> Path:
    """``path`` is an existing, readable, non-empty file, or a stream (a pipe such as ``<(cmd)``,
    ``/dev/stdin``, a FIFO), which is not touched here: its reader reads it once, with a deadline.
    A symlink loop, a dangling symlink, a directory, a socket say so."""
    path = Path(path).expanduser()
    st = input_stat(path, flag)
    if not stat.S_ISREG(st.st_mode):
        return path  # reading even a byte here would take it from the reader
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror})", path=path, hint=f"check {flag}") from None
    if st.st_size == 0:
        raise InputError("is empty (0 bytes)", path=path, hint=f"give a file with data as {flag}")
    return path


def _probe_writable(folder: Path, target: Path, flag: str) -> None:
    """Create and remove a temporary file in ``folder`` (the only test that holds for root too)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".multicsr-write-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write in {folder} ({exc.strerror or exc})", path=target,
                          hint=f"give a writable place as {flag}") from None


def _nearest_existing(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _check_creatable(path: Path, flag: str) -> None:
    """Every existing ancestor of ``path`` is a folder, and the nearest one is writable."""
    ancestor = _nearest_existing(path.parent if not path.exists() else path)
    if not ancestor.is_dir():
        raise OutputError(f"cannot be created: {ancestor} is a file, not a folder", path=path,
                          hint=f"give another path as {flag}")
    _probe_writable(ancestor, path, flag)


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """A file can be written (atomically, beside itself) at ``path``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError("is a directory; a file path is needed here", path=path,
                          hint=f"give {flag} a file path (a new name, or one inside this folder)")
    if path.exists():
        _probe_writable(path.parent, path, flag)
    else:
        _check_creatable(path, flag)
    return path


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """A folder exists or can be created at ``path``, and takes new files."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError("is a file; a folder is needed here", path=path, hint=f"give a folder as {flag}")
    if path.is_dir():
        _probe_writable(path, path, flag)
    else:
        _check_creatable(path, flag)
    return path


# ------------------------------------------------------------------------------ models
def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached_on_hub(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache  # heavy: only when a hub id is checked (see check_model)

    for filename in ("config.json", "modules.json", "adapter_config.json"):
        if isinstance(try_to_load_from_cache(repo_id, filename), str):
            return True
    return False


def check_model(ref: str | None, flag: str, fallback: str | None = FALLBACK_MODEL) -> None:
    """``ref`` (at option/config key ``flag``) can be loaded without downloading anything that
    is not there: a known, installed ``bundled:`` model, an existing folder or ``.gguf`` file, or
    a hub id in the local Hugging Face cache or (online) on the hub. Never loads or converts."""
    if not ref:
        raise ModelRefError(f"no model given for {flag}", hint=f"name one (e.g. {flag} {fallback})" if fallback else None)
    # Imported here, not at the top: preflight runs before every command, and a command that names no
    # model (curate, inspect, a bad path) must not pay for huggingface_hub and transformers (seconds).
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    from multicsr_core import models

    ref = str(ref)
    hint = f"give {flag} a local folder or a bundled model" + (f" (e.g. {flag} {fallback})" if fallback else "")
    try:
        if ref.startswith(models.BUNDLED_PREFIX):
            if models.bundled_gguf_file(ref) is None:  # unknown names and missing GGUF packages raise here
                models.resolve_model_ref(ref)  # a package-provided folder: importing the package is cheap
            return
        if models.gguf_file_for(ref) is not None:  # a .gguf path: raises when it is missing
            return
    except ModelRefError as exc:
        raise ModelRefError(f"{flag}: {exc}") from None
    path = Path(ref).expanduser()
    if path.exists():
        if path.is_file():
            raise ModelRefError(f"{flag} {ref!r} is a file; give a model folder, a .gguf file, a hub id or a "
                                "bundled model")
        if not any((path / name).is_file() for name in ("config.json", "modules.json", "adapter_config.json")):
            raise ModelRefError(f"{flag} {ref!r} is a folder without a model in it (no config.json)", hint=hint)
        return
    if ref.startswith(("/", "./", "../", "~", "\\")) or ref.count("/") > 1:
        raise ModelRefError(f"{flag} {ref!r}: no such file or folder", hint=hint)
    try:
        validate_repo_id(ref)
    except HFValidationError:
        raise ModelRefError(f"{flag} {ref!r} is neither an existing path nor a Hugging Face hub id", hint=hint) from None
    if _cached_on_hub(ref):
        return
    if _hub_offline():
        raise ModelRefError(f"{flag} {ref!r} is a Hugging Face hub id that is not in the local cache, and "
                            "HF_HUB_OFFLINE is set", hint=hint)
    try:
        HfApi().model_info(ref, timeout=10)
    except GatedRepoError:
        raise ModelRefError(f"{flag} {ref!r} is a gated model on the Hugging Face hub",
                            hint="accept its terms on the hub and log in (`hf auth login`), or " + hint) from None
    except RepositoryNotFoundError:
        raise ModelRefError(f"{flag} {ref!r}: no such model on the Hugging Face hub", hint=hint) from None
    except Exception as exc:  # noqa: BLE001  (any failure to reach the hub: DNS, proxy, TLS, timeout)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelRefError(f"{flag} {ref!r} is a Hugging Face hub id that is not in the local cache, and the hub "
                            f"cannot be reached ({reason})", hint=hint) from None


# ------------------------------------------------------------------------------ data, prompts, server
def check_senteval(data_dir: str | Path | None, flag: str = "--data-dir") -> Path:
    """The SentEval folder evaluation will read (``data_dir`` is it, or a data root holding it)."""
    from multicsr_core.evaluation.runner import resolve_senteval_dir  # scipy and numpy: only when evaluating

    where = Path(data_dir) if data_dir is not None else default_data_root()
    try:
        return resolve_senteval_dir(where)
    except FileNotFoundError:
        raise DataDirError("no SentEval data here (no STS/ folder, nor senteval/STS/)", path=where,
                           hint=data_root_hint(flag)) from None


def check_prompt_set(value: str | None, flag: str = "--prompt-set") -> None:
    """A built-in prompt set name or an existing prompt file (.yaml/.yml/.json)."""
    if value is None:
        return
    if value in PROMPT_SETS:
        return
    path = Path(value).expanduser()
    if is_prompt_file(value):
        check_input_file(path, flag)
        return
    raise InputError(f"{flag} {value!r} is neither a built-in prompt set ({', '.join(PROMPT_SETS)}) nor a prompt file "
                     "(.yaml, .yml or .json)")


def _get(url: str, timeout_s: float) -> tuple[int, str, bytes]:
    """(status, content type, first bytes) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (the user's own server)
            return response.status, response.headers.get("content-type", ""), response.read(256)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", "") if exc.headers else "", b""


def _is_prefect_health(status: int, body: bytes, content_type: str = "") -> bool:
    """Prefect's ``GET /api/health`` answers 200 with the JSON ``true`` (any JSON answer is taken:
    Prefect Cloud, proxies); a web page or a 404 is not Prefect."""
    return status == 200 and (body.strip() == b"true" or "json" in content_type.lower())


def check_prefect_server(url: str | None, timeout_s: float = 5.0) -> None:
    """A configured Prefect API answers its health check as Prefect does (``/health`` is JSON
    ``true``); a server that answers otherwise (a forgotten ``/api``: the UI's HTML or a 404; any
    other web server) is named with the URL to use instead. Else the flow would fail after
    Prefect's own retries with a long traceback."""
    if not url:
        return
    shown = redact_url(url)
    base = url.rstrip("/")
    try:
        status, content_type, body = _get(base + "/health", timeout_s)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ServerError(f"PREFECT_API_URL={shown}: no Prefect server answers ({reason})",
                          hint="start one (`prefect server start`) or unset PREFECT_API_URL to run on a temporary "
                               "local server") from None
    if status in (401, 403) or _is_prefect_health(status, body, content_type):
        return  # Prefect, or a server that wants credentials: it is there
    got = f"HTTP {status}" + (f", {content_type.split(';')[0]}" if content_type else "")
    if not base.endswith("/api"):
        try:
            api_status, api_type, api_body = _get(base + "/api/health", timeout_s)
        except (urllib.error.URLError, OSError, ValueError):
            api_status, api_type, api_body = 0, "", b""
        suggestion = redact_url(base + "/api")
        if _is_prefect_health(api_status, api_body, api_type) or api_status in (401, 403):
            raise ServerError(f"PREFECT_API_URL={shown} is the Prefect server without its API path (/health gave "
                              f"{got})", hint=f"add /api: export PREFECT_API_URL={suggestion}")
        raise ServerError(f"PREFECT_API_URL={shown} answers, but not as a Prefect API (/health gave {got})",
                          hint=f"add /api if it is a Prefect server (PREFECT_API_URL={suggestion}), or point "
                               "PREFECT_API_URL at one, or unset it to run on a temporary local server")
    raise ServerError(f"PREFECT_API_URL={shown} answers, but not as a Prefect API (/health gave {got})",
                      hint="point PREFECT_API_URL at a Prefect server's API (e.g. http://127.0.0.1:4200/api), or "
                           "unset it to run on a temporary local server")


# ------------------------------------------------------------------------------ Prefect home
_DATABASE_URL_VARS = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")


def prefect_home() -> Path:
    """Prefect's home (``PREFECT_HOME``, default ``~/.prefect``), read without importing Prefect
    (which warns on stderr, and goes on, when it cannot create it)."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def _profile_api_url(home: Path) -> str | None:
    """``PREFECT_API_URL`` of the active profile in Prefect's profiles file, if any."""
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    profile = (data.get("profiles") or {}).get(active) or {}
    value = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return str(value) if value else None


def _check_writable_place(path: Path, variable: str, folder: bool = True) -> None:
    """``path`` (a folder, or a file's folder) exists or can be created, and takes new files; the
    one-line error names ``variable``, which moves it."""
    place = path if folder else path.parent
    current = place
    while not current.exists() and current != current.parent:
        current = current.parent
    what = {"PREFECT_HOME": "Prefect's home: the temporary Prefect server keeps its database there"}.get(
        variable, "the temporary Prefect server's database")
    if not current.is_dir():
        raise OutputError(f"is a file, not a folder ({what})", path=current,
                          hint=f"set {variable} to a writable folder")
    try:
        with tempfile.TemporaryFile(dir=current, prefix=".multicsr-write-probe-"):
            pass
    except OSError as exc:
        kind = READ_ONLY if exc.errno == errno.EROFS else NO_PERMISSION
        raise access_error(place, kind, variable) from None


def check_prefect_home(api_url: str | None = None) -> None:
    """Before Prefect is imported: with no Prefect server configured (``PREFECT_API_URL`` in the
    environment or the active profile), ``multicsr run`` starts a temporary one whose SQLite
    database lives in Prefect's home (or ``PREFECT_SERVER_DATABASE_CONNECTION_URL``): that place
    must take files. An unwritable home (a read-only root file system) would otherwise make the
    server fail to start over and over, printing a traceback each time."""
    home = prefect_home()
    if api_url or os.environ.get("PREFECT_API_URL") or _profile_api_url(home):
        return
    for variable in _DATABASE_URL_VARS:
        url = os.environ.get(variable)
        if url:
            if not url.startswith("sqlite") or ":memory:" in url:
                return  # the server's database is elsewhere (PostgreSQL)
            database = url.split("///", 1)[-1].split("?", 1)[0]
            _check_writable_place(Path(database).expanduser(), variable, folder=False)
            return
    _check_writable_place(home, "PREFECT_HOME")


# ------------------------------------------------------------------------------ per command
def check_premises(cfg, flag: str = "--premises") -> None:
    i = cfg.input
    path = check_input_file(expand_path(i.premises), flag)
    check_has_rows(path, "premises", fmt=i.premises_format, column=i.column)


def check_triplets(path: str | Path, flag: str = "--corpus") -> Path:
    path = check_input_file(path, flag)
    check_has_rows(path, "triplets")
    return path


def _generation_models(cfg, flag: str = "--llm") -> None:
    g = cfg.generation
    if not g.llm:
        raise ModelRefError("no generator given", hint=f"name one with {flag} (a hub id, a folder, a .gguf file or "
                                                     "bundled:smollm2-135m-instruct)")
    if g.backend == "local":
        check_model(g.llm, flag, fallback="bundled:smollm2-135m-instruct")
    check_prompt_set(g.prompt_set, "generation.prompt_set" if flag != "--llm" else "--prompt-set")


def _scoring_models(cfg, flag: str = "--llm") -> None:
    s = cfg.scoring
    if s.scorer == "guide":
        check_model(guide_ref_for_scoring(cfg), flag if s.llm else "training.guide_model")
    elif s.scorer == "local":
        ref, _, key = scoring_llm_ref(cfg)
        if not ref:
            raise ModelRefError("the local scorer needs an LLM", hint=f"name one with {flag} (or set generation.llm "
                                                                      "for self-curation)")
        check_model(ref, flag if key == "scoring.llm" else key, fallback="bundled:smollm2-135m-instruct")
    elif scoring_llm_ref(cfg)[0] is None:
        raise ModelRefError("the openai scorer needs a model name", hint=f"name the API model with {flag}")


def _training_models(cfg, model_flag: str = "--model", guide_flag: str = "--guide") -> None:
    t = cfg.training
    check_model(t.base_model, model_flag)
    if effective_loss(cfg) in ("paper", "official"):
        check_model(t.guide_model, guide_flag)
    if t.supervised_nli:
        check_triplets(expand_path(t.supervised_nli), "training.supervised_nli")


def preflight_generate(cfg, out_path: str | Path, workdir: str | Path) -> None:
    check_premises(cfg)
    check_output_file(out_path, "--out")
    check_output_dir(workdir, "--workdir")
    _generation_models(cfg)


def preflight_score(cfg, corpus: str | Path, out_path: str | Path, workdir: str | Path) -> None:
    check_triplets(corpus)
    check_output_file(out_path, "--out")
    check_output_dir(workdir, "--workdir")
    _scoring_models(cfg)


def preflight_curate(cfg, corpus: str | Path, out_path: str | Path, report_dir: str | Path) -> None:
    """The corpus must carry scores (curation reads them); outputs writable."""
    path = check_triplets(corpus)
    if not has_score_columns(path):
        raise InputError("has no score columns (entailment_score, contradiction_score); curation keeps triplets by "
                         "their scores", path=path, hint="score it first: `multicsr score --corpus ...`")
    check_output_file(out_path, "--out")
    check_output_dir(report_dir, "--report-dir")


def preflight_train(cfg, corpus: str | Path, out_dir: str | Path) -> None:
    check_triplets(corpus)
    check_output_dir(out_dir, "--out")
    _training_models(cfg)


def preflight_evaluate(model: str, output: str | Path, data_dir: str | Path | None, markdown: str | Path) -> Path:
    check_model(model, "--model")
    check_output_file(output, "--output")
    check_output_file(markdown, "--markdown")
    return check_senteval(data_dir)


def preflight_run(cfg, workdir: str | Path, prefect_api_url: str | None = None) -> None:
    """Everything ``multicsr run`` needs, before the flow (and its Prefect server) starts."""
    check_output_dir(workdir, "--workdir")
    model = Path(workdir).expanduser() / "model"
    if cfg.training.enabled and model.is_dir() and not model.is_symlink():
        # the run publishes `model` as a link to its trained folder and will not replace a user's folder
        raise OutputError("is a folder of your own, not the link a run publishes there", path=model,
                          hint="move it out of the workdir, or use another --workdir")
    i = cfg.input
    configured = i.triplets or i.premises
    if configured and "{data_root}" in configured and not expand_path(configured).exists():
        raise DataDirError(f"not found under the data root {default_data_root()}", path=expand_path(configured),
                           hint=data_root_hint())
    if i.triplets:
        check_triplets(expand_path(i.triplets), "input.triplets")
    elif i.premises:
        check_premises(cfg, "input.premises")
        _generation_models(cfg, "generation.llm")
    else:
        raise InputError("the config names no input", hint="set input.premises or input.triplets (--set "
                                                           "input.triplets=FILE)")
    _scoring_models(cfg, "scoring.llm")
    if cfg.training.enabled:
        _training_models(cfg, "training.base_model", "training.guide_model")
        if cfg.evaluation.enabled:
            check_senteval(expand_path(cfg.evaluation.data_dir), "--data-dir")
    check_prefect_home(prefect_api_url)
    check_prefect_server(prefect_api_url)
