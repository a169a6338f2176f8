"""``multicsr data download``: fetch the public data into a data root, atomically.

Sources are the ones SimCSE's scripts use (``SentEval/data/downstream/download_dataset.sh``,
``data/download_nli.sh``, ``data/download_wiki.sh``): the prepared SentEval tarball and the
SimCSE premise files on the Hugging Face hub. Each item is downloaded to a temporary file and
extracted into a temporary folder beside its destination, then renamed into place, so an
interrupted download never leaves a half-written dataset behind.

Layout produced (the same as ``../shared/data``)::

    <root>/senteval/{STS,SICK,MR,...}
    <root>/nli/nli_for_simcse.csv
    <root>/wiki1m/wiki1m_for_simcse.txt

This needs internet; it cannot run in the offline build box (there the data is in ../shared/data).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

def data_root_hint(flag: str = "--data-dir") -> str:
    """What a data root must hold and how to get one: the hint of every error that finds data missing."""
    return ("a data root holds senteval/ (SentEval's downstream folder: STS/STS12-en-test .. STS/STS16-en-test, "
            "STS/STSBenchmark/sts-{dev,test}.csv, SICK/SICK_test_annotated.txt; MR CR SUBJ MPQA SST TREC MRPC for "
            "transfer) and nli/ (the NLI triplet csv and premise file a preset names); fetch one with `multicsr data "
            f"download` and point {flag} (or MULTICSR_DATA_ROOT) at it")


HF = "https://huggingface.co/datasets/princeton-nlp/datasets-for-simcse/resolve/main"
SOURCES = {
    "senteval": (f"{HF}/senteval.tar", "senteval"),
    "nli": (f"{HF}/nli_for_simcse.csv", "nli/nli_for_simcse.csv"),
    "wiki1m": (f"{HF}/wiki1m_for_simcse.txt", "wiki1m/wiki1m_for_simcse.txt"),
}


def _fetch(url: str, dest: Path, log: Callable[[str], None], timeout: float = 60.0) -> None:
    log(f"downloading {url}")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as fh:  # noqa: S310 (https only)
        shutil.copyfileobj(response, fh, length=1 << 20)


def _find_senteval_root(folder: Path) -> Path:
    for candidate in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        if (candidate / "STS").is_dir():
            return candidate
    raise OSError(f"the SentEval archive has no STS/ folder (extracted to {folder})")


def download_data(root: str | Path, what: list[str], log: Callable[[str], None] = print) -> dict[str, str]:
    unknown = [w for w in what if w not in SOURCES]
    if unknown:
        raise ValueError(f"unknown data item(s) {unknown}; choose from {', '.join(SOURCES)}")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    done = {}
    for item in what:
        url, rel = SOURCES[item]
        dest = root / rel
        if dest.exists():
            log(f"{item}: already at {dest}")
            done[item] = str(dest)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
            tmp = Path(tmp)
            archive = tmp / Path(url).name
            _fetch(url, archive, log)
            if archive.suffix == ".tar":
                extracted = tmp / "extracted"
                with tarfile.open(archive) as tar:
                    tar.extractall(extracted, filter="data")
                _find_senteval_root(extracted).rename(dest)
            else:
                archive.rename(dest)
        log(f"{item}: {dest}")
        done[item] = str(dest)
    return done
