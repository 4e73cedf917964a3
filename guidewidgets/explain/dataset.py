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
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Generator, MutableMapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..hooks import eval_mode, model_lock, model_output
from .registry import explain, method_info
from .targets import Target, callable_name

__all__ = ["DatasetMaps", "StoreMismatchError", "explain_dataset", "model_fingerprint"]

TargetSpec = str | int | Callable[[torch.Tensor], torch.Tensor]

# Attributes that must agree between a store and a call for the call to resume it.
_KEYS = ("model", "method", "layer", "target", "options", "length", "image_shape", "dtype", "chunk")


class StoreMismatchError(ValueError):
    """The store holds maps of another model, method or parameters (or other data)."""


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


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's state_dict: names, shapes, dtypes, each tensor's sum and a few
    of its values, rounded so that the same weights on another device give the same hash."""
    h = hashlib.sha256()
    for name, v in model.state_dict().items():
        h.update(f"{name}{tuple(v.shape)}{v.dtype}".encode())
        if v.numel():
            flat = v.detach().flatten()
            picks = flat[:: max(1, flat.numel() // 8)][:8].double().cpu().tolist()
            total = float(flat.double().sum())
            h.update(" ".join(f"{p:.6g}" for p in [total, *picks]).encode())
    return h.hexdigest()[:16]


def _layer_name(model: nn.Module, layer: str | nn.Module | None) -> str | None:
    if layer is None or isinstance(layer, str):
        return layer
    for name, m in model.named_modules():
        if m is layer:
            return name
    raise ValueError("layer is a module that is not part of the model; pass the model's own module or its name")


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except TypeError:
        if isinstance(v, (tuple, list)):
            return [_jsonable(a) for a in v]
        return repr(v)


def _target_key(target: TargetSpec) -> str | int:
    if isinstance(target, bool):
        raise TypeError("target must be 'label', 'pred', an int class index or a callable(output) -> (B,) scores")
    if isinstance(target, str):
        if target not in ("label", "pred"):
            raise ValueError(
                f"target {target!r} is not understood; use 'label' (the dataset's labels), 'pred' (the "
                "model's predicted class), an int class index or a callable(output) -> (B,) scores"
            )
        return target
    if isinstance(target, (int, np.integer)):
        return int(target)
    if callable(target):
        # Why the name only: a callable cannot be compared; its name catches the common mix-up.
        return "callable:" + callable_name(target)
    raise TypeError(
        f"target must be 'label', 'pred', an int class index or a callable(output) -> (B,) scores, got "
        f"{type(target).__name__}"
    )


def _source(dataset: Any) -> Any:
    """The map-style dataset to index (a DataLoader's own dataset)."""
    if isinstance(dataset, torch.utils.data.DataLoader):
        dataset = dataset.dataset
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise TypeError(
            "explain_dataset needs a map-style dataset (with __len__ and __getitem__): chunks are read by "
            "index so that ranks can split them and a resumed run can skip finished ones; wrap the "
            "iterable's items in a list or a map-style Dataset"
        )
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"dataset must be indexable with a length (a torch Dataset, zoo.ShapeScenes, a list of "
            f"(image, label) pairs or a DataLoader over one), got {type(dataset).__name__}"
        )
    return dataset


def _item(item: Any, i: int) -> tuple[torch.Tensor, int | None]:
    """(image (C, H, W), label or None) from a dict with 'image'/'label', an (image, label, ...)
    pair, or a bare image."""
    label: Any = None
    if isinstance(item, dict):
        if "image" not in item:
            raise TypeError(f"dataset item {i} is a dict without 'image'; items need 'image' (C, H, W) and 'label'")
        image, label = item["image"], item.get("label")
    elif isinstance(item, (tuple, list)):
        if not item:
            raise TypeError(f"dataset item {i} is empty; items must be (image, label) pairs or dicts")
        image, label = item[0], (item[1] if len(item) > 1 else None)
    else:
        image = item
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"dataset item {i}'s image is a {type(image).__name__}, not a tensor; add "
            "torchvision.transforms.ToTensor() to the dataset's transform"
        )
    if image.dim() != 3:
        raise ValueError(f"dataset item {i}'s image has shape {tuple(image.shape)}; each image must be (C, H, W)")
    if isinstance(label, torch.Tensor):
        label = int(label) if label.numel() == 1 else None
    return image, (int(label) if label is not None else None)


_OURS = "guidewidgets_explain_dataset"  # the group attribute that marks a store this module wrote
_ARRAYS = ("maps", "targets", "scores", "fingerprints", "done")
_CREATING = "creating"  # in the attributes while _create runs


def _local_path(store: Any) -> str | None:
    """The folder of a store given as a local path (a str without ``://`` or a PathLike), else None."""
    if isinstance(store, os.PathLike):
        return os.fspath(store)  # type: ignore[return-value]
    if isinstance(store, str) and "://" not in store:
        return store
    if type(store).__name__ == "LocalStore":  # a zarr.storage.LocalStore: checked as the folder it is
        return os.fspath(store.root)
    return None


def _group_attrs(folder: str) -> dict | None:
    """The attributes of the zarr group in ``folder``, or None when it holds no zarr group."""
    try:
        with open(os.path.join(folder, "zarr.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    return meta.get("attributes") or {}


def _check_folder(folder: str, overwrite: bool) -> None:
    """Refuse a folder this module must not write into: an empty path (the working folder), a
    file, or an existing folder it did not write (an empty one is taken with ``overwrite=True``;
    one with files never, since overwriting would delete them)."""
    if not folder.strip():
        raise ValueError(
            "store is an empty path, which would scatter the store's files over the working folder; give a "
            "new folder such as store='maps.zarr', or store=None to keep the maps in memory"
        )
    if not os.path.lexists(folder):
        return
    if not os.path.isdir(folder):
        raise ValueError(f"the store {folder!r} is a file, not a folder; give a new folder such as store='maps.zarr'")
    entries = sorted(os.listdir(folder))
    attrs = _group_attrs(folder)
    if attrs is not None and (_OURS in attrs or (entries == ["zarr.json"] and not attrs)):
        return  # a store of ours, or the empty group that a run killed while creating one left
    if entries:
        shown = ", ".join(repr(e) for e in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise StoreMismatchError(
            f"the folder {folder!r} holds other data ({shown}), not maps from explain_dataset; use a new path "
            "(explain_dataset never deletes files it did not write, even with overwrite=True)"
        )
    if not overwrite:
        raise StoreMismatchError(
            f"the folder {folder!r} exists but is empty, not a store from explain_dataset; use a new path, or "
            "pass overwrite=True to write the store into it"
        )


def _open(store: Any, mode: Literal["r+", "a"]) -> Any:
    try:
        import zarr  # lazily: `import guidewidgets` works without zarr
    except ImportError:
        raise ImportError("explain_dataset writes maps with zarr 3: pip install 'zarr>=3'") from None

    if store is None:
        return zarr.open_group(zarr.storage.MemoryStore(), mode="a")
    from zarr.abc.store import Store
    from zarr.storage import StorePath

    if not isinstance(store, (str, os.PathLike, MutableMapping, Store, StorePath)):
        raise TypeError(
            f"store must be a folder path such as 'maps.zarr', a zarr store (or fsspec URL) or None for memory, got "
            f"{type(store).__name__}"
        )
    return zarr.open_group(os.fspath(store) if isinstance(store, os.PathLike) else store, mode=mode)


def _create(group: Any, attrs: dict, n: int, shape: tuple[int, int], chunk: int, dtype: str) -> None:
    nchunks = math.ceil(n / chunk)
    # Why mark first: a run killed while the arrays are replaced leaves a store that the next call
    # recreates, never old done flags beside new empty maps.
    group.attrs.update({_OURS: {_CREATING: True}})
    # Why overwrite array by array, never the whole group: only what this module wrote is replaced.
    group.create_array("maps", shape=(n, *shape), chunks=(chunk, *shape), dtype=dtype, fill_value=0, overwrite=True)
    group.create_array("targets", shape=(n,), chunks=(chunk,), dtype="int64", fill_value=-1, overwrite=True)
    group.create_array("scores", shape=(n,), chunks=(chunk,), dtype="float32", fill_value=float("nan"), overwrite=True)
    # Hashes of each chunk's first and last item, so a resumed run skips a chunk only for the same images.
    group.create_array("fingerprints", shape=(nchunks, 2), chunks=(1, 2), dtype="int64", fill_value=0, overwrite=True)
    # Why one flag per zarr chunk: ranks set their own flags without touching another's file.
    group.create_array("done", shape=(nchunks,), chunks=(1,), dtype="bool", fill_value=False, overwrite=True)
    group.attrs.update({_OURS: attrs})


def _stored_attrs(group: Any, where: str) -> dict | None:
    """The attributes explain_dataset recorded in ``group``; None for an empty group; a
    StoreMismatchError for a group with other data (it is never overwritten)."""
    old = dict(group.attrs).get(_OURS)
    if old is None and (len(list(group.keys())) or dict(group.attrs)):
        raise StoreMismatchError(
            f"the store at {where} holds other data, not maps from explain_dataset; use a new path "
            "(explain_dataset never deletes data it did not write, even with overwrite=True)"
        )
    return old


def _check(old: dict, group: Any, attrs: dict, where: str) -> None:
    diff = [k for k in _KEYS if _jsonable(old.get(k)) != _jsonable(attrs[k])]
    if diff:
        what = "; ".join(f"{k}: store has {old.get(k)!r}, this call {attrs[k]!r}" for k in diff)
        raise StoreMismatchError(
            f"the store at {where} was written by another run ({what}); resuming it would mix maps. "
            "Use a new store path, or pass overwrite=True to discard it and start again"
        )
    if any(a not in group for a in _ARRAYS):
        raise StoreMismatchError(
            f"the store at {where} was written by an older guidewidgets that did not record which images it "
            "explained, so its maps cannot be matched to this dataset; use a new path or pass overwrite=True"
        )


def _fingerprint(item: Any, i: int) -> int:
    """A 64-bit hash of dataset item ``i``'s image (shape, dtype, bytes) and label."""
    image, label = _item(item, i)
    h = hashlib.sha256(f"{tuple(image.shape)} {image.dtype} {label}".encode())
    h.update(image.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little", signed=True)


def _check_data(group: Any, dataset: Any, source: Any, chunk: int, n: int, where: str) -> None:
    """Refuse a store whose finished chunks were written for other images: each finished chunk's
    first and last item are read again (through the loader's workers when it has some) and
    compared with the hashes recorded when the chunk was written."""
    finished = np.flatnonzero(np.asarray(group["done"][:], dtype=bool))
    if not len(finished):
        return
    stored = np.asarray(group["fingerprints"][:])
    plan = [sorted({int(k) * chunk, min(n, (int(k) + 1) * chunk) - 1}) for k in finished]
    batches = _reader(dataset, source, plan)
    try:
        for k, (idx, items) in zip(finished, batches):
            got = [_fingerprint(item, i) for i, item in zip(idx, items)]
            for which, i, want, have in (
                ("first", idx[0], stored[k, 0], got[0]),
                ("last", idx[-1], stored[k, 1], got[-1]),
            ):
                if want != have:
                    raise StoreMismatchError(
                        f"the store at {where} was written for other images (chunk {k}'s {which} image, item {i}, "
                        "differs); use a new path or overwrite=True. (A dataset with a random transform gives other "
                        "images at every read: make it deterministic to resume)"
                    )
    finally:
        batches.close()


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


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
    tkey = _target_key(target)
    first, _ = _item(source[0], 0)
    c, h, w = (int(s) for s in first.shape)
    attrs = {
        "model": model_fingerprint(model),
        "method": name,
        "layer": _layer_name(model, layer),
        "target": tkey,
        "options": _jsonable(opts),
        "length": n,
        "image_shape": [c, h, w],
        "dtype": dtype,
        "chunk": chunk,
    }
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    rank, world = _distributed()
    if world > 1 and (store is None or type(store).__name__ == "MemoryStore"):
        raise ValueError(
            f"{world} processes need one store all of them can write: pass store='path/to/maps.zarr' "
            "(a shared file system or bucket), not an in-memory store"
        )
    where = repr(os.fspath(store)) if isinstance(store, (str, os.PathLike)) else type(store).__name__
    folder = _local_path(store)

    # Rank 0 makes or checks the store; the others learn the outcome (an error stops every rank).
    error: tuple[str, str] | None = None
    if rank == 0:
        try:
            if folder is not None:
                _check_folder(folder, overwrite)
            group = _open(store, "a")
            old = _stored_attrs(group, where)
            if old is None or overwrite or old.get(_CREATING):
                _create(group, attrs, n, (h, w), chunk, dtype)
            else:
                _check(old, group, attrs, where)
                if resume:
                    _check_data(group, dataset, source, chunk, n, where)
        except (ValueError, TypeError) as e:
            error = (type(e).__name__, str(e))
    if world > 1:
        box = [error]
        # Why the model's device: NCCL sends objects through a tensor on the rank's own GPU.
        torch.distributed.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
        error = box[0]
    if error is not None:
        kinds: dict[str, type[Exception]] = {"StoreMismatchError": StoreMismatchError, "TypeError": TypeError}
        raise kinds.get(error[0], ValueError)(error[1])
    if rank != 0:
        group = _open(store, "r+")
    maps, targets, scores, done = group["maps"], group["targets"], group["scores"], group["done"]
    fingerprints = group["fingerprints"]
    nchunks = done.shape[0]
    finished = np.asarray(done[:], dtype=bool) if resume else np.zeros(nchunks, dtype=bool)
    if world > 1:
        torch.distributed.barrier()  # Why: every rank reads the flags before any rank sets one
    todo = [k for k in range(nchunks) if not finished[k]]
    mine = todo[rank::world]
    skipped = [k for k in range(nchunks) if finished[k]]

    t0 = time.perf_counter()
    spent = 0.0
    plan = [
        range(b0, min(k * chunk + chunk, n, b0 + batch_size))
        for k in mine
        for b0 in range(k * chunk, min(n, (k + 1) * chunk), batch_size)
    ]
    batches = _reader(dataset, source, plan)
    try:
        for step, k in enumerate(mine):
            start, stop = k * chunk, min(n, (k + 1) * chunk)
            parts: list[np.ndarray] = []
            t_parts: list[torch.Tensor] = []
            s_parts: list[torch.Tensor] = []
            ends: list[int] = []  # hashes of the chunk's first and last item
            for b0 in range(start, stop, batch_size):
                idx, items = next(batches)
                assert idx[0] == b0
                if b0 == start:
                    ends.append(_fingerprint(items[0], idx[0]))
                if idx[-1] == stop - 1:
                    ends.append(_fingerprint(items[-1], idx[-1]))
                m, t, s, dt = _explain_batch(model, items, idx, name, target, layer, opts, device, (c, h, w))
                spent += dt
                parts.append(m)
                t_parts.append(t)
                s_parts.append(s)
            block = np.concatenate(parts)
            if block.shape[1:] != (h, w):
                raise ValueError(f"{name!r} returned maps of size {block.shape[1:]}, not the image size {(h, w)}")
            cast = block.astype(dtype)
            if dtype == "float16" and not np.isfinite(cast).all() and np.isfinite(block).all():
                raise ValueError(f"{name!r}'s maps overflow float16 (|value| > 65504); use dtype='float32'")
            maps[start:stop] = cast
            targets[start:stop] = torch.cat(t_parts).numpy()
            scores[start:stop] = torch.cat(s_parts).numpy()
            fingerprints[k] = ends
            done[k] = True  # last: a chunk killed before this line counts as not done
            if progress is not None:
                progress((step + 1) / len(mine))
    finally:
        batches.close()  # Why: stops a loader's workers at once when a chunk fails or is interrupted
    total = time.perf_counter() - t0
    if world > 1:
        torch.distributed.barrier()
    return DatasetMaps(group, maps, targets, scores, done, list(mine), skipped, spent, total)


def _as_list(items: list) -> list:
    return items


def _reader(
    dataset: Any, source: Any, plan: Sequence[Sequence[int]]
) -> Generator[tuple[Sequence[int], list], None, None]:
    """(indices, items) for each planned batch; through a DataLoader with the given loader's
    workers when it has some (so that decoding overlaps the model), else read here."""
    workers = dataset.num_workers if isinstance(dataset, torch.utils.data.DataLoader) else 0
    if workers > 0:
        loader = torch.utils.data.DataLoader(
            source,
            batch_sampler=[list(r) for r in plan],
            num_workers=workers,
            collate_fn=_as_list,
            multiprocessing_context=dataset.multiprocessing_context,
            worker_init_fn=dataset.worker_init_fn,
        )
        yield from zip(plan, loader)
    else:
        for r in plan:
            yield r, [source[i] for i in r]


def _explain_batch(
    model: nn.Module,
    items: list,
    idx: Sequence[int],
    name: str,
    target: TargetSpec,
    layer: str | nn.Module | None,
    opts: dict[str, Any],
    device: torch.device,
    shape: tuple[int, int, int],
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, float]:
    """Maps (B, H, W) as float32 numpy, the classes explained (B,), the clean scores (B,) and the
    seconds the method took."""
    images, labels = [], []
    for i, item in zip(idx, items):
        image, label = _item(item, i)
        if tuple(image.shape) != shape:
            raise ValueError(
                f"dataset item {i}'s image is {tuple(image.shape)} but item 0's is {shape}; every image must "
                "have one size (resize in the dataset's transform)"
            )
        images.append(image)
        labels.append(label)
    x = torch.stack(images).to(device)
    p = next(model.parameters(), None)
    if p is not None and p.is_floating_point() and x.is_floating_point():
        x = x.to(p.dtype)
    b = len(idx)
    with model_lock(model), eval_mode(model), torch.no_grad():
        out = model_output(model(x))
    if callable(target) and not isinstance(target, str):
        t = Target(target, b)
        classes = torch.full((b,), -1, dtype=torch.long)
        explained: Any = target
    else:
        if target == "label":
            if any(v is None for v in labels):
                raise ValueError(
                    "target='label' needs a label in every dataset item (a dict with 'label' or an (image, "
                    "label) pair); use target='pred' to explain the predicted class"
                )
            t = Target(torch.tensor(labels), b)
        elif target == "pred":
            t = Target(None, b)
        else:
            t = Target(int(target), b)  # type: ignore[arg-type]
        t = t.fix(out)
        assert t.fixed is not None
        explained = t.fixed
        classes = t.fixed.detach().cpu()
    score = t.scores(out).detach().float().cpu()
    t0 = time.perf_counter()
    maps = explain(model, x, name, explained, layer, **opts).detach()
    dt = time.perf_counter() - t0
    return maps.float().cpu().numpy(), classes, score, dt
