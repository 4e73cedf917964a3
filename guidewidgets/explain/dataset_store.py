"""The zarr store of :func:`~guidewidgets.explain.dataset.explain_dataset`: refuse what it must not
write into, create it, check that a store to resume was written by the same run for the same
images, and agree on all of that across the ranks of a process group."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import MutableMapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .dataset_items import _fingerprint, _reader

# Attributes that must agree between a store and a call for the call to resume it.
_KEYS = ("model", "method", "layer", "target", "options", "length", "image_shape", "dtype", "chunk")


class StoreMismatchError(ValueError):
    """The store holds maps of another model, method or parameters (or other data)."""


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


def open_store(
    store: Any,
    attrs: dict,
    dataset: Any,
    source: Any,
    shape: tuple[int, int],
    *,
    resume: bool,
    overwrite: bool,
    device: torch.device,
) -> Any:
    """The zarr group to write, after rank 0 made it or checked that it can be resumed.

    Args:
        store: a path, a zarr store, or None (memory).
        attrs: what the run records (:data:`_KEYS`); a stored run must agree on all of them.
        dataset: what the user passed (its DataLoader's workers re-read finished chunks).
        source: the map-style dataset behind it.
        shape: the maps' (H, W).
        resume: check finished chunks' images when resuming.
        overwrite: replace this module's arrays in the store.
        device: the model's device (NCCL broadcasts through it).

    Returns:
        The opened group; every rank raises rank 0's error when it had one.
    """
    rank, world = _distributed()
    if world > 1 and (store is None or type(store).__name__ == "MemoryStore"):
        raise ValueError(
            f"{world} processes need one store all of them can write: pass store='path/to/maps.zarr' "
            "(a shared file system or bucket), not an in-memory store"
        )
    where = repr(os.fspath(store)) if isinstance(store, (str, os.PathLike)) else type(store).__name__
    folder = _local_path(store)
    error: tuple[str, str] | None = None
    group = None
    if rank == 0:
        try:
            if folder is not None:
                _check_folder(folder, overwrite)
            group = _open(store, "a")
            old = _stored_attrs(group, where)
            if old is None or overwrite or old.get(_CREATING):
                _create(group, attrs, attrs["length"], shape, attrs["chunk"], attrs["dtype"])
            else:
                _check(old, group, attrs, where)
                if resume:
                    _check_data(group, dataset, source, attrs["chunk"], attrs["length"], where)
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
    return group if rank == 0 else _open(store, "r+")
