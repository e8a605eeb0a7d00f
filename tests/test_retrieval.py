import json

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.lm.hf import TransformersLM
from harness.retriever import Passage, Retriever
from harness.scoring import retrieval_metrics
from harness.strategy import PrepareContext
from harness.task import load_task
from strategies.retrieval import Retrieval, pack_passages
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def retriever():
    return Retriever()  # the packaged all-MiniLM-L6-v2: local files, no download


def _no_bars(description, total):
    return lambda n=1: None


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_index_finds_known_neighbours(kind):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    r = Retriever(index=kind, ivf_lists=4, nprobe=4)
    index = r._new_index(vectors)
    queries = vectors[[3, 77, 250]] + 0.01 * rng.normal(size=(3, 16)).astype(np.float32)
    _, ids = index.search(queries, 1)
    assert ids[:, 0].tolist() == [3, 77, 250]


def test_search_ranks_the_relevant_passage_first_and_clamps_k(retriever, tmp_path):
    passages = [Passage("p1", "p1", "Annual leave can be carried over up to six days."),
                Passage("p2", "p2", "The office canteen serves lunch from noon."),
                Passage("p3", "p3", "Parking permits are issued by facilities.")]
    corpus = retriever.build(passages, tmp_path)
    hits = retriever.search(corpus, ["how many holiday days can I carry over?", "where do I get a parking permit"], 10)
    assert [h[0][0].id for h in hits] == ["p1", "p3"] and len(hits[0]) == 3
    assert hits[0][0][1] >= hits[0][1][1] >= hits[0][2][1]


def test_cache_is_reused_and_invalidated_by_content_and_shape(retriever, tmp_path):
    passages = [Passage(f"d{i}", f"d{i}", f"document number {i} about topic {i % 3}") for i in range(20)]
    first = retriever.build(passages, tmp_path)
    assert first.built["embeddings"] == "built" and first.built["index"] == "built"
    again = retriever.build(passages, tmp_path)
    assert again.built["embeddings"] == "cached" and again.built["index"] == "cached"
    changed = passages[:-1] + [Passage("d19", "d19", "a different text")]
    assert retriever.build(changed, tmp_path).built["embeddings"] == "built"
    # an embedder whose dimension changed under the same name: the cached vectors are rebuilt, not used
    for path in (tmp_path / "embeddings").glob("*.npy"):
        np.save(path, np.zeros((20, 7), np.float32))
    for path in (tmp_path / "indexes").glob("*.faiss"):
        path.unlink()
    rebuilt = retriever.build(passages, tmp_path)
    assert rebuilt.built["embeddings"] == "built" and rebuilt.index.d == 384


def test_long_documents_are_chunked_with_overlap(retriever):
    r = Retriever(chunk_tokens=20, chunk_overlap=5)
    r._model = retriever.model
    text = " ".join(f"word{i}" for i in range(60))
    passages, split = r.chunk([("long", text), ("short", "a short one")])
    assert split == 1 and passages[-1].id == "short"
    chunks = [p for p in passages if p.doc_id == "long"]
    assert len(chunks) > 2 and chunks[0].id == "long#0"
    assert chunks[0].text.split()[-1] in chunks[1].text  # windows overlap
    with pytest.raises(ConfigError, match="chunk_overlap"):
        Retriever(chunk_tokens=10, chunk_overlap=10)


def test_token_budget_packs_whole_passages_and_counts_the_rest():
    count = lambda text: len(text.split())  # noqa: E731
    passages = [("a", "one two three", 0.9), ("b", "four five six seven eight nine", 0.8), ("c", "ten", 0.7)]
    kept, dropped = pack_passages(passages, count, budget=7)
    assert [p[0] for p in kept] == ["a", "c"] and dropped == 1


def test_retrieval_metrics_by_hand():
    m = retrieval_metrics([["x"], ["y", "z"], ["q"]], [["x", "a"], ["a", "z", "z", "y"], ["a", "b"]], ks=(1, 2))
    assert m["recall@1"] == pytest.approx((1 + 0 + 0) / 3)
    assert m["recall@2"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 0) / 3)


def _knowledge_task(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "task.yaml").write_text("type: generation\ninstruction: Answer from the handbook.\n"
                                        "columns: {input: question, target: answer}\n")
    docs = [{"id": "leave", "title": "Leave", "text": "Staff may carry over six days of leave until 31 March."},
            {"id": "bikes", "title": "Cycling", "text": "The cycle-to-work limit is 1350 euros."},
            {"id": "cars", "title": "Parking", "text": "Parking permits cost 12 euros a month."}]
    (tmp_path / "knowledge.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    rows = [("How many leave days carry over?", "six days", ["leave"]),
            ("What is the bike scheme limit?", "1350 euros", ["bikes"])]
    for split, suffix in (("train", " (asked in train)"), ("heldout", "")):
        lines = [json.dumps({"id": f"{split}-{i}", "question": q + suffix, "answer": a, "doc_ids": d}) + "\n"
                 for i, (q, a, d) in enumerate(rows)]
        (tmp_path / f"{split}.jsonl").write_text("".join(lines))
    return load_task(tmp_path)


def test_knowledge_mode_end_to_end_on_a_tiny_model(tiny_model, retriever, tmp_path):
    task = _knowledge_task(tmp_path / "task")
    lm = TransformersLM(str(tiny_model))
    strategy = Retrieval(retriever, mode="knowledge", k=5, budget_tokens=400, shots=1, max_new_tokens=4)
    report = strategy.prepare(PrepareContext(task, lm, tmp_path, tmp_path / "cache", 0, _no_bars))
    assert report["mode"] == "knowledge" and report["k_used"] == 3 and report["passages"] == 3
    preds = strategy.predict(task.heldout)
    assert preds[0].retrieved[0]["doc_id"] == "leave" and preds[1].retrieved[0]["doc_id"] == "bikes"
    assert "[leave]" in preds[0].prompt and "carry over six days" in preds[0].prompt
    assert preds[0].prompt.count("(asked in train)") == 1 and len(report["demo_ids"]) == 1  # answer-format demo
    assert preds[0].usage["retrieval_s"] > 0 and preds[0].usage["passages_dropped"] == 0


def test_system_layout_puts_passages_before_the_demonstrations(tiny_model, retriever, tmp_path):
    """layout=system: instruction + passages, then the answer-format demonstration turn, then the question turn,
    which holds the question alone, as the demonstration's turn does."""
    task = _knowledge_task(tmp_path / "task")
    lm = TransformersLM(str(tiny_model))
    strategy = Retrieval(retriever, mode="knowledge", k=2, budget_tokens=400, shots=1, max_new_tokens=4,
                         layout="system")
    strategy.prepare(PrepareContext(task, lm, tmp_path, tmp_path / "cache", 0, _no_bars))
    prompt = strategy.predict(task.heldout[:1])[0].prompt
    turns = prompt.split("<|im_start|>")[1:]
    assert [t.split("\n", 1)[0] for t in turns] == ["system", "user", "assistant", "user", "assistant"]
    assert "Reference passages" in turns[0] and "[leave]" in turns[0] and "carry over six days" in turns[0]
    assert turns[1].startswith("user\n") and "(asked in train)" in turns[1]
    assert turns[3] == "user\nHow many leave days carry over?<|im_end|>\n"
    assert strategy.describe()["layout"] == "system" and "layout" not in Retrieval(retriever).describe()
    with pytest.raises(ConfigError, match="layout"):
        Retrieval(retriever, layout="middle")


def test_knowledge_mode_without_a_knowledge_split_is_refused(tiny_model, retriever, tmp_path):
    task = load_task(ROOT / "tasks" / "tiny")
    strategy = Retrieval(retriever, mode="knowledge")
    with pytest.raises(ConfigError, match="task 'tiny' has no knowledge split"):
        strategy.prepare(PrepareContext(task, TransformersLM(str(tiny_model)), tmp_path, tmp_path, 0, _no_bars))


def test_demonstration_mode_uses_nearest_train_examples(tiny_model, retriever, tmp_path):
    task = load_task(ROOT / "tasks" / "tiny")
    strategy = Retrieval(retriever, mode="auto", k=3)
    report = strategy.prepare(PrepareContext(task, TransformersLM(str(tiny_model)), tmp_path, tmp_path, 0, _no_bars))
    assert report["mode"] == "demonstrations"
    preds = strategy.predict(task.heldout[:4])
    train_by_id = {ex.id: ex for ex in task.train}
    for p in preds:
        assert p.output in task.labels and len(p.retrieved) == 3
        nearest = train_by_id[p.retrieved[0]["id"]].input
        assert nearest in p.prompt
        # most similar demonstration is the last one, right before the input
        assert p.prompt.rindex(nearest) > max(p.prompt.index(train_by_id[r["id"]].input) for r in p.retrieved[1:])


def test_retrievers_of_one_embedder_share_the_model_and_embed_each_text_once(retriever):
    """The data check, the retrieval arm and the classifier each build a Retriever; a text is embedded once per
    process, and what comes back is what sentence-transformers computes for it directly."""
    other = Retriever()
    assert other.model is retriever.model
    texts = ["The parcel never arrived.", "I was charged twice for May.", "Reset my hub's Wi-Fi, please."]
    fed: list[str] = []
    model = retriever.model
    original = model.encode

    def counting(batch, **kw):
        fed.extend(batch)
        return original(batch, **kw)

    model.encode = counting
    try:
        first = retriever.encode(texts[:2])
        seen: list[int] = []
        again = other.encode([texts[2], texts[0], texts[2], texts[1]], advance=seen.append)
    finally:
        del model.encode
    assert sorted(fed) == sorted(texts)            # each text once, the repeat and the known ones not again
    assert sum(seen) == 4
    direct = original(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(first, direct[:2], atol=1e-5)
    np.testing.assert_allclose(again, direct[[2, 0, 2, 1]], atol=1e-5)
