"""A persistent FAISS index of image embeddings per project and model version.

Why: diversity needs the embeddings of every task (labeled ones included), and computing them
costs a forward pass per image. Keeping them on disk, keyed by Label Studio task id, makes
re-ranking incremental: only new or changed tasks go through the detector again.

One file per project and model version (`<version>.faiss` in the project's embeddings folder,
`backend.layout`), because embeddings from two models live in different spaces and are never
comparable. Opening the index of a newly promoted version removes the older files.
The file is a serialised FAISS index that carries its own id map, written to a temporary file
and moved into place with `os.replace`, so a crash leaves the old file or the new one.

Index kinds (squared L2 distances; on L2-normalised vectors that orders like cosine):
    flat: `IndexIDMap2(IndexFlatL2)`, exact search. Used below `ivf_threshold` vectors.
    ivf:  `IndexIVFFlat` with a hashtable direct map (so vectors can be read back and replaced
          by id), trained on the stored vectors once the index reaches `ivf_threshold`, and
          retrained when it has grown enough that the ideal number of lists doubles.
          `nprobe` is how many of the `nlist` lists a search visits: more is slower and closer
          to exact (nprobe = nlist is exact); the default 16 keeps recall high for the
          4 * sqrt(n) lists used here.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from backend.files import atomic_write
from backend.layout import ModelDir
from backend.ranking.version_files import remove_other_versions as remove_version_files
from backend.ranking.version_files import version_file

logger = logging.getLogger(__name__)

DEFAULT_IVF_THRESHOLD = 50_000
DEFAULT_NPROBE = 16
SUFFIX = ".faiss"
_MIN_POINTS_PER_LIST = 39  # FAISS's k-means warns below this many training points per list
_MAX_POINTS_PER_LIST = 256  # more training points than this per list buys nothing

Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def index_path(model_dir: Path, project_id: int, model_version: str) -> Path:
    """Where the index of `model_version` for `project_id` lives."""
    folder = ModelDir(Path(model_dir)).project(project_id).embeddings
    return version_file(folder, model_version, SUFFIX)


def remove_other_versions(model_dir: Path, project_id: int, keep_version: str) -> list[Path]:
    """Delete the project's index files of every version but `keep_version`; returns them."""
    folder = ModelDir(Path(model_dir)).project(project_id).embeddings
    removed = remove_version_files(folder, SUFFIX, keep_version)
    if removed:
        logger.info(
            "project=%s removed %d embedding index(es) of older model versions (kept %s)",
            project_id,
            len(removed),
            keep_version,
        )
    return removed


def _ideal_nlist(n: int) -> int:
    """Inverted lists for n vectors: about 4 * sqrt(n), with enough points to train each."""
    return max(1, min(int(4 * math.sqrt(n)), n // _MIN_POINTS_PER_LIST))


class EmbeddingIndex:
    """Embeddings keyed by task id, with exact (flat) or IVF search. Thread-safe.

    Build with `EmbeddingIndex.open(...)` for a persisted index, or `EmbeddingIndex()` for an
    in-memory one (`save` then needs a path). The dimension is fixed by the first vectors
    added (or by the file loaded).

    Args:
        path: file to load from (if it exists) and save to; None keeps it in memory.
        ivf_threshold: switch from exact search to IVF once the index holds this many vectors.
        nprobe: IVF lists visited per search (see the module docstring).
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        ivf_threshold: int = DEFAULT_IVF_THRESHOLD,
        nprobe: int = DEFAULT_NPROBE,
    ) -> None:
        if isinstance(ivf_threshold, bool) or not isinstance(ivf_threshold, int):
            raise TypeError("ivf_threshold must be an int")
        if ivf_threshold < 2 * _MIN_POINTS_PER_LIST:
            raise ValueError(f"ivf_threshold must be >= {2 * _MIN_POINTS_PER_LIST}")
        if isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1:
            raise ValueError(f"nprobe must be an integer >= 1, got {nprobe!r}")
        self.path = Path(path) if path is not None else None
        self.ivf_threshold = ivf_threshold
        self.nprobe = nprobe
        self._lock = threading.RLock()
        self._index: faiss.Index | None = None
        self._ids: IntArray = np.zeros(0, dtype=np.int64)  # sorted mirror of the stored ids
        self._dirty = False
        if self.path is not None and self.path.is_file():
            self._load(self.path)

    @classmethod
    def open(
        cls,
        model_dir: Path,
        project_id: int,
        model_version: str,
        *,
        prune_other_versions: bool = True,
        ivf_threshold: int = DEFAULT_IVF_THRESHOLD,
        nprobe: int = DEFAULT_NPROBE,
    ) -> EmbeddingIndex:
        """The persisted index of `model_version`; by default deletes other versions' files."""
        path = index_path(model_dir, project_id, model_version)
        if prune_other_versions:
            remove_other_versions(model_dir, project_id, model_version)
        return cls(path, ivf_threshold=ivf_threshold, nprobe=nprobe)

    # -- state -----------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return int(self._ids.shape[0])

    @property
    def dim(self) -> int | None:
        """Vector dimension, or None while the index is empty and was never given vectors."""
        with self._lock:
            return None if self._index is None else int(self._index.d)

    @property
    def kind(self) -> str:
        """Index kind: "flat" (exact search) or "ivf"."""
        with self._lock:
            return "ivf" if isinstance(self._index, faiss.IndexIVFFlat) else "flat"

    @property
    def nlist(self) -> int:
        """Number of IVF lists (0 for a flat index)."""
        with self._lock:
            return int(self._index.nlist) if isinstance(self._index, faiss.IndexIVFFlat) else 0

    @property
    def dirty(self) -> bool:
        """True when the index changed since it was loaded or saved."""
        with self._lock:
            return self._dirty

    def ids(self) -> IntArray:
        """(n,) int64 stored task ids, ascending."""
        with self._lock:
            return self._ids.copy()

    def contains(self, ids: Iterable[int] | npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """(k,) bool: which of `ids` have a stored vector."""
        query = _check_ids(ids, unique=False)
        with self._lock:
            return np.isin(query, self._ids)

    def __contains__(self, task_id: object) -> bool:
        if isinstance(task_id, bool) or not isinstance(task_id, int | np.integer):
            return False
        return bool(self.contains([int(task_id)])[0])

    # -- updates ---------------------------------------------------------------------------
    def upsert(self, ids: Iterable[int] | npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add vectors for task ids, replacing the stored vector of any id already present.

        Args:
            ids: (n,) distinct non-negative integer task ids.
            vectors: (n, d) float32, finite; d must match the index.

        Raises:
            TypeError / ValueError: bad ids or vectors.
        """
        keys = _check_ids(ids, unique=True)
        with self._lock:
            data = _check_vectors(vectors, keys.shape[0], self.dim)
            if keys.shape[0] == 0:
                return
            if self._index is None:
                self._index = faiss.IndexIDMap2(faiss.IndexFlatL2(data.shape[1]))
            present = keys[np.isin(keys, self._ids)]
            if present.shape[0]:
                self._index.remove_ids(present)
            self._index.add_with_ids(data, keys)
            self._ids = np.union1d(self._ids, keys)
            self._dirty = True
            self._maybe_rebuild()

    def remove(self, ids: Iterable[int] | npt.ArrayLike) -> int:
        """Remove the vectors of `ids` (absent ids are ignored); returns how many were removed."""
        keys = _check_ids(ids, unique=False)
        with self._lock:
            present = np.unique(keys[np.isin(keys, self._ids)])
            if self._index is None or present.shape[0] == 0:
                return 0
            removed = int(self._index.remove_ids(present))
            self._ids = np.setdiff1d(self._ids, present, assume_unique=True)
            self._dirty = True
            return removed

    # -- reads -----------------------------------------------------------------------------
    def get(self, ids: Iterable[int] | npt.ArrayLike) -> Float32Array:
        """(k, d) float32 stored vectors of `ids`, in the given order.

        Raises:
            KeyError: some ids have no stored vector (the message lists a few).
        """
        keys = _check_ids(ids, unique=False)
        with self._lock:
            missing = keys[~np.isin(keys, self._ids)]
            if missing.shape[0]:
                shown = ", ".join(str(int(i)) for i in missing[:5])
                raise KeyError(f"{missing.shape[0]} task id(s) have no embedding: {shown}")
            if keys.shape[0] == 0 or self._index is None:
                return np.zeros((0, self.dim or 0), dtype=np.float32)
            stored_ids, stored = self._all_vectors()
            order = np.argsort(stored_ids, kind="stable")
            positions = order[np.searchsorted(stored_ids, keys, sorter=order)]
            return np.ascontiguousarray(stored[positions])

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Float32Array, IntArray]:
        """The k nearest stored vectors of each query, FAISS style.

        Args:
            queries: (q, d) float32.
            k: neighbours per query, >= 1.

        Returns:
            (D, I): (q, k) float32 squared L2 distances, ascending, and (q, k) int64 task ids;
            I is -1 (and D inf) where fewer than k vectors are stored or, for IVF, found in
            the probed lists.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        with self._lock:
            data = _check_vectors(queries, None, self.dim)
            q = data.shape[0]
            if self._index is None or self._index.ntotal == 0:
                return (
                    np.full((q, k), np.inf, dtype=np.float32),
                    np.full((q, k), -1, dtype=np.int64),
                )
            if isinstance(self._index, faiss.IndexIVFFlat):
                self._index.nprobe = min(self.nprobe, int(self._index.nlist))
            distances, labels = self._index.search(data, int(k))
            distances = np.where(labels < 0, np.inf, distances).astype(np.float32)
            return distances, labels.astype(np.int64)

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path | None:
        """Write the index atomically (temp file + os.replace); returns the path written.

        Nothing is written while the index has never held a vector.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this index has no path: pass one to save()")
        with self._lock:
            if self._index is None:
                return None
            atomic_write(target, faiss.serialize_index(self._index).tobytes())
            if target == self.path:
                self._dirty = False
            logger.debug("saved %d embeddings (%s) to %s", len(self._ids), self.kind, target)
            return target

    def _load(self, path: Path) -> None:
        """Read a saved index; an unreadable or foreign file is logged and ignored (it is a
        cache: the vectors are recomputed)."""
        try:
            blob = np.fromfile(path, dtype=np.uint8)
            index = faiss.deserialize_index(blob)
        except (OSError, RuntimeError) as exc:
            logger.warning("ignoring unreadable embedding index %s: %s", path, exc)
            return
        if isinstance(index, faiss.IndexIDMap2) and isinstance(
            faiss.downcast_index(index.index), faiss.IndexFlatL2
        ):
            ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        elif isinstance(index, faiss.IndexIVFFlat) and index.metric_type == faiss.METRIC_L2:
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
            ids = _ivf_ids(index)
        else:
            logger.warning("ignoring %s: unexpected index type %s", path, type(index).__name__)
            return
        self._index = index
        self._ids = np.sort(ids)
        self._dirty = False
        logger.debug("loaded %d embeddings (%s) from %s", ids.shape[0], self.kind, path)

    # -- internals -------------------------------------------------------------------------
    def _all_vectors(self) -> tuple[IntArray, Float32Array]:
        """Every stored (ids, vectors) pair, in storage order."""
        index = self._index
        if index is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        if isinstance(index, faiss.IndexIVFFlat):
            return _ivf_contents(index)
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        vectors = index.index.reconstruct_n(0, int(index.ntotal))
        return ids, np.asarray(vectors, dtype=np.float32).reshape(-1, int(index.d))

    def _maybe_rebuild(self) -> None:
        """Switch to IVF at the threshold; retrain IVF once the ideal nlist has doubled."""
        n = int(self._ids.shape[0])
        if n < self.ivf_threshold or self._index is None:
            return
        if isinstance(self._index, faiss.IndexIVFFlat) and _ideal_nlist(n) < 2 * self._index.nlist:
            return
        ids, vectors = self._all_vectors()
        self._index = _build_ivf(ids, vectors)
        logger.info(
            "embedding index rebuilt as IVF: %d vectors, nlist=%d, nprobe=%d",
            n,
            self._index.nlist,
            self.nprobe,
        )


def _build_ivf(ids: IntArray, vectors: Float32Array) -> faiss.IndexIVFFlat:
    """An IVF index trained on (a sample of) `vectors`, holding all of them."""
    n, d = vectors.shape
    nlist = _ideal_nlist(n)
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)  # keeps a reference
    sample_size = min(n, nlist * _MAX_POINTS_PER_LIST)
    sample = vectors
    if sample_size < n:
        chosen = np.random.default_rng(0).choice(n, size=sample_size, replace=False)
        sample = vectors[np.sort(chosen)]
    index.train(np.ascontiguousarray(sample))
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    index.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(ids))
    return index


def _ivf_ids(index: faiss.IndexIVFFlat) -> IntArray:
    lists = index.invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
        for i in range(index.nlist)
        if lists.list_size(i)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _ivf_contents(index: faiss.IndexIVFFlat) -> tuple[IntArray, Float32Array]:
    """(ids, vectors) of an IVFFlat index, read list by list (its codes are raw float32)."""
    lists, d = index.invlists, int(index.d)
    id_parts, vector_parts = [], []
    for i in range(index.nlist):
        size = lists.list_size(i)
        if not size:
            continue
        id_parts.append(faiss.rev_swig_ptr(lists.get_ids(i), size).copy())
        codes = faiss.rev_swig_ptr(lists.get_codes(i), size * lists.code_size).copy()
        vector_parts.append(codes.view(np.float32).reshape(size, d))
    if not id_parts:
        return np.zeros(0, dtype=np.int64), np.zeros((0, d), dtype=np.float32)
    return np.concatenate(id_parts).astype(np.int64), np.concatenate(vector_parts)


def _check_ids(ids: Iterable[int] | npt.ArrayLike, *, unique: bool) -> IntArray:
    """Validate task ids: a 1-D sequence of non-negative integers."""
    array = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"ids must be integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {array.shape}")
    if (array < 0).any():
        raise ValueError("ids must be non-negative")
    keys = np.ascontiguousarray(array, dtype=np.int64)
    if unique and np.unique(keys).shape[0] != keys.shape[0]:
        raise ValueError("ids must be distinct")
    return keys


def _check_vectors(vectors: npt.ArrayLike, n: int | None, dim: int | None) -> Float32Array:
    """Validate a (n, d) float32 finite matrix; n and d are checked when given."""
    if not isinstance(vectors, np.ndarray):
        raise TypeError(f"vectors must be a numpy array, got {type(vectors).__name__}")
    if vectors.dtype != np.float32:
        raise TypeError(f"vectors must have dtype float32, got {vectors.dtype}")
    if vectors.ndim != 2 or vectors.shape[1] < 1:
        raise ValueError(f"vectors must be 2-D (n, d) with d >= 1, got shape {vectors.shape}")
    if n is not None and vectors.shape[0] != n:
        raise ValueError(f"got {n} ids but {vectors.shape[0]} vectors")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"vectors must have d={dim} columns, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contain NaN or infinite values")
    return np.ascontiguousarray(vectors)
