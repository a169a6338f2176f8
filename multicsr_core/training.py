"""Stage 3: build the sentence encoder and train it with sentence-transformers' trainer.

``build_model`` makes SimCSE's encoder (CLS pooling with an MLP used only in training, or mean
pooling); ``train`` turns triplets into a ``datasets.Dataset``, builds the loss that its
:class:`TrainingSettings` name from :data:`multicsr_core.losses.LOSSES`, evaluates STS-B dev every
``eval_steps`` and reloads the best checkpoint, then saves a folder that ``SentenceTransformer(path)`` loads on its own.

Sequence lengths: ``max_seq_length`` (SimCSE: 32) is a training setting only. The STS-B dev
evaluation between steps reads every sentence in full up to the backbone's limit, as SentEval
does (:mod:`multicsr_core.evaluation.dev`), and the saved folder keeps the backbone's own
maximum length (or ``save_max_seq_length``), so neither ``multicsr evaluate`` nor a user's
``SentenceTransformer(path).encode`` silently truncates at 32. ``TrainResult`` (and so
``multicsr_training.json``) records the three lengths.

How the guide similarities reach the masked losses: every unique sentence of the training data
is embedded once by the frozen guide (:class:`multicsr_core.guide.GuideEmbeddings`, cached on
disk); the loss holds that matrix, and the dataset's ``label`` column carries each row's
sentence ids (one per text column). The trainer passes the label column to the loss untouched,
so the mask is a lookup and a matmul. (Re-deriving texts from ``input_ids`` would need a
detokenise-and-hash per step and breaks when truncation makes two sentences identical.)

Batches are plain random batches (the trainer's default sampler), as in the paper and SimCSE.
``BatchSamplers.NO_DUPLICATES`` is available (``no_duplicate_batches=True``) but off: it would
hide exactly the duplicated-premise false negatives that the paper's mask exists for (and the
Fig. 4 experiment measures), and it changes the unmasked baseline.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from sentence_transformers.sentence_transformer.modules import Dense

from multicsr_core.losses import LOSSES, LossSettings
from multicsr_core.losses.registry import unknown_loss

__all__ = [
    "TrainingOnlyMLP",
    "TrainingSettings",
    "TrainResult",
    "build_model",
    "training_columns",
    "index_sentences",
    "supervised_corpus",
    "train",
]

DEV_EVALUATOR_NAME = "stsb-dev"
_METRIC = f"eval_{DEV_EVALUATOR_NAME}_spearman_cosine"


# ----------------------------------------------------------------------------- the model


class TrainingOnlyMLP(Dense):
    """SimCSE's MLP head (Linear + Tanh) applied only in train mode (``mlp_only_train``).

    In eval mode (``encode``, the STS-B dev evaluator) it passes the CLS vector through unchanged,
    which is how SimCSE evaluates such models (``cls_before_pooler``). ``train`` drops this module
    before saving the final folder, so that folder loads without multicsr installed; trainer
    checkpoints keep it (the trainer reloads them with this class).
    """

    def forward(self, features):
        return super().forward(features) if self.training else features


def _is_sentence_transformer(base: str) -> bool:
    if (Path(base) / "modules.json").is_file():
        return True
    if Path(base).exists():
        return False
    try:  # a hub id: does it ship sentence-transformers modules? (cached or reachable)
        from huggingface_hub import hf_hub_download

        hf_hub_download(base, "modules.json")
        return True
    except Exception:
        return False


def build_model(
    base: str | os.PathLike,
    pooling: str = "cls",
    mlp_only_train: bool = True,
    max_seq_length: int = 32,
    device: str | None = None,
    seed: int = 42,
):
    """The encoder to train, as a ``SentenceTransformer``.

    - ``pooling="cls"``: Transformer -> CLS token -> SimCSE MLP (Linear(d, d) + Tanh, BERT-style
      init N(0, 0.02), bias 0, seeded by ``seed``). With ``mlp_only_train=True`` (SimCSE's
      supervised/MultiCSR setting) the MLP runs only in training and the model encodes with the
      CLS vector before it; with ``False`` the MLP is part of the model (SimCSE's "cls" pooler).
    - ``pooling="mean"``: a sentence-transformers model (all-MiniLM-L6-v2 and the like) keeps its
      own modules (mean pooling + Normalize); a plain checkpoint gets Transformer -> mean pooling.
    ``max_seq_length`` truncates the inputs while training (paper: 32); the backbone's own
    maximum length is kept in ``model.multicsr_backbone_max_seq_length`` so that :func:`train`
    saves the model with it.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    base = str(base)
    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
    if pooling == "mean" and _is_sentence_transformer(base):
        model = SentenceTransformer(base, device=device)
    else:
        transformer = Transformer(base)
        dim = transformer.get_embedding_dimension()
        modules = [transformer, Pooling(dim, pooling_mode=pooling)]
        if pooling == "cls":
            std = float(getattr(transformer.auto_model.config, "initializer_range", 0.02))
            generator = torch.Generator().manual_seed(seed)
            weight = torch.randn(dim, dim, generator=generator) * std
            mlp_class = TrainingOnlyMLP if mlp_only_train else Dense
            modules.append(
                mlp_class(dim, dim, activation_function=torch.nn.Tanh(), init_weight=weight, init_bias=torch.zeros(dim))
            )
        model = SentenceTransformer(modules=modules, device=device)
    model.multicsr_backbone_max_seq_length = model.max_seq_length  # before the training length replaces it
    model.max_seq_length = max_seq_length
    return model


def saved_max_seq_length(model, save_max_seq_length: int | None = None) -> int | None:
    """The length the trained folder is saved with: ``save_max_seq_length`` if given, else the
    backbone's own (recorded by :func:`build_model`), else the backbone's position limit, else
    the model's current length (a model with neither)."""
    from multicsr_core.evaluation.lengths import model_length_limit

    if save_max_seq_length is not None:
        return int(save_max_seq_length)
    backbone = getattr(model, "multicsr_backbone_max_seq_length", None)
    if backbone is not None:
        return int(backbone)
    limit = model_length_limit(model)
    return limit if limit is not None else model.max_seq_length


def _inference_model(model):
    """The model without its training-only MLP: what gets saved and evaluated."""
    from sentence_transformers import SentenceTransformer

    kept = [module for module in model if not isinstance(module, TrainingOnlyMLP)]
    if len(kept) == len(model):
        return model
    return SentenceTransformer(modules=kept, device=str(model.device))


# ----------------------------------------------------------------------------- the data

_COLUMN_ALIASES = {
    "anchor": ("anchor", "sent0", "premise", "sentence1", "sentence", "text"),
    "positive": ("positive", "sent1", "entailment", "sentence2"),
    "negative": ("negative", "hard_neg", "contradiction"),
    "score": ("score", "label", "entailment_score"),
}


def _as_columns(data) -> dict[str, list]:
    """Plain ``{name: list}`` from a pyarrow Table, a pandas DataFrame, a mapping, or a tuple of lists."""
    if hasattr(data, "to_pydict"):  # pyarrow.Table
        return data.to_pydict()
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas.DataFrame
        return {str(c): data[c].tolist() for c in data.columns}
    if isinstance(data, Mapping):
        return {str(k): list(v) for k, v in data.items()}
    if isinstance(data, (tuple, list)) and data and not isinstance(data[0], str):
        names = ("anchor", "positive", "negative")
        if not 1 <= len(data) <= 3:
            raise ValueError(f"expected 1 to 3 text lists (anchor, positive, negative), got {len(data)}")
        return {names[i]: list(column) for i, column in enumerate(data)}
    if isinstance(data, (tuple, list)):  # one list of sentences (unsupervised SimCSE)
        return {"anchor": list(data)}
    raise TypeError(f"cannot read training data of type {type(data).__name__}")


def training_columns(data, loss: str = "paper") -> dict[str, list]:
    """The columns ``loss`` trains on, in trainer order: texts first, then ``score`` if it needs one.

    ``data``: (anchor, positive, negative) lists; a mapping / DataFrame / pyarrow Table with
    columns named like ``anchor|sent0|premise``, ``positive|sent1|entailment``,
    ``negative|hard_neg|contradiction`` and a score ``score|label|entailment_score``. A multicsr
    corpus table's rows with ``kept == False`` are left out (null = not curated = used), and its
    ``entailment_score`` (stage 2's 0-5 scale) is divided by 5 for CLAIF/CLHAIF's [0, 1] scores.

    paper/official/simcse: anchor, positive[, negative]; unsup-simcse: anchor only;
    claif: anchor, positive, score; clhaif: anchor, positive[, negative], score.
    """
    if loss not in LOSSES:
        raise unknown_loss(loss)
    entry = LOSSES[loss]
    raw = _as_columns(data)
    if "kept" in raw:
        keep = [flag is not False for flag in raw["kept"]]
        raw = {name: [v for v, k in zip(values, keep) if k] for name, values in raw.items()}
    found: dict[str, list] = {}
    for role, aliases in _COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in raw and any(v is not None for v in raw[alias]):
                found[role] = raw[alias]
                if role == "score" and alias == "entailment_score":
                    found[role] = [None if v is None else v / 5.0 for v in raw[alias]]
                break
    if "anchor" not in found:
        raise ValueError(f"training data has no anchor column (one of {_COLUMN_ALIASES['anchor']}); got {list(raw)}")
    for role in entry.text_columns[:2]:  # anchor (and positive) are required, a negative is used if there
        if role not in found:
            raise ValueError(f"loss {loss!r} needs a {role} column (one of {_COLUMN_ALIASES[role]}); got {list(raw)}")
    columns = {role: found[role] for role in entry.text_columns if role in found}
    if entry.scored:
        if "score" not in found:
            raise ValueError(f"loss {loss!r} needs an AI score column (one of {_COLUMN_ALIASES['score']})")
        columns["score"] = [float(v) for v in found["score"]]
    n_rows = {name: len(values) for name, values in columns.items()}
    if len(set(n_rows.values())) != 1:
        raise ValueError(f"training columns differ in length: {n_rows}")
    for name, values in columns.items():
        if name == "score":
            continue
        for row, text in enumerate(values):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"training data row {row}: column {name!r} is empty or not text ({text!r})")
    if not next(iter(n_rows.values())):
        raise ValueError("training data has no rows")
    return columns


def index_sentences(text_columns: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Unique sentences (first-seen order) and, per row, each column's id into that list: (n_rows, n_columns)."""
    row_of: dict[str, int] = {}
    ids = np.empty((len(text_columns[0]), len(text_columns)), dtype=np.int64)
    for j, column in enumerate(text_columns):
        for i, text in enumerate(column):
            ids[i, j] = row_of.setdefault(text, len(row_of))
    return list(row_of), ids


def supervised_corpus(curated, nli_path: str | os.PathLike):
    """Paper App. G: the curated corpus merged with human NLI triplets (``sent0,sent1,hard_neg`` csv or Parquet).

    Returns one corpus table (curated rows that were not kept are dropped first). The in-batch
    mask then keeps a premise's copies in both sources from acting as each other's negatives.
    """
    from multicsr_core.io.corpus import concat_corpus
    from multicsr_core.io.inputs import read_triplets

    nli, _ = read_triplets(nli_path)
    if "kept" in curated.column_names:
        import pyarrow.compute as pc

        curated = curated.filter(pc.invert(pc.fill_null(pc.equal(curated["kept"], False), False)))
    return concat_corpus([curated, nli])


# ----------------------------------------------------------------------------- the loss's guide matrix


def _guide_matrix(guide, texts: list[str], guide_cache_dir, device: str = "cpu") -> np.ndarray:
    from multicsr_core.guide import GuideEmbeddings, load_guide

    if guide is None:
        raise ValueError("the masked losses ('paper', 'official') need a guide model: pass guide=PATH|ID|model")
    if isinstance(guide, np.ndarray):
        if guide.shape[0] != len(texts):
            raise ValueError(f"guide matrix has {guide.shape[0]} rows for {len(texts)} unique sentences")
        return guide
    if not isinstance(guide, GuideEmbeddings):
        model = load_guide(guide, device=device) if isinstance(guide, (str, os.PathLike)) else guide
        guide = GuideEmbeddings(model, cache_dir=guide_cache_dir)
    return guide.embed(texts)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainingSettings:
    """How :func:`train` trains: the loss with its hyperparameters, and the trainer's settings.

    Defaults follow method.md (tau 0.05, sigma 0.9, batch 256, lr 5e-5, 3 epochs, linear decay,
    no warmup, seed 42). ``batch_size`` is per device. ``precision``: "auto" = bf16 (or fp16) on
    a CUDA GPU, fp32 on CPU. ``save_max_seq_length``: the saved folder's length, default the
    backbone's own (:func:`saved_max_seq_length`). ``evaluate_before``: score STS-B dev at step 0
    too. ``keep_checkpoints``: keep the trainer's checkpoints beside the saved folder.
    """

    loss: LossSettings = LossSettings()
    batch_size: int = 256
    lr: float = 5e-5
    epochs: float = 3
    max_steps: int | None = None
    eval_steps: int = 125
    seed: int = 42
    precision: str = "auto"
    warmup_ratio: float = 0.0
    no_duplicate_batches: bool = False
    save_max_seq_length: int | None = None
    evaluate_before: bool = True
    keep_checkpoints: bool = False


@dataclass
class TrainResult:
    """What ``train`` did. Dev scores are STS-B dev Spearman (cosine) x 100."""

    output_dir: str
    loss: str
    steps: int
    best_score: float | None
    best_step: int | None
    history: list[dict] = field(default_factory=list)  # [{"step": s, "stsb_dev": x}, ...] incl. step 0
    train_loss: float | None = None
    train_seconds: float = 0.0
    seconds_per_step: float | None = None
    masked_fraction: float | None = None  # share of in-batch negatives the guide masked (paper loss)
    max_seq_length_train: int | None = None  # tokens per input while training (SimCSE: 32)
    max_seq_length_saved: int | None = None  # the saved folder's max_seq_length (inference length)
    max_seq_length_eval: int | None = None  # the STS-B dev evaluation's length (untruncated: the model's limit)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _precision_flags(precision: str) -> dict:
    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if precision != "fp32" and not cuda:
        raise ValueError(f"precision {precision!r} needs a CUDA GPU; use fp32 (or auto) on CPU")
    return {"fp16": precision == "fp16", "bf16": precision == "bf16", "use_cpu": not cuda}


def _progress_callback(progress: Callable[[int, int, dict | None], None]):
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress(state.global_step, state.max_steps, None)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            progress(state.global_step, state.max_steps, metrics)

    return _Progress()


def _stderr_log_callback():
    """The Trainer's log lines (``{'loss': ...}``) on stderr: its default ``PrinterCallback`` prints
    them to stdout, where the commands write their JSON reports."""
    import sys

    from transformers import TrainerCallback

    class _LogToStderr(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_local_process_zero and logs:
                print({k: v for k, v in logs.items() if k != "total_flos"}, file=sys.stderr, flush=True)

    return _LogToStderr()


def _evaluate_last_step_callback():
    """Evaluate (and checkpoint) at the last step too, so the best-checkpoint choice covers the end of training."""
    from transformers import TrainerCallback

    class _EvaluateLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = True
                control.should_save = True
            return control

    return _EvaluateLastStep()


def _masked_fraction(loss, dataset, batch_size: int, batches: int = 8) -> float | None:
    """Share of in-batch negatives (own positive and hard negative excluded) the paper mask removes,
    over the first ``batches`` batches in dataset order: a cheap diagnostic for logs and reports."""
    from multicsr_core.losses import MaskedInfoNCELoss

    if not isinstance(loss, MaskedInfoNCELoss):
        return None
    ids = torch.as_tensor(np.asarray(dataset["label"][: batch_size * batches]))
    guide = loss.guide_embeddings.cpu()
    masked = total = 0
    for block in ids.split(batch_size):
        n_blocks = block.size(1) - 1
        sims = guide[block[:, 0]] @ guide[block[:, 1:].T.reshape(-1)].T
        masked += int(loss.mask(sims, 0, n_blocks).sum())
        total += block.size(0) * n_blocks * (block.size(0) - 1)
    return masked / total if total else 0.0


def _training_dataset(triplets, loss: str, guide, guide_cache_dir, device: str):
    """``(datasets.Dataset, guide matrix or None, rows)``: the text columns ``loss`` trains on and a
    label column (guide sentence ids for the guided losses, the AI score for the scored ones)."""
    from datasets import Dataset

    columns = training_columns(triplets, loss)
    text_names = [name for name in columns if name != "score"]
    dataset_columns: dict[str, list] = {name: columns[name] for name in text_names}
    guide_matrix = None
    if LOSSES[loss].guided:
        texts, ids = index_sentences([columns[name] for name in text_names])
        guide_matrix = _guide_matrix(guide, texts, guide_cache_dir, device=device)
        dataset_columns["label"] = ids.tolist()
    elif "score" in columns:
        dataset_columns["label"] = columns["score"]
    return Dataset.from_dict(dataset_columns), guide_matrix, len(columns[text_names[0]])


def _dev_evaluator(stsb_dev):
    """STS-B dev Spearman between steps (untruncated, as SentEval), or None without dev data."""
    from multicsr_core.evaluation.dev import UntruncatedSimilarityEvaluator

    if stsb_dev is None:
        return None
    s1, s2, scores = (
        (stsb_dev.sentences1, stsb_dev.sentences2, stsb_dev.scores) if hasattr(stsb_dev, "sentences1") else stsb_dev
    )
    return UntruncatedSimilarityEvaluator(s1, s2, scores, name=DEV_EVALUATOR_NAME, batch_size=128,
                                          show_progress_bar=False)


def _trainer_arguments(settings: TrainingSettings, checkpoint_dir: Path, evaluate: bool):
    """sentence-transformers' trainer arguments for ``settings`` (checkpoints only when evaluating)."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.lr,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps if settings.max_steps else -1,
        lr_scheduler_type="linear",
        warmup_steps=float(settings.warmup_ratio),  # transformers 5: a float in [0, 1) is a ratio of total steps
        weight_decay=0.0,
        seed=settings.seed,
        data_seed=settings.seed,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=settings.eval_steps,
        save_strategy="steps" if evaluate else "no",
        save_steps=settings.eval_steps,
        save_only_model=True,
        save_total_limit=2,
        load_best_model_at_end=evaluate,
        metric_for_best_model=_METRIC if evaluate else None,
        greater_is_better=True,
        logging_steps=max(1, min(settings.eval_steps, 50)),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        batch_sampler=BatchSamplers.NO_DUPLICATES if settings.no_duplicate_batches else BatchSamplers.BATCH_SAMPLER,
        **_precision_flags(settings.precision),
    )


def _trainer(model, args, dataset, loss_module, evaluator, progress):
    """The trainer, its log lines on stderr (stdout is for the commands' JSON reports)."""
    from sentence_transformers import SentenceTransformerTrainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=loss_module,
        evaluator=evaluator,
        callbacks=[
            *([_evaluate_last_step_callback()] if evaluator is not None else []),
            *([_progress_callback(progress)] if progress else []),
        ],
    )
    for stdout_printer in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(stdout_printer)
    trainer.add_callback(_stderr_log_callback())
    return trainer


def _timed_train(trainer):
    """``(the trainer's TrainOutput, seconds it took)``."""
    started = time.perf_counter()
    output = trainer.train()
    return output, time.perf_counter() - started


def _dev_history(log_history: list[dict]) -> list[dict]:
    """The trainer's STS-B dev evaluations as ``{"step", "stsb_dev"}`` (Spearman x 100)."""
    return [{"step": int(record["step"]), "stsb_dev": 100 * float(record[_METRIC])}
            for record in log_history if _METRIC in record]


def _best(history: list[dict]) -> tuple[float | None, int | None]:
    """The best trained (step > 0) dev score and its step."""
    trained = [r for r in history if r["step"] > 0]
    if not trained:
        return None, None
    best = max(trained, key=lambda r: r["stsb_dev"])
    return best["stsb_dev"], best["step"]


def _result_config(settings: TrainingSettings, args, rows: int, train_length: int, save_length: int | None) -> dict:
    """``TrainResult.config``: the settings as they ran (precision resolved), the rows and the planned steps."""
    loss = settings.loss
    steps_per_epoch = math.ceil(rows / settings.batch_size)
    planned = settings.max_steps if settings.max_steps else math.ceil(steps_per_epoch * settings.epochs)
    return {
        "loss": loss.name, "sigma": loss.sigma, "phi": loss.phi, "tau": loss.tau, "batch_size": settings.batch_size,
        "lr": settings.lr, "epochs": settings.epochs, "max_steps": settings.max_steps,
        "eval_steps": settings.eval_steps, "seed": settings.seed,
        "precision": "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32", "warmup_ratio": settings.warmup_ratio,
        "no_duplicate_batches": settings.no_duplicate_batches, "rows": rows, "planned_steps": planned,
        "world_size": args.world_size, "max_seq_length": train_length, "save_max_seq_length": save_length,
    }


def _save_inference_model(model, output_dir: Path, save_length: int | None, keep_checkpoints: bool) -> None:
    """Save the model without its training-only MLP, at its inference length, and drop the checkpoints."""
    final = _inference_model(model)
    final.max_seq_length = save_length  # 32 was for training only; the folder keeps the backbone's length
    final.save(str(output_dir))
    if not keep_checkpoints:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)


def train(
    model,
    triplets,
    output_dir: str | os.PathLike,
    settings: TrainingSettings = TrainingSettings(),
    *,
    guide=None,
    stsb_dev=None,
    guide_cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int, dict | None], None] | None = None,
) -> TrainResult:
    """Train ``model`` (from :func:`build_model`, or any SentenceTransformer) and save it to ``output_dir``.

    ``triplets``: see :func:`training_columns`. ``settings``: the loss (``settings.loss``, built
    from :data:`multicsr_core.losses.LOSSES`) and the trainer's settings. ``guide`` (for the
    guided losses "paper"/"official"): a path or hub id (loaded by :func:`multicsr_core.guide.load_guide`),
    a loaded guide model, a :class:`~multicsr_core.guide.GuideEmbeddings`, or a precomputed
    (n_unique_sentences, dim) matrix in :func:`index_sentences` order; ``guide_cache_dir`` keeps
    its embeddings across runs. ``stsb_dev``: ``(sentences1, sentences2, scores)`` or an object
    with ``sentences1/sentences2/scores`` (``multicsr_core.io.senteval.read_stsbenchmark(dir, "dev")``);
    then STS-B dev Spearman is computed every ``eval_steps`` and the best checkpoint is reloaded
    at the end. ``progress`` is called as ``progress(step, total_steps, metrics_or_None)``.
    Lengths: training reads ``model.max_seq_length`` tokens per input, STS-B dev untruncated (as
    SentEval), the saved folder gets ``settings.save_max_seq_length`` (:func:`saved_max_seq_length`).
    Multi-GPU (torchrun/accelerate): the losses gather candidates across processes. The saved
    folder loads with ``SentenceTransformer(output_dir)`` and has no training-only MLP.
    """
    from transformers import set_seed

    from multicsr_core.evaluation.lengths import untruncated_length

    output_dir = Path(output_dir)
    set_seed(settings.seed)
    dataset, guide_matrix, rows = _training_dataset(triplets, settings.loss.name, guide, guide_cache_dir,
                                                    str(model.device))
    evaluator = _dev_evaluator(stsb_dev)
    train_length = model.max_seq_length
    save_length = saved_max_seq_length(model, settings.save_max_seq_length)
    args = _trainer_arguments(settings, output_dir / "checkpoints", evaluator is not None)
    # torchrun/accelerate: negatives and mask span the global batch
    loss_module = settings.loss.build(model, guide_matrix, gather_across_devices=args.world_size > 1)
    history: list[dict] = []
    if evaluator is not None and settings.evaluate_before:
        history.append({"step": 0, "stsb_dev": 100 * evaluator(model)[f"{DEV_EVALUATOR_NAME}_spearman_cosine"]})
    trainer = _trainer(model, args, dataset, loss_module, evaluator, progress)
    output, seconds = _timed_train(trainer)
    history += _dev_history(trainer.state.log_history)
    best_score, best_step = _best(history) if evaluator is not None else (None, None)
    _save_inference_model(model, output_dir, save_length, keep_checkpoints=settings.keep_checkpoints)
    steps = int(trainer.state.global_step)
    return TrainResult(
        output_dir=str(output_dir), loss=settings.loss.name, steps=steps, best_score=best_score, best_step=best_step,
        history=history, train_loss=float(output.training_loss) if output.training_loss is not None else None,
        train_seconds=seconds, seconds_per_step=seconds / steps if steps else None,
        masked_fraction=_masked_fraction(loss_module, dataset, settings.batch_size),
        max_seq_length_train=train_length, max_seq_length_saved=save_length,
        max_seq_length_eval=(evaluator.last_max_seq_length or untruncated_length(model)) if evaluator else None,
        config=_result_config(settings, args, rows, train_length, save_length),
    )
