"""Explain a whole dataset: maps streamed to a chunked zarr store, resumable, sharded over processes.

>>> from guidewidgets import zoo
>>> from guidewidgets.explain.dataset import explain_dataset
>>> model, data = zoo.load("shapes-classifier"), zoo.ShapeScenes(100, seed=1)
>>> out = explain_dataset(model, data, "grad-cam", store="maps.zarr")     # resumes if interrupted
>>> out.maps[:10]                                                         # (10, H, W) numpy

Under ``torchrun`` (a ``torch.distributed`` process group initialised: gloo on CPU, NCCL on
GPU) the same call in every process splits the chunks between the ranks, so a cluster explains
ImageNet-val the way one CPU explains 100 scenes.

Why zarr rather than HDF5: every chunk is its own object (a file, or a key in a cloud bucket),
so several processes, on one machine or many, write distinct chunks concurrently with no lock
and no parallel-HDF5 (MPI) build; a half-written run is just a store with some chunks missing,
which is what resumption needs; and the same code writes to S3/GCS through fsspec stores.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .dataset_items import TargetSpec, _explain_batch, _fingerprint, _item, _reader, _source, _target_key
from .dataset_store import StoreMismatchError, _distributed, _jsonable, _layer_name, model_fingerprint, open_store
from .registry import method_info

__all__ = ["DatasetMaps", "StoreMismatchError", "explain_dataset", "model_fingerprint"]


@dataclasses.dataclass
class DatasetMaps:
    """What :func:`explain_dataset` wrote: the zarr ``group`` and its arrays ``maps`` (N, H, W),
    ``targets`` (N,) (the class explained; -1 for a callable target), ``scores`` (N,) (the
    model's score for that target on the clean image) and ``done`` (one flag per chunk);
    ``computed`` / ``skipped``: the chunk indices this process computed / found already done;
    ``seconds``: this process's time in the method's calls (the maps alone); ``total_seconds``:
    its time in those chunks (reading images, scoring, maps, writing), setup excluded."""

    group: Any
    maps: Any
    targets: Any
    scores: Any
    done: Any
    computed: list[int]
    skipped: list[int]
    seconds: float = 0.0
    total_seconds: float = 0.0

    def tensor(self) -> torch.Tensor:
        """All maps as one float32 tensor (N, H, W) (reads the whole store into memory)."""
        return torch.from_numpy(np.asarray(self.maps[:], dtype=np.float32))


def _check_args(
    dataset: Any,
    batch_size: int | None,
    chunk: int | None,
    dtype: str,
    options: dict[str, Any] | None,
    progress: Callable[[float], None] | None,
) -> tuple[int, int, dict[str, Any]]:
    """(batch_size, chunk, the method's options) with the defaults filled in, after the checks."""
    if batch_size is None:
        loader_bs = getattr(dataset, "batch_size", None) if isinstance(dataset, torch.utils.data.DataLoader) else None
        batch_size = int(loader_bs) if loader_bs else 8
    for key, v in (("batch_size", batch_size), ("chunk", chunk)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"{key} must be a positive int, got {v!r}")
    chunk = int(chunk) if chunk is not None else int(batch_size)
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of the method's keywords, e.g. {{'window': 16}}, got {options!r}")
    if progress is not None and not callable(progress):
        raise TypeError("progress must be a callable(fraction) or None")
    opts = dict(options or {})
    if "progress" in opts:
        raise ValueError("pass progress to explain_dataset itself, not in options")
    return int(batch_size), chunk, opts


def _record(
    model: nn.Module,
    name: str,
    layer: str | nn.Module | None,
    tkey: str | int,
    opts: dict[str, Any],
    n: int,
    image_shape: list[int],
    dtype: str,
    chunk: int,
) -> dict[str, Any]:
    """What the store records about the run (the keys a resumed call must agree on)."""
    return {
        "model": model_fingerprint(model),
        "method": name,
        "layer": _layer_name(model, layer),
        "target": tkey,
        "options": _jsonable(opts),
        "length": n,
        "image_shape": image_shape,
        "dtype": dtype,
        "chunk": chunk,
    }


def _my_chunks(done: Any, resume: bool) -> tuple[list[int], list[int]]:
    """(this process's chunks to compute, the chunks already done): every world-size-th unfinished
    chunk, chunk-aligned, so no chunk is written by two ranks."""
    rank, world = _distributed()
    nchunks = done.shape[0]
    finished = np.asarray(done[:], dtype=bool) if resume else np.zeros(nchunks, dtype=bool)
    if world > 1:
        torch.distributed.barrier()  # Why: every rank reads the flags before any rank sets one
    todo = [k for k in range(nchunks) if not finished[k]]
    return todo[rank::world], [k for k in range(nchunks) if finished[k]]


@dataclasses.dataclass
class _Run:
    """One call's fixed settings, as the chunk loop needs them."""

    model: nn.Module
    name: str
    target: TargetSpec
    layer: str | nn.Module | None
    opts: dict[str, Any]
    device: torch.device
    shape: tuple[int, int, int]
    n: int
    chunk: int
    batch_size: int
    dtype: str


def _write_chunk(run: _Run, arrays: dict[str, Any], k: int, batches: Any) -> float:
    """Explain chunk ``k`` batch by batch and write it; its done flag last. Returns the seconds
    spent in the method's calls."""
    _, h, w = run.shape
    start, stop = k * run.chunk, min(run.n, (k + 1) * run.chunk)
    parts: list[np.ndarray] = []
    t_parts: list[torch.Tensor] = []
    s_parts: list[torch.Tensor] = []
    ends: list[int] = []  # hashes of the chunk's first and last item
    spent = 0.0
    for b0 in range(start, stop, run.batch_size):
        idx, items = next(batches)
        assert idx[0] == b0
        if b0 == start:
            ends.append(_fingerprint(items[0], idx[0]))
        if idx[-1] == stop - 1:
            ends.append(_fingerprint(items[-1], idx[-1]))
        m, t, s, dt = _explain_batch(
            run.model, items, idx, run.name, run.target, run.layer, run.opts, run.device, run.shape
        )
        spent += dt
        parts.append(m)
        t_parts.append(t)
        s_parts.append(s)
    block = np.concatenate(parts)
    if block.shape[1:] != (h, w):
        raise ValueError(f"{run.name!r} returned maps of size {block.shape[1:]}, not the image size {(h, w)}")
    cast = block.astype(run.dtype)
    if run.dtype == "float16" and not np.isfinite(cast).all() and np.isfinite(block).all():
        raise ValueError(f"{run.name!r}'s maps overflow float16 (|value| > 65504); use dtype='float32'")
    arrays["maps"][start:stop] = cast
    arrays["targets"][start:stop] = torch.cat(t_parts).numpy()
    arrays["scores"][start:stop] = torch.cat(s_parts).numpy()
    arrays["fingerprints"][k] = ends
    arrays["done"][k] = True  # last: a chunk killed before this line counts as not done
    return spent


def _run_chunks(
    run: _Run,
    arrays: dict[str, Any],
    dataset: Any,
    source: Any,
    mine: list[int],
    progress: Callable[[float], None] | None,
) -> tuple[float, float]:
    """Compute this process's chunks in order. Returns (seconds in the method's calls, total seconds)."""
    t0 = time.perf_counter()
    spent = 0.0
    n, chunk, batch_size = run.n, run.chunk, run.batch_size
    plan = [
        range(b0, min(k * chunk + chunk, n, b0 + batch_size))
        for k in mine
        for b0 in range(k * chunk, min(n, (k + 1) * chunk), batch_size)
    ]
    batches = _reader(dataset, source, plan)
    try:
        for step, k in enumerate(mine):
            spent += _write_chunk(run, arrays, k, batches)
            if progress is not None:
                progress((step + 1) / len(mine))
    finally:
        batches.close()  # Why: stops a loader's workers at once when a chunk fails or is interrupted
    return spent, time.perf_counter() - t0


def explain_dataset(
    model: nn.Module,
    dataset: Any,
    method: str,
    store: Any = None,
    *,
    target: TargetSpec = "label",
    layer: str | nn.Module | None = None,
    batch_size: int | None = None,
    chunk: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    dtype: str = "float32",
    options: dict[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
) -> DatasetMaps:
    """Explain every image of ``dataset`` with ``method`` and write the maps to a zarr ``store``.

    ``dataset``: a map-style dataset (or a DataLoader over one: its batch size is the default,
    its workers read the images, its sampler and collate_fn are not used: maps are in dataset
    order) whose items are dicts with ``image``
    (C, H, W) and ``label`` (as zoo.ShapeScenes gives), ``(image, label)`` pairs, or bare images.
    All images must share one size. ``store``: a path (or any zarr store, e.g. an fsspec one for
    a bucket); None keeps the maps in memory (one process only). ``target``: ``"label"`` (the
    dataset's labels), ``"pred"`` (the model's predicted class), an int, or a callable(output)
    -> (B,) scores. ``layer`` and ``options`` (the method's own keywords, e.g. ``{"window": 16}``)
    go to :func:`~guidewidgets.explain.explain`. Images go to the model's device in batches of
    ``batch_size`` (default 8); ``chunk`` images (default ``batch_size``) make one zarr chunk,
    the unit of resumption and of sharding. ``dtype``: ``"float32"`` or ``"float16"`` maps.

    The store records the model's fingerprint (:func:`model_fingerprint`), method, layer,
    target, options, dataset length, image shape, dtype and chunk, and for each chunk a hash of
    its first and last item (image and label). With ``resume`` (default) a store written by the
    same run keeps its finished chunks and only the others are computed (each finished chunk's
    first and last item are read again and must hash the same); a store from another model,
    method, parameters or images is refused with a :class:`StoreMismatchError` (a ValueError;
    use a new path or ``overwrite=True``). ``resume=False`` recomputes every chunk. A chunk's
    maps, targets, scores and hashes are written before its done flag, so a run killed
    mid-chunk recomputes that chunk.

    A path ``store`` must be a new folder or one this function wrote: an empty path, a file or
    another folder is refused (an existing empty folder is taken with ``overwrite=True``), and
    ``overwrite=True`` replaces only this function's own arrays, so it never deletes a user's files.

    With a ``torch.distributed`` process group initialised, rank 0 creates (or checks) the store,
    every rank takes every world-size-th unfinished chunk (chunk-aligned, so no chunk is written
    by two ranks) and all ranks wait at a barrier at the end; the store must then be a path all
    ranks can reach. ``progress(fraction)`` is called after each of this process's chunks.

    Why zarr, not HDF5: ranks on several machines write their own chunks at once without a lock
    or a parallel-HDF5 (MPI) build, and the store may live in a bucket (see the module docstring).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name = method_info(method).name
    source = _source(dataset)
    n = len(source)
    if n == 0:
        raise ValueError("the dataset is empty; explain_dataset needs at least one image")
    batch_size, chunk, opts = _check_args(dataset, batch_size, chunk, dtype, options, progress)
    tkey = _target_key(target)
    first, _ = _item(source[0], 0)
    c, h, w = (int(s) for s in first.shape)
    attrs = _record(model, name, layer, tkey, opts, n, [c, h, w], dtype, chunk)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    group = open_store(store, attrs, dataset, source, (h, w), resume=resume, overwrite=overwrite, device=device)
    arrays = {a: group[a] for a in ("maps", "targets", "scores", "fingerprints", "done")}
    mine, skipped = _my_chunks(arrays["done"], resume)
    run = _Run(model, name, target, layer, opts, device, (c, h, w), n, chunk, batch_size, dtype)
    spent, total = _run_chunks(run, arrays, dataset, source, mine, progress)
    if _distributed()[1] > 1:
        torch.distributed.barrier()
    a = arrays
    return DatasetMaps(group, a["maps"], a["targets"], a["scores"], a["done"], list(mine), skipped, spent, total)
