"""``multicsr export``: a curated corpus in the formats other tools read, a model folder ready for
the Hub, and the upload itself (through ``huggingface_hub``).

Corpus formats (each folder gets a dataset card, :func:`multicsr_core.cards.dataset_card_text`):

- ``hf`` (default): the layout ``Dataset.push_to_hub`` writes and the Hub's viewer reads:
  ``data/train-00000-of-00001.parquet`` plus ``README.md`` whose YAML ``configs`` names it. We
  choose Parquet over ``Dataset.save_to_disk``'s Arrow folder because the same folder is then
  what is uploaded: ``load_dataset(DIR)``, ``load_dataset("parquet", data_files=...)``, pandas,
  DuckDB and the Hub all read it, while a ``save_to_disk`` folder is read only by
  ``load_from_disk`` and is not the Hub's dataset layout.
- ``simcse-csv``: ``train.csv`` with SimCSE's header ``sent0,sent1,hard_neg`` (what SimCSE's
  ``train.py`` and our own ``multicsr train`` read).
- ``jsonl``: ``train.jsonl``, one row per line, every column.

Rows: those curation kept (default), or every row with ``all_rows=True``.

Reruns: ``--to`` must be a new or empty folder, or one that the same export wrote before: each
export leaves a marker (``.multicsr-export.json``: what was exported, in which format, and the
entries it writes), so running the same command again after a failed upload (the Hub unreachable)
rewrites those entries and uploads again instead of refusing the folder. The marker is not uploaded.

Uploads: :func:`push_folder` creates the repo (``exist_ok``) and uploads the folder with
``HfApi.upload_folder``. The token comes from ``HF_TOKEN`` only; it is handed to ``huggingface_hub``
and written nowhere, and any error text is scrubbed of it before it is raised. ``HF_ENDPOINT``
(read at call time) points the client at another Hub.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from multicsr_core.errors import RetryableError, UserError, machine_error_of
from multicsr_core.io.corpus import read_corpus, read_provenance
from multicsr_core.redaction import redact_text

__all__ = ["FORMATS", "MARKER", "ExportError", "export_corpus", "export_model", "push_folder"]

FORMATS = ("hf", "simcse-csv", "jsonl")
DATA_FILES = {"hf": "data/train-00000-of-00001.parquet", "simcse-csv": "train.csv", "jsonl": "train.jsonl"}
# what a model folder carries to the Hub: not the trainer's checkpoints, not hidden temporaries
_MODEL_SKIP = ("checkpoints",)
MARKER = ".multicsr-export.json"  # what wrote this folder: a rerun of the same export may write it again


class ExportError(UserError):
    """A user error of ``multicsr export`` (the CLI prints it as one line and exits 2)."""


@dataclass
class Exported:
    folder: Path
    data_file: Path | None
    rows: int
    card: Path

    def as_dict(self) -> dict:
        return {"folder": str(self.folder), "data_file": str(self.data_file) if self.data_file else None,
                "rows": self.rows, "card": str(self.card)}


def _selected(table: pa.Table, all_rows: bool) -> pa.Table:
    if all_rows:
        return table
    return table.filter(pc.fill_null(table["kept"], False))


def _read_marker(out_dir: Path) -> dict | None:
    try:
        marker = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("entries"), list) else None


def _ready_folder(out_dir: Path, identity: dict, entries: list[str]) -> None:
    """Make ``out_dir`` ready for an export that writes the top-level ``entries``: a new or empty
    folder, or one this same export (``identity``: kind, source, format) wrote before, whose
    entries are removed to be written again. Anything else is refused (nothing is touched)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: is a file; give --to a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        marker = _read_marker(out_dir)
        if marker is None:
            raise ExportError(f"{out_dir}: folder exists and is not empty (and no multicsr export wrote it); "
                              "choose a new --to folder or empty it")
        if {k: marker.get(k) for k in identity} != identity:
            raise ExportError(f"{out_dir}: holds another export ({marker.get('kind')} {marker.get('source')}, "
                              f"format {marker.get('format')}); choose a new --to folder, or remove this one")
        ours = set(marker["entries"]) | set(entries) | {MARKER}
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in ours)
        if foreign:
            raise ExportError(f"{out_dir}: holds files the export did not write ({', '.join(foreign[:5])}); "
                              "move them out, or choose a new --to folder")
        for name in ours - {MARKER}:  # the earlier (maybe unfinished) export of the same source: write it again
            path = out_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text(json.dumps({**identity, "entries": sorted(set(entries))}, indent=2) + "\n",
                                  encoding="utf-8")


def export_corpus(corpus: str | os.PathLike, out_dir: str | os.PathLike, fmt: str = "hf", all_rows: bool = False,
                  repo_id: str | None = None, license: str | None = None) -> Exported:
    """Write ``corpus`` (a multicsr corpus Parquet) to ``out_dir`` in ``fmt`` with its dataset card."""
    # the cards load sentence-transformers (seconds): only once the export is under way, so a wrong
    # argument is refused at once
    from multicsr_core.cards import CardTarget, ExportedFile, _funnel, fix_file_modes, write_dataset_card
    from multicsr_core.pipeline.generate import generation_prompt_set

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    corpus = Path(corpus)
    if corpus.suffix.lower() not in (".parquet", ".pq"):
        raise ExportError(f"{corpus}: export reads a multicsr corpus Parquet (from `multicsr curate` or `run`)")
    try:
        table = read_corpus(corpus)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    provenance = read_provenance(corpus)
    out_dir = Path(out_dir)
    _ready_folder(out_dir, {"kind": "corpus", "source": str(corpus.resolve()), "format": fmt, "all_rows": all_rows},
                  [DATA_FILES[fmt].split("/")[0], "README.md"])
    rows = _selected(table, all_rows)
    selection = "every row, with its scores, `kept` and `reject_reason`" if all_rows else "the rows curation kept"
    data_path = out_dir / DATA_FILES[fmt]
    data_path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "simcse-csv":
        rows = pa.table({"sent0": rows["premise"], "sent1": rows["entailment"], "hard_neg": rows["contradiction"]})
        pacsv.write_csv(rows, data_path, pacsv.WriteOptions(quoting_style="needed"))
    elif fmt == "jsonl":
        with open(data_path, "w", encoding="utf-8") as handle:
            for row in rows.to_pylist():
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        rows = rows.replace_schema_metadata(None)  # the card carries the provenance; datasets reads its own key
        pq.write_table(rows, data_path, compression="zstd")
    exported = ExportedFile(rows.schema, rows.num_rows, DATA_FILES[fmt], fmt, selection, num_bytes=rows.nbytes,
                            download_size=data_path.stat().st_size)
    card = write_dataset_card(out_dir, exported=exported, provenance=provenance, funnel=_funnel(table, corpus),
                              target=CardTarget(repo_id=repo_id, license=license), prompts_for=generation_prompt_set)
    fix_file_modes(out_dir)
    return Exported(out_dir, data_path, rows.num_rows, card)


def export_model(model_dir: str | os.PathLike, out_dir: str | os.PathLike, repo_id: str | None = None,
                 license: str | None = None) -> Exported:
    """Copy a multicsr-trained model folder to ``out_dir`` (without trainer checkpoints) and rewrite
    its card for where it will be loaded from: ``repo_id`` (the Hub) or ``out_dir``."""
    from multicsr_core.cards import TRAINING_FILE, CardTarget, write_model_card  # see export_corpus
    from multicsr_core.pipeline.generate import generation_prompt_set

    model_dir = Path(model_dir).resolve()
    if not (model_dir / "modules.json").is_file():
        raise ExportError(f"{model_dir}: not a SentenceTransformer folder (no modules.json)")
    if not (model_dir / TRAINING_FILE).is_file():
        raise ExportError(f"{model_dir}: not trained by multicsr (no {TRAINING_FILE}); its card cannot be written")
    out_dir = Path(out_dir)
    copied = [p.name for p in model_dir.iterdir() if p.name not in _MODEL_SKIP and not p.name.startswith(".")]
    _ready_folder(out_dir, {"kind": "model", "source": str(model_dir), "format": None}, [*copied, "README.md"])
    shutil.copytree(model_dir, out_dir, dirs_exist_ok=True,
                    ignore=lambda folder, names: [n for n in names if n in _MODEL_SKIP or n.startswith(".")])
    card = write_model_card(out_dir, target=CardTarget(model_ref=repo_id or str(out_dir.resolve()), repo_id=repo_id,
                                                   license=license), prompts_for=generation_prompt_set)
    return Exported(out_dir, None, 0, card)


def _scrub(text: str, token: str) -> str:
    return redact_text(text.replace(token, "<redacted>")) if token else redact_text(text)


def push_folder(folder: str | os.PathLike, repo_id: str, repo_type: str = "dataset", private: bool = False,
                commit_message: str | None = None) -> str:
    """Create ``repo_id`` on the Hub if needed and upload ``folder`` to it; returns the commit URL.

    The token is ``$HF_TOKEN`` (required); ``$HF_ENDPOINT`` selects the Hub (default huggingface.co).
    """
    # only an upload needs the Hub client (a second to import); which httpx it uses depends on its version
    try:  # huggingface_hub's HTTP client (httpx2 in huggingface_hub 2.x): its transport errors are not OSErrors
        from httpx2 import TransportError
    except ImportError:
        from httpx import TransportError
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if repo_type not in ("dataset", "model"):
        raise ExportError(f"repo type {repo_type!r}: dataset or model")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ExportError(f"--push-to-hub {repo_id!r}: give the repo as OWNER/NAME")
    token = os.environ.get("HF_TOKEN", "")
    if not token:
        raise ExportError("HF_TOKEN is not set: export a Hugging Face token with write access "
                          "(https://huggingface.co/settings/tokens) and run again")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # huggingface_hub honours both
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            raise ExportError(f"{name} is set: unset it to upload (the export folder itself is complete)")
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                 commit_message=commit_message or f"multicsr export ({repo_type})",
                                 ignore_patterns=[MARKER])
    except HfHubHTTPError as exc:  # the Hub answered: bad token, no write access, bad name...
        raise ExportError(f"upload to {repo_id} failed: {_scrub(str(exc), token)}") from None
    except (OSError, TransportError) as exc:  # no answer (offline, DNS, refused, timeout): retry later
        machine = machine_error_of(exc, folder, "--to")  # a full disk (the client's own cache), not the network
        if machine is not None:
            raise machine from None
        raise RetryableError(f"upload to {repo_id} failed: {_scrub(str(exc), token)}; "
                             "run the same command again") from None
    return str(getattr(info, "commit_url", info))
