"""explain_dataset: zarr store, resumption, torch.distributed sharding (2 gloo processes == 1), errors."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from guidewidgets import explain, zoo
from guidewidgets.explain.dataset import explain_dataset, model_fingerprint

pytest.importorskip("zarr")

N, CHUNK = 48, 8


@pytest.fixture(scope="module")
def model():
    return zoo.load("shapes-classifier")


@pytest.fixture(scope="module")
def data():
    return zoo.ShapeScenes(N, seed=11)


def _counted(model: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    seen = [0]

    def count(_m, args):
        seen[0] += int(args[0].shape[0])

    return seen, model.register_forward_pre_hook(count)


def test_maps_targets_scores_equal_explain(model, data, tmp_path):
    out = explain_dataset(model, data, "grad-cam", tmp_path / "m.zarr", chunk=CHUNK, batch_size=4)
    x = torch.stack([data[i]["image"] for i in range(N)])
    labels = torch.tensor([data[i]["label"] for i in range(N)])
    ref = explain.explain(model, x, "grad-cam", labels)
    torch.testing.assert_close(out.tensor(), ref, rtol=1e-5, atol=1e-6)
    assert np.array_equal(out.targets[:], labels.numpy())
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(torch.from_numpy(out.scores[:]), logits.gather(1, labels[:, None])[:, 0])
    assert out.done[:].all() and out.computed == list(range(N // CHUNK)) and out.skipped == []
    attrs = dict(out.group.attrs)["guidewidgets_explain_dataset"]
    assert attrs["method"] == "grad-cam" and attrs["length"] == N and attrs["model"] == model_fingerprint(model)


def test_resume_skips_finished_chunks(model, data, tmp_path):
    # An uninterrupted run: how many images the model sees for the whole dataset.
    seen, handle = _counted(model)
    try:
        full = explain_dataset(model, data, "grad-cam", tmp_path / "full.zarr", chunk=CHUNK).tensor()
        per_image = seen[0] / N
        calls = []

        def stop_after_two(f: float) -> None:
            calls.append(f)
            if len(calls) == 2:
                raise KeyboardInterrupt("simulated kill")

        with pytest.raises(KeyboardInterrupt):
            explain_dataset(model, data, "grad-cam", tmp_path / "cut.zarr", chunk=CHUNK, progress=stop_after_two)
        seen[0] = 0
        again = explain_dataset(model, data, "grad-cam", tmp_path / "cut.zarr", chunk=CHUNK)
        assert again.skipped == [0, 1] and again.computed == [2, 3, 4, 5]
        assert seen[0] == per_image * (N - 2 * CHUNK)  # finished chunks cost no forward
        assert torch.equal(again.tensor(), full)
        seen[0] = 0
        done = explain_dataset(model, data, "grad-cam", tmp_path / "cut.zarr", chunk=CHUNK)
        assert done.computed == [] and seen[0] == 0
        redo = explain_dataset(model, data, "grad-cam", tmp_path / "cut.zarr", chunk=CHUNK, resume=False)
        assert redo.computed == list(range(N // CHUNK)) and seen[0] == per_image * N
    finally:
        handle.remove()


def test_store_from_another_run_is_refused(model, data, tmp_path):
    path = tmp_path / "m.zarr"
    small = zoo.ShapeScenes(8, seed=11)
    explain_dataset(model, small, "grad-cam", path)
    with pytest.raises(ValueError, match=r"method: store has 'grad-cam'.*overwrite=True"):
        explain_dataset(model, small, "saliency", path)
    with pytest.raises(ValueError, match="target"):
        explain_dataset(model, small, "grad-cam", path, target="pred")
    with pytest.raises(ValueError, match="length"):
        explain_dataset(model, zoo.ShapeScenes(9, seed=11), "grad-cam", path)
    other = zoo.load("shapes-classifier")
    with torch.no_grad():
        next(other.parameters()).mul_(1.01)
    assert model_fingerprint(other) != model_fingerprint(model)
    with pytest.raises(ValueError, match="model: store has"):
        explain_dataset(other, small, "grad-cam", path)
    fresh = explain_dataset(model, small, "saliency", path, overwrite=True)
    assert fresh.computed == [0] and dict(fresh.group.attrs)["guidewidgets_explain_dataset"]["method"] == "saliency"
    import zarr

    zarr.open_group(str(tmp_path / "x.zarr"), mode="w").create_array("other", shape=(2,), dtype="int8")
    with pytest.raises(ValueError, match="holds other data"):
        explain_dataset(model, small, "grad-cam", tmp_path / "x.zarr")


def test_options_mismatch_names_the_option(model, tmp_path):
    small = zoo.ShapeScenes(2, seed=11)
    explain_dataset(model, small, "occlusion", tmp_path / "o.zarr", options={"window": 48, "stride": 48})
    with pytest.raises(ValueError, match=r"options: store has \{'window': 48"):
        explain_dataset(model, small, "occlusion", tmp_path / "o.zarr", options={"window": 32, "stride": 48})


class _Iterable(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield torch.zeros(3, 96, 96)


def test_wrong_inputs_are_named(model, data, tmp_path):
    with pytest.raises(TypeError, match="indexable"):
        explain_dataset(model, 5, "grad-cam")
    with pytest.raises(TypeError, match="map-style"):
        explain_dataset(model, _Iterable(), "grad-cam")
    with pytest.raises(ValueError, match="empty"):
        explain_dataset(model, [], "grad-cam")
    with pytest.raises(ValueError, match="Unknown explanation method"):
        explain_dataset(model, data, "grad-cma")
    with pytest.raises(ValueError, match="'label' .*'pred'"):
        explain_dataset(model, data, "grad-cam", target="labels")
    with pytest.raises(ValueError, match="target='pred'"):
        explain_dataset(model, [torch.rand(3, 96, 96)] * 2, "grad-cam")
    with pytest.raises(TypeError, match="ToTensor"):
        explain_dataset(model, [("not an image", 1)], "grad-cam")
    with pytest.raises(ValueError, match="one size"):
        explain_dataset(model, [(torch.rand(3, 96, 96), 1), (torch.rand(3, 112, 112), 1)], "grad-cam")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        explain_dataset(model, [(torch.rand(96, 96), 1)], "grad-cam")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        explain_dataset(model, data, "grad-cam", batch_size=0)
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        explain_dataset(model, data, "grad-cam", chunk=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dtype must be"):
        explain_dataset(model, data, "grad-cam", dtype="float64")
    with pytest.raises(TypeError, match="options must be a dict"):
        explain_dataset(model, data, "occlusion", options=[16])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="has no option 'windw'"):
        explain_dataset(model, [(data[0]["image"], 0)], "occlusion", options={"windw": 16})
    with pytest.raises(ValueError, match="out of range"):
        explain_dataset(model, [(data[0]["image"], 0)], "grad-cam", target=99)
    with pytest.raises(TypeError, match="model must be"):
        explain_dataset("model", data, "grad-cam")  # type: ignore[arg-type]


def test_targets_loader_memory_store_and_float16(model, data):
    sub = torch.utils.data.Subset(data, range(12))
    loader = torch.utils.data.DataLoader(sub, batch_size=5)
    pred = explain_dataset(model, loader, "saliency", target="pred")
    x = torch.stack([data[i]["image"] for i in range(12)])
    with torch.no_grad():
        want = model(x).argmax(1)
    assert np.array_equal(pred.targets[:], want.numpy()) and pred.maps.chunks[0] == 5
    torch.testing.assert_close(pred.tensor(), explain.explain(model, x, "saliency"), rtol=1e-5, atol=1e-7)
    half = explain_dataset(model, sub, "saliency", target=2, dtype="float16")
    assert half.maps.dtype == np.float16 and (half.targets[:] == 2).all()
    torch.testing.assert_close(half.tensor(), explain.explain(model, x, "saliency", 2), rtol=2e-3, atol=1e-5)

    def circle_minus_square(out: torch.Tensor) -> torch.Tensor:
        return out[:, 0] - out[:, 2]

    fn = explain_dataset(model, sub, "grad-cam", target=circle_minus_square)
    assert (fn.targets[:] == -1).all()
    torch.testing.assert_close(fn.tensor(), explain.explain(model, x, "grad-cam", circle_minus_square))
    attrs = dict(fn.group.attrs)["guidewidgets_explain_dataset"]
    assert attrs["target"].endswith("circle_minus_square") and json.dumps(attrs)


class _ReadLog(torch.utils.data.Dataset):
    """Items of ``base``; each read leaves a file named after the reading process's id."""

    def __init__(self, base, log_dir):
        self.base, self.log_dir = base, log_dir

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        (self.log_dir / f"{os.getpid()}-{i}").touch()
        return self.base[i]


def test_loader_workers_read_the_images(model, data, tmp_path):
    sub = torch.utils.data.Subset(data, range(10))
    plain = explain_dataset(model, sub, "grad-cam", chunk=4, batch_size=3)
    reads = tmp_path / "reads"
    reads.mkdir()
    loader = torch.utils.data.DataLoader(_ReadLog(sub, reads), batch_size=3, num_workers=2, shuffle=True)
    calls = []

    def stop_after_one(f: float) -> None:
        calls.append(f)
        raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):  # the loader's workers stop with the run
        explain_dataset(model, loader, "grad-cam", tmp_path / "w.zarr", chunk=4, progress=stop_after_one)
    out = explain_dataset(model, loader, "grad-cam", tmp_path / "w.zarr", chunk=4)
    assert out.skipped == [0] and out.computed == [1, 2]
    assert torch.equal(out.tensor(), plain.tensor())  # dataset order, whatever the loader's sampler
    log = [tuple(map(int, f.name.split("-"))) for f in reads.iterdir()]
    here = {i for pid, i in log if pid == os.getpid()}
    assert here <= {0}, here  # this process reads item 0 only (for the image size)
    assert {i for pid, i in log if pid != os.getpid()} == set(range(10))  # the workers read the rest


def test_runs_on_the_models_device_and_dtype(data):
    # Device-agnostic: images go to the model's device and floating dtype (CUDA when present).
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    pairs = [(torch.rand(3, 96, 96), 1) for _ in range(3)]
    for device in devices:
        m = zoo.load("shapes-classifier").to(device=device, dtype=torch.float64)
        out = explain_dataset(m, pairs, "grad-cam", chunk=2)
        x = torch.stack([p[0] for p in pairs]).to(device=device, dtype=torch.float64)
        ref = explain.explain(m, x, "grad-cam", [1, 1, 1]).float().cpu()
        torch.testing.assert_close(out.tensor(), ref)


# --- torch.distributed: 2 gloo processes == 1 process --------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Each run: (method, options); grad-cam (a gradient method) and RISE (a perturbation method).
RUNS = [("grad-cam", {}), ("rise", {"masks": 40})]


def _worker(rank: int, world: int, port: int, root: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, data = zoo.load("shapes-classifier"), zoo.ShapeScenes(N, seed=11)
        report = []
        for method, options in RUNS:
            # The second call finds every chunk done.
            for _ in range(2):
                res = explain_dataset(model, data, method, f"{root}/{method}.zarr", chunk=CHUNK, options=options)
                report.append({"computed": res.computed, "skipped": res.skipped})
        with open(f"{root}/rank{rank}.json", "w") as f:
            json.dump(report, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_two_processes_match_one(model, data, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    import zarr

    for j, (method, options) in enumerate(RUNS):
        first = [ranks[r][2 * j] for r in range(2)]
        a, b = set(first[0]["computed"]), set(first[1]["computed"])
        assert a and b and not a & b and a | b == set(range(N // CHUNK))  # each chunk by exactly one rank
        again = [ranks[r][2 * j + 1] for r in range(2)]
        assert all(g["computed"] == [] and g["skipped"] == list(range(N // CHUNK)) for g in again)
        one = explain_dataset(model, data, method, tmp_path / f"one-{method}.zarr", chunk=CHUNK, options=options)
        two = zarr.open_group(str(tmp_path / f"{method}.zarr"), mode="r")
        assert two["done"][:].all()
        assert np.array_equal(two["maps"][:], one.maps[:]), method  # bitwise: same batches, same arithmetic
        assert np.array_equal(two["targets"][:], one.targets[:]) and np.array_equal(two["scores"][:], one.scores[:])


# --- the metrics scoreboard makes its maps through explain_dataset ----------------------------------


def test_scoreboard_through_the_engine_equals_evaluate_and_resumes(model, tmp_path, capsys):
    from guidewidgets.metrics import scoreboard
    from guidewidgets.metrics.evaluate import evaluate

    names, metrics = ["grad-cam", "saliency"], ["pointing-game", "deletion"]
    table = scoreboard.scoreboard(4, names, metrics, quick=True, store=tmp_path)
    direct = evaluate(model, zoo.ShapeScenes(4, seed=scoreboard.HELD_OUT_SEED), names, metrics, steps=8)
    assert list(table["method"]) == list(direct["method"]) and list(table["metric"]) == list(direct["metric"])
    assert np.array_equal(table["value"].to_numpy(), direct["value"].to_numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grad-cam.zarr", "saliency.zarr"]
    assert (table["seconds_per_image"] > 0).all()
    again = scoreboard.scoreboard(4, names, metrics, quick=True, store=tmp_path)
    assert np.array_equal(again["value"].to_numpy(), table["value"].to_numpy())
    assert again["seconds_per_image"].isna().all()  # every map came from the store
    code = scoreboard.main(["--quick", "--methods", "saliency", "--metrics", "pointing-game", "--store", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "| saliency |" in out and "| – |" in out


# --- perturbation batching: batch size from free CUDA memory, mixed precision -----------------------


def test_auto_batch_size_follows_free_cuda_memory(monkeypatch):
    from types import SimpleNamespace

    from guidewidgets.explain.batching import auto_batch_size

    free = [0]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free[0], 2 * free[0]))

    def on_cuda(side: int) -> int:
        return auto_batch_size(SimpleNamespace(device=torch.device("cuda"), shape=(1, 3, side, side)))  # type: ignore[arg-type]

    sizes = []
    for gib in (0.001, 1, 4, 16):
        free[0] = int(gib * 2**30)
        sizes.append(on_cuda(224))
    assert sizes[0] == 1 and sizes == sorted(sizes) and sizes[1] < sizes[2] < sizes[3] <= 1024
    free[0] = 4 * 2**30
    assert on_cuda(448) < on_cuda(224)  # bigger images, fewer per forward
    free[0] = 10**15
    assert on_cuda(224) == 1024
    assert auto_batch_size(torch.zeros(1, 3, 224, 224), 5) == 5  # an explicit size wins


def test_rise_amp_is_close_to_full_precision(model, data):
    x = torch.stack([data[i]["image"] for i in range(4)])
    full = explain.explain(model, x, "rise", masks=64)
    mixed = explain.explain(model, x, "rise", masks=64, amp=True)
    assert mixed.dtype == full.dtype and not torch.equal(mixed, full)  # it did run in lower precision
    err = (mixed - full).abs().amax((1, 2)) / full.abs().amax((1, 2))
    assert err.max() < 0.05
    assert torch.corrcoef(torch.stack([full.flatten(), mixed.flatten()]))[0, 1] > 0.99
    with pytest.raises(TypeError, match="amp must be True"):
        explain.explain(model, x, "rise", masks=4, amp="yes")
    if torch.cuda.is_available():
        m = zoo.load("shapes-classifier").cuda()
        on_gpu = explain.explain(m, x.cuda(), "rise", masks=64, amp=True).cpu()
        assert torch.corrcoef(torch.stack([full.flatten(), on_gpu.flatten()]))[0, 1] > 0.99


# --- the store is matched to the data, and never written over what it did not write -----------------


def test_store_for_other_images_is_refused_not_served(model, tmp_path):
    from guidewidgets.explain.dataset import StoreMismatchError

    path = tmp_path / "s.zarr"
    explain_dataset(model, zoo.ShapeScenes(16, seed=1), "saliency", path, chunk=8)
    other = zoo.ShapeScenes(16, seed=2)  # same length and image shape: the old check resumed it
    with pytest.raises(
        StoreMismatchError, match=r"written for other images \(chunk 0's first image, item 0, differs\)"
    ):
        explain_dataset(model, other, "saliency", path, chunk=8)
    # Only chunk 1 changed (its last item): named, and nothing is served from the store.
    mixed = [zoo.ShapeScenes(16, seed=1)[i] for i in range(15)] + [other[15]]
    with pytest.raises(StoreMismatchError, match=r"chunk 1's last image, item 15"):
        explain_dataset(model, mixed, "saliency", path, chunk=8)
    # Same images, other labels: the maps of target='label' would be stale too.
    relabelled = [(item["image"], (item["label"] + 1) % 3) for item in zoo.ShapeScenes(16, seed=1)]
    with pytest.raises(StoreMismatchError, match="other images"):
        explain_dataset(model, relabelled, "saliency", path, chunk=8)
    # resume=False recomputes every chunk (right maps), after which the store resumes for the new data.
    fresh = explain_dataset(model, other, "saliency", path, chunk=8, resume=False)
    want = explain_dataset(model, other, "saliency", None, chunk=8).tensor()
    assert fresh.computed == [0, 1] and torch.equal(fresh.tensor(), want)
    again = explain_dataset(model, other, "saliency", path, chunk=8)
    assert again.skipped == [0, 1] and torch.equal(again.tensor(), want)


class _Jittered(torch.utils.data.Dataset):
    """A random transform: other pixels at every read."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.rand(3, 96, 96), 0


def test_random_transform_is_refused_on_resume_with_the_reason(model, tmp_path):
    explain_dataset(model, _Jittered(), "saliency", tmp_path / "j.zarr", chunk=2)
    with pytest.raises(ValueError, match="random transform gives other images at every read"):
        explain_dataset(model, _Jittered(), "saliency", tmp_path / "j.zarr", chunk=2)


def test_store_paths_that_are_not_ours_are_refused(model, tmp_path, monkeypatch):
    from guidewidgets.explain.dataset import StoreMismatchError

    small = zoo.ShapeScenes(2, seed=3)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="empty path.*store='maps.zarr'"):
        explain_dataset(model, small, "saliency", "")
    assert list(tmp_path.iterdir()) == []  # nothing written into the working folder
    for here in (".", tmp_path):  # the working folder itself: holds files of its own
        (tmp_path / "notes.txt").write_text("mine")
        for overwrite in (False, True):
            with pytest.raises(StoreMismatchError, match=r"holds other data \('notes.txt'\).*never deletes"):
                explain_dataset(model, small, "saliency", here, overwrite=overwrite)
        assert (tmp_path / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
            "notes.txt"
        ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreMismatchError, match="exists but is empty.*overwrite=True"):
        explain_dataset(model, small, "saliency", tmp_path / "empty")
    assert explain_dataset(model, small, "saliency", tmp_path / "empty", overwrite=True).computed == [0]
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        explain_dataset(model, small, "saliency", tmp_path / "file.zarr", overwrite=True)
    with pytest.raises(TypeError, match="store must be a folder path"):
        explain_dataset(model, small, "saliency", 5)
    import zarr

    zarr.open_group(str(tmp_path / "x.zarr"), mode="w").create_array("theirs", shape=(2,), dtype="int8")
    with pytest.raises(StoreMismatchError, match="holds other data"):
        explain_dataset(model, small, "saliency", tmp_path / "x.zarr", overwrite=True)
    with pytest.raises(StoreMismatchError, match="holds other data"):  # a zarr store object, checked as its folder
        explain_dataset(model, small, "saliency", zarr.storage.LocalStore(str(tmp_path / "x.zarr")), overwrite=True)
    assert "theirs" in zarr.open_group(str(tmp_path / "x.zarr"), mode="r")
    memory = zarr.storage.MemoryStore()
    zarr.open_group(memory, mode="w").create_array("theirs", shape=(2,), dtype="int8")
    with pytest.raises(StoreMismatchError, match="holds other data"):  # a store without a folder
        explain_dataset(model, small, "saliency", memory, overwrite=True)
    assert "theirs" in zarr.open_group(memory, mode="r")


def test_overwrite_replaces_only_our_arrays(model, tmp_path):
    path = tmp_path / "o.zarr"
    explain_dataset(model, zoo.ShapeScenes(4, seed=1), "saliency", path, chunk=2)
    (path / "README.txt").write_text("kept")
    out = explain_dataset(model, zoo.ShapeScenes(2, seed=5), "grad-cam", path, overwrite=True)
    assert (path / "README.txt").read_text() == "kept" and out.maps.shape[0] == 2
    assert torch.equal(out.tensor(), explain_dataset(model, zoo.ShapeScenes(2, seed=5), "grad-cam").tensor())


def test_store_without_fingerprints_is_refused(model, tmp_path):
    """A store from before fingerprints were recorded cannot be matched to the data."""
    import zarr

    from guidewidgets.explain.dataset import StoreMismatchError

    small = zoo.ShapeScenes(2, seed=3)
    path = tmp_path / "old.zarr"
    explain_dataset(model, small, "saliency", path)
    del zarr.open_group(str(path), mode="r+")["fingerprints"]
    with pytest.raises(StoreMismatchError, match="older guidewidgets.*overwrite=True"):
        explain_dataset(model, small, "saliency", path)
    assert explain_dataset(model, small, "saliency", path, overwrite=True).computed == [0]


def test_run_killed_while_creating_the_store_is_recreated(model, tmp_path):
    """overwrite=True replaces the arrays one by one; a kill in between must not leave old done
    flags beside new empty maps (the store is marked while it is being created)."""
    import zarr

    data = zoo.ShapeScenes(4, seed=1)
    path = tmp_path / "k.zarr"
    want = explain_dataset(model, data, "saliency", path, chunk=2).tensor()
    group = zarr.open_group(str(path), mode="r+")
    group.attrs.update({"guidewidgets_explain_dataset": {"creating": True}})  # as _create leaves it when killed
    group.create_array("maps", shape=(4, 96, 96), chunks=(2, 96, 96), dtype="float32", fill_value=0, overwrite=True)
    again = explain_dataset(model, data, "saliency", path, chunk=2)
    assert again.computed == [0, 1] and torch.equal(again.tensor(), want)
