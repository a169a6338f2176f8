"""Model and dataset cards on a real (tiny) run: SNLI triplets scored by the real MiniLM guide,
curated with the paper rule, MiniLM trained one step with the paper loss; the card read back
through huggingface_hub's card parsers."""

from __future__ import annotations

import json
import os
import stat

import pytest
from huggingface_hub import DatasetCard, ModelCard
from sentence_transformers import SentenceTransformer

pytest_plugins = ["card_fixtures"]
# the shared tiny run (card_fixtures.trained) trains once per session: about 25 s of CPU on 2 cores
pytestmark = pytest.mark.slow


STS = {"STS12": 70.1234, "STS13": 80.0, "STS14": 75.5, "STS15": 82.25, "STS16": 79.0, "STSBenchmark": 85.0,
       "SICKRelatedness": 78.0, "avg": 78.55}
TRANSFER = {"MR": 80.1, "CR": 85.2, "SUBJ": 93.0, "MPQA": 88.0, "SST2": 85.5, "TREC": 90.0, "MRPC": 75.0, "avg": 85.26}


def test_training_writes_our_card_and_ordinary_file_modes(trained):
    corpus, model_dir, cfg, funnel = trained
    card = ModelCard.load(model_dir / "README.md")
    text = card.content
    # the run's real names, not the stock card's placeholders
    assert "sentence_transformers_model_id" not in text and "Unnamed Dataset" not in text
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    # the license: the base model's (all-MiniLM-L6-v2: Apache-2.0); the corpus's source named with its own
    assert card.data.license == "apache-2.0" and ModelCard(text).data.license == "apache-2.0"
    assert "**License:** `apache-2.0`: Apache-2.0, the license of the base model `bundled:all-MiniLM-L6-v2`" in text
    assert "License of the source: cc-by-sa-4.0" in text and "SNLI 1.0" in text
    assert f'SentenceTransformer("{model_dir}")' in text
    assert "Guide model (P_eta, frozen):** `bundled:all-MiniLM-L6-v2`" in text
    assert "none: the run entered at stage 2 with existing triplets" in text  # no generator in this run
    assert "a >= alpha = 3.0, b <= beta = 3.0, a >= b + gamma = 1.0" in text
    assert f"| kept | {funnel['kept']:,} |" in text
    assert "MaskedInfoNCELoss" in text and r"\ge \sigma" in text and "@inproceedings{wang2024multicsr" in text
    training = json.loads((model_dir / "multicsr_training.json").read_text())
    assert f"inference (the saved folder); training truncated inputs to {cfg.training.max_seq_length} tokens" in text
    assert f"{training['max_seq_length_saved']} tokens at inference" in text
    assert training["max_seq_length_saved"] == SentenceTransformer(str(model_dir), device="cpu").max_seq_length
    assert f"`{cfg.config_hash()}`" in text
    # the sample table shows the triplets and their scores, never the trainer's internal id column
    assert "| anchor (x) | positive (x+) | hard negative (x-) | a | b |" in text
    assert "label" not in text.split("### Training corpus")[1].split("### Loss")[0]
    assert "Not evaluated yet" in text and "model-index" not in card.data.to_dict()
    mask = os.umask(0)
    os.umask(mask)
    for path in model_dir.rglob("*"):
        wanted = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == wanted, path  # model.safetensors too (transformers makes it 0600)


def test_final_evaluation_goes_into_card_and_model_index(trained, tmp_path):
    import shutil

    from huggingface_hub.repocard_data import model_index_to_eval_results

    from multicsr_core.cards import CardTarget, write_model_card

    _, trained_dir, cfg, _ = trained
    model_dir = tmp_path / "model"
    shutil.copytree(trained_dir, model_dir)
    write_model_card(model_dir, results={**STS, "transfer": TRANSFER}, baseline={**STS, "STS12": 68.0, "avg": 78.0},
                     target=CardTarget(model_ref="runs/demo/model"))
    card = ModelCard.load(model_dir / "README.md")
    name, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert "MultiCSR" in name
    by_dataset = {r.dataset_type: r for r in results}
    assert by_dataset["senteval/sts12"].metric_value == 70.12 and by_dataset["senteval/sts12"].dataset_split == "all"
    assert by_dataset["senteval/stsbenchmark"].metric_type == "spearman_cosine"
    assert by_dataset["senteval/sts-avg"].metric_value == 78.55
    assert by_dataset["senteval/trec"].metric_value == 90.0 and by_dataset["senteval/trec"].metric_type == "accuracy"
    assert len(results) == 7 + 1 + 7
    text = card.content
    assert 'SentenceTransformer("runs/demo/model")' in text and "# Load the trained folder" in text
    assert "SentEval as forked by SimCSE" in text and '"all" setting' in text
    assert "Avg is the mean of the seven rounded figures" in text and "sts-avg-" not in text
    assert "| demo-snli | 70.12 | 80.00 | 75.50 | 82.25 | 79.00 | 85.00 | 78.00 | 78.55 |" in text
    assert "+2.12" in text  # the delta row against the base model
    assert "| demo-snli | 80.10 | 85.20 | 93.00 | 88.00 | 85.50 | 90.00 | 75.00 | 85.26 |" in text
    # a later rewrite (a hub push) keeps the final figures: they live in multicsr_evaluation.json
    write_model_card(model_dir, target=CardTarget(repo_id="someone/multicsr-minilm"))
    again = ModelCard.load(model_dir / "README.md")
    assert 'SentenceTransformer("someone/multicsr-minilm")' in again.content
    assert len(model_index_to_eval_results(again.data.to_dict()["model-index"])[1]) == 15
    model = SentenceTransformer(str(model_dir), device="cpu")  # the folder still loads as is
    assert model.encode(["a dog runs"]).shape == (1, 384)


def test_dataset_card_yaml_header(trained, tmp_path):
    import pyarrow.parquet as pq

    from multicsr_core.cards import CardTarget, ExportedFile, dataset_card_text
    from multicsr_core.io.corpus import read_corpus, read_provenance

    corpus, _, cfg, funnel = trained
    table = read_corpus(corpus)
    exported = ExportedFile(schema=table.schema, rows=table.num_rows, data_file="data/train-00000-of-00001.parquet",
                            fmt="hf", selection="every row")
    text = dataset_card_text(exported, provenance=read_provenance(corpus), funnel=funnel,
                             target=CardTarget(repo_id="someone/snli-curated"))
    (tmp_path / "README.md").write_text(text)
    card = DatasetCard.load(tmp_path / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "cc-by-sa-4.0"  # SNLI's license, found from the input file
    assert meta["task_categories"] == ["sentence-similarity"] and meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default",
                                "data_files": [{"split": "train", "path": "data/train-00000-of-00001.parquet"}]}]
    features = {f["name"]: f["dtype"] for f in meta["dataset_info"]["features"]}
    assert features["premise"] == "string" and features["kept"] == "bool" and features["entailment_score"] == "float64"
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_examples": table.num_rows}]
    assert "SNLI 1.0" in card.content and "load_dataset('someone/snli-curated', split='train')" in card.content
    assert f"| kept | {funnel['kept']:,} |" in card.content
    assert "5 * clip(cos, 0, 1)" in card.content and f"hash {cfg.config_hash()}" in card.content
    # the source and license sentences are the model card's, from the same function
    from multicsr_core.cards import corpus_license_text, run_facts, source_data

    assert corpus_license_text(run_facts(cfg), source_data(cfg)) in card.content
    assert pq.read_schema(corpus).names[0] == "premise"


@pytest.fixture
def card_folder(trained, tmp_path):
    """A copy of the trained folder whose training record a test may rewrite, and its model."""
    import shutil

    _, trained_dir, _, _ = trained
    shutil.copytree(trained_dir, tmp_path / "model")
    return tmp_path / "model", SentenceTransformer(str(trained_dir), device="cpu")


def _with_config(model_dir, **sections) -> None:
    """Rewrite the folder's training record as if the run's config had had ``sections``."""
    path = model_dir / "multicsr_training.json"
    record = json.loads(path.read_text())
    for name, values in sections.items():
        record["config"][name] = {**record["config"].get(name, {}), **values}
    path.write_text(json.dumps(record))


def test_the_card_license_is_the_base_models_or_says_it_was_not_determined(card_folder, tmp_path, trained):
    from multicsr_core.cards import CardTarget, model_card_text

    model_dir, model = card_folder
    # a user's own backbone in a folder whose card declares a license: that license
    backbone = tmp_path / "my-backbone"
    backbone.mkdir()
    (backbone / "README.md").write_text("---\nlicense: mit\n---\n\n# my backbone\n")
    _with_config(model_dir, training={"base_model": str(backbone)})
    assert ModelCard(model_card_text(model_dir, model=model)).data.license == "mit"
    # a backbone whose license nothing on this machine says: `other`, and the card says so and what to do
    _with_config(model_dir, training={"base_model": "someone/own-backbone"})
    text = model_card_text(model_dir, model=model)
    assert ModelCard(text).data.license == "other"
    assert "the license of the base model `someone/own-backbone` was not determined" in text
    assert "`multicsr export --license ID`" in text
    # the publisher's choice wins (multicsr export --license)
    card = ModelCard(model_card_text(model_dir, target=CardTarget(license="cc-by-4.0"), model=model))
    assert card.data.license == "cc-by-4.0" and "`cc-by-4.0` (set by the publisher)" in card.content
    # a corpus Gemma wrote: the card names the Gemma Terms of Use and their clause on models trained on outputs
    corpus, _, _, _ = trained
    _with_config(model_dir, training={"base_model": "bundled:all-MiniLM-L6-v2"},
                 input={"triplets": None, "premises": str(tmp_path / "snli_premises.txt")},
                 generation={"llm": "google/gemma-3-270m", "backend": "openai"})
    card = ModelCard(model_card_text(model_dir, model=model, corpus=corpus))
    assert card.data.license == "apache-2.0"
    assert ("Generated text is subject to the terms of use of the generator `google/gemma-3-270m` (the Gemma Terms "
            "of Use (https://ai.google.dev/gemma/terms))") in card.content
    assert '"Model Derivatives"' in card.content


def test_an_sts_average_of_some_tasks_is_named_by_them(card_folder):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from multicsr_core.cards import model_card_text

    model_dir, model = card_folder
    three = {"STS12": 70.0, "STS13": 80.0, "STSBenchmark": 84.0, "avg": 78.0}
    card = ModelCard(model_card_text(model_dir, results=three, model=model))
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    [average] = [r for r in results if "avg" in r.dataset_type]
    assert average.dataset_type == "senteval/sts-avg-3" and average.dataset_config == "STS12,STS13,STSBenchmark"
    assert average.dataset_name == "SentEval STS average of 3 of the 7 tasks (STS12, STS13, STS-B)"
    assert average.metric_value == 78.0 and len(results) == 4
    assert "Only STS12, STS13, STS-B ran: Avg is their mean" in card.content
    # one task: its "average" is that task, not reported as one
    card = ModelCard(model_card_text(model_dir, results={"STSBenchmark": 84.0, "avg": 84.0}, model=model))
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert [r.dataset_type for r in results] == ["senteval/stsbenchmark"]
