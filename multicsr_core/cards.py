"""Model and dataset cards: ``README.md`` files with the Hugging Face Hub's YAML header.

Both cards are rendered from our own Jinja templates (``card_templates/``) through the Hub's own
card machinery, so the YAML header is what the Hub validates:

- the **model card** through sentence-transformers' :class:`SentenceTransformerModelCardData`
  (subclassed: our template, our fields, a ``model-index`` built from the SentEval results), and
  :func:`huggingface_hub.ModelCard.from_template`. It is written from the saved folder and its
  ``multicsr_training.json`` alone (not from the trainer's in-memory card data, which shows the
  training dataset's internal ``label`` id column and knows nothing of the corpus or the final
  evaluation), so it can be rewritten after training, after the final evaluation
  (``multicsr_evaluation.json`` in the folder keeps those figures) and before a hub push (with the
  repo id in the usage snippet).
- the **dataset card** through :class:`huggingface_hub.DatasetCardData` with ``configs`` /
  ``data_files`` and ``dataset_info.features`` built by ``datasets`` from the exported Arrow schema.

Neither card holds a secret: configs pass through :func:`multicsr_core.redaction.redact_secrets`.
"""

from __future__ import annotations

import json
import os
import random
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

from multicsr_core.config import PipelineConfig, expand_path, resolve_config
from multicsr_core.config_facts import guide_ref_for_scoring, is_prompt_file, scoring_llm_ref
from multicsr_core.losses import LOSSES, citations
from multicsr_core.prompts import PromptSet

__all__ = [
    "EVALUATION_FILE",
    "CardTarget",
    "ExportedFile",
    "MultiCSRModelCardData",
    "PromptsFor",
    "corpus_license_text",
    "dataset_card_text",
    "fix_file_modes",
    "model_card_files",
    "model_card_text",
    "run_facts",
    "source_data",
    "trained_record",
    "write_dataset_card",
    "write_model_card",
]

TEMPLATES = Path(__file__).with_name("card_templates")
EVALUATION_FILE = "multicsr_evaluation.json"
TRAINING_FILE = "multicsr_training.json"
#: The stage-1 prompt set a config chose (the pipeline's ``generation_prompt_set``): a card states
#: the prompts stage 1 used, which only the application layer knows (a base model gets another set).
PromptsFor = Callable[[PipelineConfig], PromptSet]

# Known hub ids behind references that are not hub ids themselves.
_HUB_IDS = {"bundled:all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
            "bundled:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "bundled:gemma-3-270m": "google/gemma-3-270m"}
# The licenses (the Hub's license ids, as their model cards declare them) of the models multicsr
# bundles or its presets name, by lower-cased hub id: what a card says when the model's own card is
# not at hand (offline, not downloaded). Gemma is not Apache: its weights and what it generates come
# under the Gemma Terms of Use (https://ai.google.dev/gemma/terms).
_MODEL_LICENSES = {
    "sentence-transformers/all-minilm-l6-v2": "apache-2.0", "huggingfacetb/smollm2-135m-instruct": "apache-2.0",
    "google/gemma-3-270m": "gemma", "google/flan-t5-xl": "apache-2.0",
    "bert-base-uncased": "apache-2.0", "google-bert/bert-base-uncased": "apache-2.0",
    "roberta-base": "mit", "facebookai/roberta-base": "mit",
}
_LICENSE_NAMES = {"apache-2.0": "Apache-2.0", "mit": "MIT",
                  "gemma": "the Gemma Terms of Use (https://ai.google.dev/gemma/terms)"}
# What a license means for a model trained on what the licensed model wrote (the model card only).
_TRAINED_ON_OUTPUT_NOTES = {
    "gemma": ("The Gemma Terms of Use (section 1.1(e), \"Model Derivatives\") count a model trained on Gemma's "
              "synthetic outputs \"to perform similarly to Gemma\" as a derivative of Gemma, bound by those terms; "
              "whether that covers this sentence encoder is for its publisher to judge: multicsr does not decide it."),
}
UNKNOWN_LICENSE = "other"  # the Hub's id for a license that is none of its list: here, one not determined


def _own_card_license(ref: str) -> str | None:
    """The ``license`` of the model's own card where it is on this machine: a local folder's
    ``README.md``, or a hub id's card in the Hugging Face cache (never downloaded here)."""
    from huggingface_hub import ModelCard, try_to_load_from_cache

    folder = Path(ref).expanduser()
    if (folder / "README.md").is_file():
        path: str | Path | None = folder / "README.md"
    elif _hub_id(ref) == ref:
        try:
            path = try_to_load_from_cache(ref, "README.md")
        except Exception:  # an id the cache cannot hold: nothing known
            path = None
    else:
        path = None
    if not isinstance(path, (str, Path)):
        return None
    try:
        license = ModelCard.load(path).data.license
    except Exception:  # a README without a readable YAML header: not a license
        return None
    return license if isinstance(license, str) and license else None


def model_license(ref: str | None) -> str | None:
    """The Hub license id of a model: its own card's where that is on this machine, else multicsr's
    table of the models it bundles or names (None: not determined)."""
    if not ref:
        return None
    ref = str(ref)
    if not ref.lower().startswith("bundled:"):  # a bundled GGUF is not looked into (it converts on resolve)
        own = _own_card_license(ref)
        if own:
            return own
    return _MODEL_LICENSES.get((_HUB_IDS.get(ref.lower()) or ref).lower())


def license_name(license_id: str | None) -> str | None:
    """A license id as a reader names it (``Apache-2.0``, ``the Gemma Terms of Use (URL)``)."""
    return _LICENSE_NAMES.get(license_id, license_id) if license_id else None

# What a known input file is, and its license (the corpus derives from it).
_SOURCES = {
    "snli_": ("SNLI 1.0 (Bowman et al., 2015; https://nlp.stanford.edu/projects/snli/), as SimCSE's triplet format",
              "cc-by-sa-4.0", "stanfordnlp/snli"),
    "nli_for_simcse": ("SNLI 1.0 + MultiNLI 1.0 as SimCSE's triplet file (https://github.com/princeton-nlp/SimCSE)",
                       "other", "stanfordnlp/snli"),
    "wiki1m_for_simcse": ("one million English Wikipedia sentences (SimCSE)", "cc-by-sa-3.0", None),
}

_COLUMN_MEANINGS = {
    "premise": "the anchor sentence x (input premise)",
    "entailment": "x+: a sentence the anchor entails (written by the generator, or the source's)",
    "contradiction": "x-: a sentence contradicting the anchor (hard negative)",
    "entailment_score": "a = sim(x, x+) on 0-5 from the stage-2 scorer (null: unscored)",
    "contradiction_score": "b = sim(x, x-) on 0-5 from the stage-2 scorer (null: unscored)",
    "entailment_score_error": "why a is missing (scoring or parsing failure), else null",
    "contradiction_score_error": "why b is missing, else null",
    "entailment_reply": "the scorer's raw reply for a (LLM scorers), else null",
    "contradiction_reply": "the scorer's raw reply for b, else null",
    "kept": "true iff the curation rule kept the triplet",
    "reject_reason": "why curation dropped it (null when kept)",
    "swapped": "true iff the official rule swapped x+ and x-",
    "entailment_prompt_id": "id of the instruction that produced x+ (`<set>/<kind>/<n>`), null for source triplets",
    "contradiction_prompt_id": "id of the instruction that produced x-",
    "entailment_prompt": "the full prompt text that produced x+",
    "contradiction_prompt": "the full prompt text that produced x-",
    "source_row": "row of the input file the premise came from",
    "entailment_score_mass": "probability mass the LLM scorer put on the digits 0-5 for a (null: not an LLM scorer)",
    "contradiction_score_mass": "the same for b",
    "sent0": "anchor x (SimCSE's name)",
    "sent1": "positive x+ (SimCSE's name)",
    "hard_neg": "hard negative x- (SimCSE's name)",
}


# ----------------------------------------------------------------------------- files


def _umask() -> int:
    from multicsr_core.io.atomic import current_umask

    return current_umask()


def fix_file_modes(folder: str | os.PathLike) -> None:
    """Give every file in ``folder`` the mode an ordinary new file gets (0666 & ~umask, so 0644
    under the usual 022) and every folder 0777 & ~umask.

    Why: transformers writes ``model.safetensors`` through a temporary file that is created 0600,
    so a shared or published folder would otherwise hold one unreadable file. Executable bits
    are kept on files that had them.
    """
    mask = _umask()
    root = Path(folder)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            wanted = 0o777 & ~mask
        else:
            wanted = (0o777 if mode & 0o111 else 0o666) & ~mask
        if mode != wanted:
            os.chmod(path, wanted)


def _write_text(path: Path, text: str) -> Path:
    from multicsr_core.io.atomic import write_text_atomic

    return write_text_atomic(path, text)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


# ----------------------------------------------------------------------------- facts of a run


def _hub_id(ref: str | None) -> str | None:
    """``ref`` as a hub id if it is one (``org/name``, not a local path), else a known bundled model's id."""
    if not ref:
        return None
    if ref.lower() in _HUB_IDS:
        return _HUB_IDS[ref.lower()]
    if ref.count("/") == 1 and not ref.startswith((".", "/", "~")) and not Path(ref).exists() and ":" not in ref:
        return ref
    return None


def source_path(cfg: PipelineConfig) -> str | None:
    """The run's input file (``{data_root}`` placeholders expanded)."""
    path = cfg.input.triplets or cfg.input.premises
    if path and "{" in str(path):
        path = str(expand_path(path))
    return path


def source_data(cfg: PipelineConfig) -> dict:
    """What the corpus derives from: ``{"file", "description", "license", "hub_id"}``."""
    name = Path(str(source_path(cfg) or "")).name
    for prefix, (description, license_id, hub_id) in _SOURCES.items():
        if name.startswith(prefix):
            return {"file": name, "description": description, "license": license_id, "hub_id": hub_id}
    return {"file": name or None, "description": f"`{name}` (license unknown: pass --license)" if name else
            "unknown", "license": None, "hub_id": None}


def _generation_prompts(cfg: PipelineConfig,
                        prompts_for: PromptsFor | None) -> tuple[dict[str, list[str]], str | None, str]:
    """The prompt pools, template and set name stage 1 used: ``prompts_for(cfg)`` (the caller's
    knowledge of the set stage 1 chose, e.g. a base model's in place of the configured one), else,
    where it cannot tell (no ``prompts_for``, or the model is not at hand), the configured set."""
    from multicsr_core.prompts import resolve_prompt_set

    g = cfg.generation
    prompts = None
    if prompts_for is not None:
        try:
            prompts = prompts_for(cfg)
        except Exception:  # the model is not at hand (offline hub id): the configured set, as stage 1 saw it
            prompts = None
    if prompts is None:
        try:
            if is_prompt_file(g.prompt_set):
                prompts = resolve_prompt_set(template=g.template, prompt_file=g.prompt_set)
            else:
                prompts = resolve_prompt_set(g.prompt_set, template=g.template)
        except Exception:  # a prompt file that moved: name it, do not fail the card
            return {}, None, g.prompt_set
    return ({"entailment": list(prompts.entailment), "contradiction": list(prompts.contradiction)}, prompts.template,
            prompts.name)


def _scorer_facts(cfg: PipelineConfig) -> tuple[str | None, str, str | None]:
    """``(scoring model, how it scores, the scoring prompt or None)``."""
    from multicsr_core.prompts import SCORING_PROMPT_CHOICES, SCORING_PROMPT_VARIANTS

    s = cfg.scoring
    if s.scorer == "guide":
        model = guide_ref_for_scoring(cfg)
        return model, (f"the frozen embedding model `{model}` (no LLM): cosine similarity mapped to 0-5 as "
                       "5 * clip(cos, 0, 1)"), None
    model, _, _ = scoring_llm_ref(cfg)
    how = "the probability-weighted digit" if s.mode == "expected" else "the most likely digit 0-5"
    where = f"through an OpenAI-compatible API{' at ' + s.base_url if s.base_url else ''}" \
        if s.scorer == "openai" else "run locally"
    prompt = SCORING_PROMPT_VARIANTS[SCORING_PROMPT_CHOICES[s.prompt]]
    return model, f"the LLM `{model}` ({where}; score = {how})", prompt


def run_facts(cfg: PipelineConfig, prompts_for: PromptsFor | None = None) -> dict:
    """The facts both cards state, from a run's validated config: generator, scorer, prompts,
    thresholds. ``prompts_for``: see :func:`_generation_prompts`."""
    g, c = cfg.generation, cfg.curation
    generator = None if (cfg.input.triplets or not g.llm) else g.llm
    scorer_model, scorer_description, scoring_prompt = _scorer_facts(cfg)
    prompts, template, prompt_set = _generation_prompts(cfg, prompts_for) if generator else ({}, None, g.prompt_set)
    generator_license = model_license(generator)
    return {
        "generator": generator,
        "generator_license_id": generator_license,
        "generator_license": license_name(generator_license),
        "generation_backend": ("contrastive decoding, l - w * l_hat" if g.backend == "local"
                               else "plain generation through an API (no logits, no contrast)"),
        "omega": g.omega,
        "input_triplets": source_path(cfg),
        "scorer_model": scorer_model,
        "scorer_description": scorer_description,
        "scoring_prompt": scoring_prompt,
        "generation_prompts": prompts,
        "prompt_set": prompt_set,
        "prompt_template": (template or "").replace("\n", "\\n"),
        "rule": c.rule if c.enabled else "no (curation disabled; every scored)",
        "alpha": c.alpha, "beta": c.beta, "gamma": c.gamma,
    }


def corpus_license_text(facts: Mapping[str, Any], source: Mapping[str, Any], license: str | None = None) -> str:
    """Where a run's corpus comes from and under which terms: its source data's license and the
    generator's terms for generated text. Both cards say it (the model card of a model trained on the
    corpus, the dataset card of the corpus). ``facts``: :func:`run_facts`; ``source``:
    :func:`source_data`; ``license``: the corpus's own (default the source's)."""
    license = license or source["license"] or UNKNOWN_LICENSE
    text = [f"The premises{'' if facts['generator'] else ' and their x+ / x-'} come from {source['description']}."]
    if source["license"]:
        text.append(f"License of the source: {source['license']}; the derived corpus carries the same license "
                    f"(`{license}`).")
    else:
        text.append(f"License of the corpus: `{license}` (the source's license is not known to multicsr: check it).")
    if facts["generator"]:
        terms = f" ({facts['generator_license']})" if facts.get("generator_license") else \
            " (whose license multicsr could not determine: check it)"
        text.append(f"Generated text is subject to the terms of use of the generator `{facts['generator']}`{terms}.")
    return " ".join(text)


def _config_yaml(config: Mapping[str, Any]) -> str:
    import yaml

    from multicsr_core.redaction import redact_secrets

    return yaml.safe_dump(redact_secrets(dict(config)), sort_keys=False).rstrip()


def _cell(text: Any, limit: int = 160) -> str:
    return "" if text is None else str(text).replace("|", "\\|").replace("\n", " ")[:limit]


def _kept_samples(table, n: int = 3, seed: int = 0) -> list[dict]:
    kept = [i for i, k in enumerate(table.column("kept").to_pylist()) if k is not False]
    idx = sorted(random.Random(seed).sample(kept, min(n, len(kept))))
    cols = {c: table.column(c).to_pylist() for c in ("premise", "entailment", "contradiction", "entailment_score",
                                                    "contradiction_score")}
    fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    return [{"premise": _cell(cols["premise"][i]), "entailment": _cell(cols["entailment"][i]),
             "contradiction": _cell(cols["contradiction"][i]), "a": fmt(cols["entailment_score"][i]),
             "b": fmt(cols["contradiction_score"][i]), "raw": [cols[c][i] for c in ("premise", "entailment",
                                                                                      "contradiction")]}
            for i in idx]


def _funnel(table, path) -> dict:
    """The corpus's funnel: its provenance's (which may carry stage 1's premises and rejects at
    its head) when that agrees with the table, else recomputed from the table."""
    from multicsr_core.curation import curation_funnel
    from multicsr_core.io.corpus import read_provenance

    funnel = curation_funnel(table)
    try:
        recorded = read_provenance(path).get("funnel") or {}
    except (OSError, ValueError):
        recorded = {}
    if recorded.get("total") == funnel["total"] and recorded.get("kept") == funnel["kept"]:
        return dict(recorded)
    return funnel


def _version(name: str = "multicsr") -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------- the model card


def sts_average_tasks(results: Mapping[str, Any] | None) -> list[str]:
    """The STS tasks a results dict's ``avg`` is the mean of: those that ran (the evaluation averages
    what it ran; ``evaluation.sts_tasks`` may restrict it), in the papers' order."""
    from multicsr_core.evaluation.report import STS_COLUMNS

    return [key for key in STS_COLUMNS if isinstance((results or {}).get(key), (int, float))]


def _eval_results(model_name: str, results: Mapping[str, Any] | None) -> list[dict]:
    """``model-index`` of the final SentEval evaluation: one entry per STS task (Spearman x 100),
    the STS average, and one per transfer task (accuracy).

    The average is ``senteval/sts-avg`` only when it is the papers' (all seven tasks); the mean of a
    subset is ``senteval/sts-avg-N`` with the tasks as its config (``STS12,STS13,STSBenchmark``) and
    in its name, so it is never read as the seven-task figure. One task alone gets no average."""
    from huggingface_hub import EvalResult
    from huggingface_hub.repocard_data import eval_results_to_model_index

    from multicsr_core.evaluation.report import STS_COLUMNS, TRANSFER_COLUMNS

    if not results:
        return []
    source = {"source_name": "multicsr SentEval (SimCSE fork protocol)", "source_url": "https://arxiv.org/abs/2104.08821"}
    entries = []
    for key, title in STS_COLUMNS.items():
        if isinstance(results.get(key), (int, float)):
            entries.append(EvalResult(
                task_type="sentence-similarity", task_name="Semantic Textual Similarity",
                dataset_type=f"senteval/{key.lower()}", dataset_name=f"{title} (SentEval)",
                dataset_split="all" if key.startswith("STS1") else "test",
                metric_type="spearman_cosine", metric_name="Spearman (cosine) x 100",
                metric_value=round(float(results[key]), 2), **source))
    averaged = sts_average_tasks(results)
    if isinstance(results.get("avg"), (int, float)) and len(averaged) >= 2:
        titles = ", ".join(STS_COLUMNS[key] for key in averaged)
        if len(averaged) == len(STS_COLUMNS):  # the papers' average: its own name
            kind = {"dataset_type": "senteval/sts-avg", "dataset_name": f"SentEval STS average ({titles})"}
        else:  # a subset's mean: another dataset, named by its count, its tasks in the config
            kind = {"dataset_type": f"senteval/sts-avg-{len(averaged)}", "dataset_config": ",".join(averaged),
                    "dataset_name": f"SentEval STS average of {len(averaged)} of the {len(STS_COLUMNS)} tasks "
                                    f"({titles})"}
        entries.append(EvalResult(
            task_type="sentence-similarity", task_name="Semantic Textual Similarity", dataset_split="test",
            metric_type="spearman_cosine", metric_name=f"Spearman (cosine) x 100, mean of {titles}",
            metric_value=round(float(results["avg"]), 2), **kind, **source))
    transfer = results.get("transfer") if isinstance(results.get("transfer"), Mapping) else {}
    for key, title in TRANSFER_COLUMNS.items():
        if isinstance(transfer.get(key), (int, float)):
            entries.append(EvalResult(
                task_type="text-classification", task_name="Text Classification (SentEval transfer)",
                dataset_type=f"senteval/{key.lower()}", dataset_name=f"{title} (SentEval)", dataset_split="test",
                metric_type="accuracy", metric_name="Accuracy (%)", metric_value=round(float(transfer[key]), 2),
                **source))
    return eval_results_to_model_index(model_name, entries) if entries else []


@dataclass
class MultiCSRModelCardData(SentenceTransformerModelCardData):
    """sentence-transformers' card data with our template and the MultiCSR facts (``multicsr``).

    ``local_files_only`` defaults to True: the card never asks the Hub (offline machines; the
    base model's hub id is known from the config). ``model_ref`` is what the usage snippet loads.
    """

    local_files_only: bool = True
    multicsr: dict = field(default_factory=dict)
    model_ref: str | None = None
    results: dict | None = None
    template_path: Path = field(default=TEMPLATES / "model_card.md", init=False, repr=False)

    @property
    def _snippet_default_model_id(self) -> str:  # read by sentence-transformers' usage snippet
        return self.model_ref or "sentence_transformers_model_id"

    def generate_usage_snippet(self) -> str:
        snippet = super().generate_usage_snippet()
        if not self.model_id:  # a local folder: not downloaded from the Hub
            snippet = snippet.replace("# Download from the 🤗 Hub", "# Load the trained folder")
        return snippet

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["m"] = data.pop("multicsr")
        index = _eval_results(self.model_name, self.results)
        if index:
            data["model-index"] = index
            data["metrics"] = sorted({m["type"] for r in index for res in r["results"] for m in res["metrics"]})
        return data


def _sts_tables(results: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None, name: str,
                base_name: str) -> tuple[str | None, str | None]:
    from multicsr_core.evaluation.report import markdown_comparison, markdown_transfer_table

    if not results:
        return None, None
    rows = ({f"{base_name} (before)": baseline} if baseline else {}) | {name: results}
    sts = markdown_comparison(rows, include_reference=False) if any(
        isinstance(results.get(k), (int, float)) for k in ("STS12", "STSBenchmark", "SICKRelatedness", "avg")) else None
    transfer = None
    if isinstance(results.get("transfer"), Mapping):
        transfer = markdown_transfer_table({k: v for k, v in rows.items() if v and isinstance(v.get("transfer"), Mapping)})
    return sts, transfer


def _model_license(given: str | None, base_ref: str | None) -> tuple[str, str]:
    """(the card's license id, the sentence saying where it comes from). A fine-tuned model carries
    its base model's license; where that is not determined the card says ``other`` and why, rather
    than naming a license nobody checked."""
    if given:
        return given, f"`{given}` (set by the publisher)"
    found = model_license(base_ref)
    if found:
        return found, f"`{found}`: {license_name(found)}, the license of the base model `{base_ref}`"
    return UNKNOWN_LICENSE, (f"`{UNKNOWN_LICENSE}`: the license of the base model `{base_ref}` was not determined "
                             "(no model card with a license on this machine, and not a model multicsr knows); a "
                             "fine-tuned model carries its base model's license: check it and set it with "
                             "`multicsr export --license ID`")


@dataclass(frozen=True)
class CardTarget:
    """Where a card's model or corpus is published: ``repo_id`` (its Hub repo), ``model_ref`` (the
    path or id the model card's snippet loads; default the repo id, else the folder) and
    ``license`` (the publisher's choice; default the base model's, or the corpus source's)."""

    model_ref: str | None = None
    repo_id: str | None = None
    license: str | None = None


def trained_record(model_dir: str | os.PathLike) -> tuple[dict, PipelineConfig]:
    """A multicsr-trained folder's training record (``multicsr_training.json``) and its config, validated."""
    path = Path(model_dir) / TRAINING_FILE
    training = _read_json(path)
    if not training:
        raise FileNotFoundError(f"{path}: not a folder trained by multicsr (no training record)")
    return training, resolve_config(dict(training.get("config") or {}), source=str(path))


def _training_corpus(training: Mapping[str, Any], corpus) -> tuple[Any, str | None]:
    """The curated corpus the model trained on, as a table where it is a readable Parquet (else
    None), and its path (``corpus``, default the one the training record names)."""
    from multicsr_core.io.corpus import read_corpus

    corpus_path = str(corpus) if corpus is not None else training.get("corpus")
    if corpus_path and Path(corpus_path).suffix.lower() in (".parquet", ".pq") and Path(corpus_path).is_file():
        try:
            return read_corpus(corpus_path), corpus_path
        except (ValueError, OSError):
            pass
    return None, corpus_path


def _hyperparameters(cfg: PipelineConfig, training: Mapping[str, Any], loss: str) -> dict:
    t = cfg.training
    hyper = {k: getattr(t, k) for k in ("loss", "sigma", "phi", "tau", "batch_size", "learning_rate", "epochs",
                                        "max_steps", "eval_steps", "pooling", "mlp_only_train", "mask", "precision",
                                        "seed", "supervised_nli")}
    hyper["loss"] = loss
    hyper.update({k: training[k] for k in ("steps", "best_step", "best_score", "masked_fraction", "train_rows")
                  if training.get(k) is not None})
    if isinstance(hyper.get("best_score"), float):
        hyper["best_score"] = round(hyper["best_score"], 2)
    if isinstance(hyper.get("masked_fraction"), float):
        hyper["masked_fraction"] = round(hyper["masked_fraction"], 4)
    return hyper


def _training_facts(cfg: PipelineConfig, training: Mapping[str, Any], model) -> dict:
    """What the model card says of the training: the loss (from :data:`multicsr_core.losses.LOSSES`),
    the lengths, the hyperparameters, the dev history and the config."""
    t = cfg.training
    loss = training.get("loss") or t.loss
    entry = LOSSES.get(loss, LOSSES["paper"])
    return {
        "base_model_ref": t.base_model,
        "guide_model": t.guide_model if entry.guided else None,
        "pooling": t.pooling,
        "train_rows": training.get("train_rows"),
        "train_length": training.get("max_seq_length_train") or t.max_seq_length,
        "inference_length": training.get("max_seq_length_saved") or model.max_seq_length,
        "eval_length": training.get("max_seq_length_eval"),
        "config_hash": training.get("config_hash"),
        "config_yaml": _config_yaml(training.get("config") or {}),  # the record's config as it was written
        "loss_name": loss, "loss_class": entry.qualified_name, "loss_summary": entry.summary,
        "loss_formula": entry.formula, "loss_where": entry.where, "citations": entry.citations,
        "hyperparameters": _hyperparameters(cfg, training, loss),
        "history": training.get("history") or [],
        "best_step": training.get("best_step"),
    }


def _evaluation_facts(results: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None, name: str,
                      base_ref: str) -> dict:
    from multicsr_core.evaluation.report import STS_COLUMNS

    sts_table, transfer_table = _sts_tables(results, baseline, name, base_ref or "base model")
    averaged = sts_average_tasks(results)
    return {"sts_average_of": (None if len(averaged) in (0, len(STS_COLUMNS)) else
                               ", ".join(STS_COLUMNS[key] for key in averaged)),
            "sts_rows": bool(sts_table), "sts_table": sts_table, "transfer_table": transfer_table}


def model_card_text(model_dir: str | os.PathLike, results: Mapping[str, Any] | None = None,
                    baseline: Mapping[str, Any] | None = None, target: CardTarget = CardTarget(), model=None,
                    corpus: str | os.PathLike | None = None, prompts_for: PromptsFor | None = None) -> str:
    """The model card of a folder trained by multicsr (it needs ``multicsr_training.json``).

    ``results`` / ``baseline``: the final SentEval results of this model and of its base model (the
    ``multicsr evaluate`` JSON shape); when omitted, the folder's ``multicsr_evaluation.json``.
    ``target``: where it is published (:class:`CardTarget`). ``model``: the loaded
    SentenceTransformer, if the caller has it (else it is loaded from the folder). ``corpus``: the
    curated corpus Parquet it was trained on (default: the path in ``multicsr_training.json``).
    ``prompts_for``: the stage-1 prompt set a config chose (see :func:`run_facts`).
    """
    from huggingface_hub import ModelCard
    from sentence_transformers import SentenceTransformer

    model_dir = Path(model_dir)
    training, cfg = trained_record(model_dir)
    stored = _read_json(model_dir / EVALUATION_FILE)
    results = results if results is not None else stored.get("results")
    baseline = baseline if baseline is not None else stored.get("baseline")
    table, corpus_path = _training_corpus(training, corpus)
    samples = _kept_samples(table) if table is not None else []
    if model is None:
        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    name, base_ref = cfg.name or "multicsr", cfg.training.base_model
    license, license_text = _model_license(target.license, base_ref)
    source = source_data(cfg)
    facts = run_facts(cfg, prompts_for)
    facts.update(license_text=license_text, corpus_license=corpus_license_text(facts, source),
                 trained_on_output_note=_TRAINED_ON_OUTPUT_NOTES.get(facts["generator_license_id"]),
                 funnel=_funnel(table, corpus_path) if table is not None else training.get("funnel") or {},
                 samples=samples, model_ref=target.model_ref or target.repo_id or str(model_dir),
                 multicsr_version=_version())
    facts.update(_training_facts(cfg, training, model))
    facts.update(_evaluation_facts(results, baseline, name, base_ref))
    card_data = MultiCSRModelCardData(
        model_name=f"{name}: MultiCSR sentence encoder from {_hub_id(base_ref) or base_ref}", model_id=target.repo_id,
        license=license, language="en", train_datasets=[], multicsr=facts, model_ref=facts["model_ref"],
        results=dict(results) if results else None,
    )
    card_data.add_tags(["multicsr", "contrastive-learning", "sentence-embeddings"])
    if base_hub := _hub_id(base_ref):
        card_data.base_model = base_hub
    if source["hub_id"]:
        card_data.datasets = [source["hub_id"]]
    if samples:  # the snippet encodes a real training triplet: x, x+, x-
        card_data.usage_examples = samples[0]["raw"]
    card_data.register_model(model)
    return ModelCard.from_template(card_data, template_path=str(card_data.template_path)).content


def model_card_files(model_dir: str | os.PathLike, results: Mapping[str, Any] | None = None,
                     baseline: Mapping[str, Any] | None = None, target: CardTarget = CardTarget(), model=None,
                     corpus: str | os.PathLike | None = None, prompts_for: PromptsFor | None = None) -> dict[str, str]:
    """What :func:`write_model_card` writes into ``model_dir``, computed and not written:
    ``{file name: text}``. The pipeline writes these when it publishes (a run that fails before
    that leaves the trained folder's card as it was)."""
    model_dir = Path(model_dir)
    files = {}
    if results is not None:
        stored = _read_json(model_dir / EVALUATION_FILE)
        payload = {"results": {k: v for k, v in results.items() if not str(k).startswith("_")},
                   "baseline": ({k: v for k, v in baseline.items() if not str(k).startswith("_")} if baseline
                                else stored.get("baseline"))}
        files[EVALUATION_FILE] = json.dumps(payload, indent=2) + "\n"
    files["README.md"] = model_card_text(model_dir, results=results, baseline=baseline, target=target, model=model,
                                         corpus=corpus, prompts_for=prompts_for)
    return files


def write_model_card(model_dir: str | os.PathLike, results: Mapping[str, Any] | None = None,
                     baseline: Mapping[str, Any] | None = None, target: CardTarget = CardTarget(), model=None,
                     corpus: str | os.PathLike | None = None, prompts_for: PromptsFor | None = None) -> Path:
    """Write ``README.md`` into a multicsr-trained folder (see :func:`model_card_text`) and give its
    files ordinary modes (:func:`fix_file_modes`). Given ``results``, they are also kept in the
    folder's ``multicsr_evaluation.json``, so a later rewrite (e.g. for a hub push) keeps them."""
    model_dir = Path(model_dir)
    files = model_card_files(model_dir, results=results, baseline=baseline, target=target, model=model,
                             corpus=corpus, prompts_for=prompts_for)
    for name, text in files.items():
        _write_text(model_dir / name, text)
    fix_file_modes(model_dir)
    return model_dir / "README.md"


# ----------------------------------------------------------------------------- the dataset card


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if n < limit:
            return name
    return "n>1T" if n > 10**12 else "100M<n<1B"


def _features_yaml(schema) -> list[dict]:
    from datasets import Features

    return Features.from_arrow_schema(schema)._to_yaml_list()


@dataclass(frozen=True)
class ExportedFile:
    """One exported corpus file, as its dataset card describes it: ``schema`` (its Arrow schema: the
    features of ``dataset_info``), ``rows``, ``data_file`` (its path inside the folder), ``fmt``
    (``hf`` = Parquet, ``simcse-csv`` or ``jsonl``), ``selection`` (which rows, in words) and,
    where known, its in-memory and on-disk sizes."""

    schema: Any
    rows: int
    data_file: str
    fmt: str
    selection: str
    num_bytes: int | None = None
    download_size: int | None = None


_BUILDERS = {"hf": "parquet", "simcse-csv": "csv", "jsonl": "json"}
_FORMAT_DESCRIPTIONS = {"hf": "Parquet, the Hub's dataset layout",
                        "simcse-csv": "SimCSE's training CSV: sent0, sent1, hard_neg",
                        "jsonl": "JSON Lines, one row per line"}


def _load_snippet(exported: ExportedFile, repo_id: str | None) -> str:
    where = repr(repo_id) if repo_id else "'DIR'"
    data_file = exported.data_file
    return "\n".join([
        "from datasets import load_dataset",
        "",
        f"corpus = load_dataset({where}, split='train')  # DIR: this folder",
        "# or any tool reading the file itself, e.g. pandas:",
        "import pandas as pd",
        {"parquet": f"frame = pd.read_parquet('DIR/{data_file}')", "csv": f"frame = pd.read_csv('DIR/{data_file}')",
         "json": f"frame = pd.read_json('DIR/{data_file}', lines=True)"}[_BUILDERS[exported.fmt]],
    ])


def _dataset_card_data(exported: ExportedFile, features: list[dict], pretty: str, license: str, facts: Mapping,
                       source: Mapping):
    from huggingface_hub import DatasetCardData

    split = {"name": "train", "num_examples": exported.rows}
    if exported.num_bytes is not None:
        split["num_bytes"] = exported.num_bytes
    info = {"features": features, "splits": [split]}
    if exported.download_size is not None:
        info.update(download_size=exported.download_size, dataset_size=exported.num_bytes)
    return DatasetCardData(
        language="en", license=license, pretty_name=pretty,
        task_categories=["sentence-similarity"], task_ids=["semantic-similarity-scoring"],
        size_categories=[_size_category(exported.rows)],
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated" if facts["generator"] else "crowdsourced"],
        multilinguality=["monolingual"],
        source_datasets=[source["hub_id"]] if source["hub_id"] else ["original"],
        tags=["multicsr", "contrastive-learning", "sentence-embeddings", "synthetic" if facts["generator"] else "nli"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": exported.data_file}]}],
        dataset_info=info,
    )


def dataset_card_text(exported: ExportedFile, provenance: Mapping[str, Any], funnel: Mapping[str, int],
                      target: CardTarget = CardTarget(), prompts_for: PromptsFor | None = None) -> str:
    """The dataset card of one exported corpus file (:class:`ExportedFile`).

    ``provenance``: the corpus Parquet's provenance (config, hash); ``funnel``: its curation funnel;
    ``target``: its Hub repo and license (default the source's); ``prompts_for``: see :func:`run_facts`.
    """
    from huggingface_hub import DatasetCard

    cfg = resolve_config(dict(provenance.get("config") or {}), source="the corpus's provenance")
    facts = run_facts(cfg, prompts_for)
    source = source_data(cfg)
    license = target.license or source["license"] or UNKNOWN_LICENSE
    features = _features_yaml(exported.schema)
    columns = [{"name": f["name"], "type": f.get("dtype", "?"), "meaning": _COLUMN_MEANINGS.get(f["name"], "")}
               for f in features]
    pretty = f"{cfg.name or 'multicsr'} MultiCSR triplet corpus"
    card = DatasetCard.from_template(
        _dataset_card_data(exported, features, pretty, license, facts, source),
        template_path=str(TEMPLATES / "dataset_card.md"), pretty_name=pretty,
        d={**facts, "rows": exported.rows, "selection": exported.selection, "data_file": exported.data_file,
           "format_description": _FORMAT_DESCRIPTIONS[exported.fmt],
           "load_snippet": _load_snippet(exported, target.repo_id), "funnel": dict(funnel), "columns": columns,
           "source_description": corpus_license_text(facts, source, license),
           "config_hash": provenance.get("config_hash"), "config_yaml": _config_yaml(provenance.get("config") or {}),
           "citation": citations.MULTICSR},
    )
    return card.content


def write_dataset_card(out_dir: str | os.PathLike, **kwargs) -> Path:
    """Write ``README.md`` (see :func:`dataset_card_text`) into ``out_dir``."""
    return _write_text(Path(out_dir) / "README.md", dataset_card_text(**kwargs))
