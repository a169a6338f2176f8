"""The one typed configuration of a MultiCSR pipeline, with the paper's defaults.

Every default below is pinned by ``method.md`` (the MultiCSR paper, arXiv 2310.10962, and
its official code where the paper is silent). Presets are YAML files holding a partial config;
they are merged over these defaults, then command-line overrides are merged over the preset.
Unknown keys and out-of-range values are rejected by pydantic with a message naming the key.

Paths may use ``{data_root}``: it expands to the data root (``MULTICSR_DATA_ROOT``, else the
first of ``../shared/data`` and ``~/.cache/multicsr/data`` that exists), so presets work from a
fresh clone with ``../shared`` beside it and on a user's machine after ``multicsr data download``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from multicsr_core.losses import LOSSES  # the names only: no torch until a loss is built

DATA_ROOT_ENV = "MULTICSR_DATA_ROOT"
PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def default_data_root() -> Path:
    """Where the public data lives: env var, then ``../shared/data``, then the user cache."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    for candidate in (Path("../shared/data"), Path.home() / ".cache" / "multicsr" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return Path.home() / ".cache" / "multicsr" / "data"


def expand_path(value: str | Path | None) -> Path | None:
    """Expand ``{data_root}`` and ``~`` in a configured path."""
    if value is None:
        return None
    text = str(value).replace("{data_root}", str(default_data_root()))
    return Path(text).expanduser()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(_Section):
    """Where the pipeline enters: unlabeled premises (stage 1) or an existing triplet corpus (stage 2)."""

    premises: str | None = Field(None, description="premise file: .txt (one per line), SimCSE NLI csv, csv/tsv/jsonl/parquet")
    premises_format: Literal["auto", "lines", "simcse-nli", "csv", "tsv", "jsonl", "parquet"] = "auto"
    column: str | None = Field(None, description="column holding the sentence for csv/tsv/jsonl/parquet (default sent0/sentence/text)")
    triplets: str | None = Field(None, description="existing triplet corpus (sent0,sent1,hard_neg) entering at stage 2")
    max_chars: int = Field(2000, ge=1, description="a sentence longer than this is an input error")
    limit: int | None = Field(None, ge=1, description="use only the first N unique inputs (smoke runs)")

    @model_validator(mode="after")
    def _one_source(self) -> "InputConfig":
        if self.premises and self.triplets:
            raise ValueError("input: set either 'premises' or 'triplets', not both")
        return self


class GenerationConfig(_Section):
    """Stage 1: contrastive generation (paper 3.1)."""

    llm: str | None = Field(None, description="HF hub id or path of the generator; None = no generation stage")
    revision: str | None = None
    backend: Literal["local", "openai"] = Field("local", description="openai = plain generation through an API (no logits, no contrast)")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint for backend=openai (key: scoring.api_key_env)")
    mode: Literal["multicsr", "claif"] = "multicsr"
    omega: float = Field(0.3, ge=-2.0, le=5.0, description="contrast weight w in l_t - w * l_hat_t (paper App. C)")
    prompt_set: str = Field("syncse-pool", description="syncse-pool | official-2shot | path to a prompt file")
    template: str | None = Field(None, description="template joining a pool instruction and the sentence")
    use_chat_template: bool = True
    max_new_tokens: int = Field(64, ge=1, le=4096)
    batch_size: int = Field(16, ge=1)
    shard_size: int = Field(512, ge=1, description="premises per cached generation task / Parquet shard")
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0.0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    seed: int = 42
    batch_api: bool = Field(False, description="backend=openai: send through the OpenAI Batch API (half price, "
                                               "within 24 h; settings scoring.batch_*)")


class ScoringConfig(_Section):
    """Stage 2a: similarity scores a = sim(x, x+), b = sim(x, x-) on 0-5."""

    scorer: Literal["guide", "local", "openai"] = "local"
    llm: str | None = Field(None, description="scoring LLM; None = the generation LLM (the paper's self-curation)")
    revision: str | None = None
    mode: Literal["argmax", "expected", "generate"] = Field(
        "argmax", description="argmax | expected: one forward pass, the first token's distribution over 0-5; "
                              "generate: greedy generation + the official parser (method.md)")
    prompt: Literal["official", "official-verbatim", "few-shot"] = Field(
        "official", description="official zero-shot prompt (official-verbatim: with its 17 spaces); few-shot: "
                                "ours, four worked examples (prompts.SCORING_PROMPT_FEW_SHOT)")
    min_score_mass: float = Field(
        0.25, ge=0.0, le=1.0,
        description="one-forward modes: a pair whose score tokens hold less of the first token's probability is "
                    "unparsable (rejected, not retried). 0.25 from SmolLM2-135M on SNLI pairs: prose-answering "
                    "pairs hold <= 0.041, digit-answering ones >= 0.91 (benchmarks/bench_judges.py)")
    base_url: str | None = None
    context_tokens: int | None = Field(
        None, ge=1, description="the API model's context in tokens (scorer=openai, and generation.backend=openai): "
                                "a prompt over it (less max_tokens) is rejected as prompt_too_long, never sent; "
                                "counted as `multicsr estimate` counts. None: no check")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        "max_tokens", description="the request field of the reply-length limit (API scoring, and generation.backend="
                                  "openai; direct and Batch API): max_completion_tokens for reasoning models (o-series, "
                                  "gpt-5), which refuse max_tokens; max_tokens for servers that know only it")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (never stored)")
    api_key_secret_block: str | None = Field(None, description="Prefect Secret block name holding the API key")
    concurrency: int = Field(16, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    price_input_per_1m: float = Field(0.0, ge=0)
    price_output_per_1m: float = Field(0.0, ge=0)
    budget_usd: float | None = Field(None, gt=0)
    allowed_failure_fraction: float = Field(0.0, ge=0.0, le=1.0)
    batch_api: bool = Field(False, description="scorer=openai: send through the OpenAI Batch API (half price, "
                                               "answers within 24 h); a killed run picks its batches up again")
    batch_poll_interval_s: float = Field(30.0, gt=0, le=3600, description="seconds between Batch API status checks")
    batch_max_wait_s: float | None = Field(None, gt=0, description="stop waiting for batches after this long (None: "
                                           "until they end); the next run collects them, without resubmitting")
    # OpenAI prices Batch API tokens at 50% of the synchronous price ("50% cost discount compared to
    # synchronous APIs", https://platform.openai.com/docs/guides/batch); other providers may differ.
    batch_price_factor: float = Field(0.5, ge=0.0, le=1.0, description="Batch API price / synchronous price")
    batch_max_requests: int = Field(50_000, ge=1, le=50_000, description="requests per submitted batch (OpenAI: 50,000)")
    batch_size: int = Field(64, ge=1)
    shard_size: int = Field(2048, ge=1, description="triplets per cached scoring task")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"


class CurationConfig(_Section):
    """Stage 2b: the keep rule (paper: a >= alpha, b <= beta, a >= b + gamma)."""

    enabled: bool = Field(True, description="False keeps every parsed triplet (ablation: without stage 2)")
    rule: Literal["paper", "official"] = "paper"
    alpha: float = Field(3.0, ge=0.0, le=5.0)
    beta: float = Field(3.0, ge=0.0, le=5.0)
    gamma: float = Field(1.0, ge=0.0, le=5.0)


class TrainingConfig(_Section):
    """Stage 3: SimCSE-style in-batch training with the guide mask (paper Eq. 7)."""

    enabled: bool = True
    base_model: str = "bert-base-uncased"
    pooling: Literal["cls", "mean"] = "cls"
    mlp_only_train: bool = True
    max_seq_length: int = Field(32, ge=4, le=8192, description="tokens per input while training only (SimCSE: 32)")
    save_max_seq_length: int | None = Field(None, ge=4, le=8192, description="the saved model's max_seq_length; None = the backbone's own (evaluation is untruncated either way)")
    loss: Literal[tuple(LOSSES)] = "paper"  # multicsr_core.losses.LOSSES: the one list of losses
    guide_model: str = "princeton-nlp/unsup-simcse-bert-base-uncased"
    guide_pooling: Literal["auto", "cls", "mean"] = "auto"
    mask: bool = Field(True, description="False disables the in-batch mask (ablation: without stage 3)")
    sigma: float = Field(0.9, ge=-1.0, le=2.0, description="guide cosine at or above which an in-batch negative is masked")
    phi: float = Field(0.95, ge=-1.0, le=2.0, description="threshold of the official loss (strict >)")
    tau: float = Field(0.05, gt=0.0, le=10.0)
    batch_size: int = Field(256, ge=2)
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0)
    epochs: float = Field(3.0, gt=0.0)
    max_steps: int | None = Field(None, ge=1)
    eval_steps: int = Field(125, ge=1)
    seed: int = 42
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    supervised_nli: str | None = Field(None, description="merge these gold NLI triplets (paper App. G)")


class EvaluationConfig(_Section):
    """SentEval as forked by SimCSE."""

    enabled: bool = True
    data_dir: str = Field("{data_root}/senteval", description="SentEval 'downstream' folder")
    tasks: list[Literal["sts", "transfer"]] = ["sts"]
    sts_tasks: list[Literal["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"]] | None = Field(
        None, description="restrict the STS suite (None = all seven, as the paper reports)")
    batch_size: int = Field(128, ge=1)
    evaluate_baseline: bool = True


class PipelineConfig(_Section):
    """The whole pipeline: one object, one hash."""

    name: str = "multicsr"
    input: InputConfig = InputConfig()
    generation: GenerationConfig = GenerationConfig()
    scoring: ScoringConfig = ScoringConfig()
    curation: CurationConfig = CurationConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        return stable_hash(self.to_dict())

    def section_hash(self, *sections: str) -> str:
        """Hash of some sections only: a stage's cache key uses the sections that determine it."""
        full = self.to_dict()
        return stable_hash({s: full[s] for s in sections})


def config_diff(a: "PipelineConfig", b: "PipelineConfig") -> list[tuple[str, Any, Any]]:
    """``(dotted.key, value in a, value in b)`` for every leaf that differs, in field order."""
    def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                out.update(leaves(item, f"{prefix}{key}."))
            return out
        return {prefix[:-1]: value}

    left, right = leaves(a.to_dict()), leaves(b.to_dict())
    keys = list(left) + [k for k in right if k not in left]
    return [(k, left.get(k), right.get(k)) for k in keys if left.get(k) != right.get(k)]


def stable_hash(obj: Any) -> str:
    """sha256 of canonical JSON: the same content gives the same key on every machine."""
    payload = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


from multicsr_core.errors import ConfigError  # noqa: E402  (defined with the other user errors; re-exported here)


def list_presets() -> list[str]:
    return sorted(p.stem for p in _presets_dir().glob("*.yaml"))


def _presets_dir() -> Path:
    if PRESETS_DIR.is_dir():
        return PRESETS_DIR
    # installed wheel: presets ship as package data of multicsr.presets
    from importlib import resources

    return Path(str(resources.files("multicsr.presets")))


def resolve_preset(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = _presets_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"unknown preset {name_or_path!r}: not a file, and not one of {', '.join(list_presets())}")


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """``training.sigma=0.8`` -> ``{"training": {"sigma": 0.8}}`` (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    dotted, raw = text.split("=", 1)
    keys = [k.strip() for k in dotted.strip().split(".") if k.strip()]
    if not keys:
        raise ConfigError(f"override {text!r} names no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    out: dict = value
    for key in reversed(keys):
        out = {key: out}
    return out


def _format_validation_error(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
        else:
            problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    # one line (the CLI prints user errors as one line): problems joined by "; "
    return f"invalid configuration ({source}): " + "; ".join(problems)


def load_config(preset: str | None = None, overrides: list[dict] | None = None) -> PipelineConfig:
    """Defaults <- preset file <- overrides (dicts, in order), validated once at the end."""
    data: dict = {}
    source = "defaults"
    if preset:
        path = resolve_preset(preset)
        source = str(path)
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ConfigError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                              "save the preset as UTF-8", path=path, line=line) from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a preset must be a mapping of sections")
        data = loaded
    return resolve_config(data, overrides, source)


def resolve_config(data: dict, overrides: list[dict] | None = None, source: str = "config") -> PipelineConfig:
    """A config mapping <- overrides (dicts, in order), validated once; ``source`` names it in errors."""
    for update in overrides or []:
        data = deep_merge(data, update)
        source += " + overrides"
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
