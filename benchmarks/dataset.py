"""Throughput of explain_dataset with 1 and 2 processes (torch.distributed, gloo), and RISE's amp error.

    nice -n 10 python benchmarks/dataset.py                       # grad-cam and occlusion, 1 and 2 processes
    nice -n 10 python benchmarks/dataset.py --n-fast 64 --n-slow 16   # a quicker run

Model: the embedded shapes-classifier on 96 x 96 held-out ShapeScenes (seed 2027), true-label
targets, chunks of 16 images written to a zarr store in a temporary folder. Every run is a fresh
process group started with torch.multiprocessing (as torchrun would), one intra-op thread per
process; each process first warms up on 2 images, then the clock runs from a barrier to the end
of explain_dataset (its final barrier included). Images/s = scenes / wall seconds; CPU seconds
are summed over the processes; "in the method's calls": the share of the wall time spent inside
explain() (the rest: reading scenes, the scoring forward, zarr writes, barriers). The 2-process maps are compared bit for bit with the 1-process
ones. Speed-up from 2 processes needs 2 free cores: the load average is printed beside.

The amp rows time RISE (CPU time, 1 thread) with and without ``amp=True`` and report the amp
map's error: max |amp - fp32| over the map's max |fp32| (worst image) and the correlation of
all maps.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain, zoo
from guidewidgets.explain.dataset import explain_dataset

SEED, CHUNK = 2027, 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, method: str, n: int) -> None:
    torch.set_num_threads(1)
    model, data = zoo.load("shapes-classifier"), zoo.ShapeScenes(n, seed=SEED)
    explain_dataset(model, [data[i] for i in range(2)], method)  # warm-up, in memory, before the group exists
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        if world > 1:
            dist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        res = explain_dataset(model, data, method, f"{root}/{method}-{world}.zarr", chunk=CHUNK)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        Path(f"{root}/{method}-{world}-{rank}.json").write_text(
            json.dumps({"wall": wall, "cpu": cpu, "chunks": len(res.computed), "method": res.seconds})
        )
    finally:
        if world > 1:
            dist.destroy_process_group()


def throughput(root: str, method: str, n: int, world: int) -> dict:
    load = os.getloadavg()[0]
    mp.spawn(_worker, args=(world, _free_port(), root, method, n), nprocs=world, join=True)
    ranks = [json.loads(Path(f"{root}/{method}-{world}-{r}.json").read_text()) for r in range(world)]
    wall = max(r["wall"] for r in ranks)
    return {
        "wall": wall,
        "cpu": sum(r["cpu"] for r in ranks),
        "ips": n / wall,
        "chunks": [r["chunks"] for r in ranks],
        "share": sum(r["method"] for r in ranks) / sum(r["wall"] for r in ranks),
        "load": load,
    }


def amp_error(n: int, masks: int) -> tuple[float, float, float, float]:
    torch.set_num_threads(1)
    model, data = zoo.load("shapes-classifier"), zoo.ShapeScenes(n, seed=SEED)
    x = torch.stack([data[i]["image"] for i in range(n)])
    y = torch.tensor([data[i]["label"] for i in range(n)])
    explain.explain(model, x[:1], "rise", y[:1], masks=8)  # warm-up
    c0 = time.process_time()
    full = explain.explain(model, x, "rise", y, masks=masks)
    c1 = time.process_time()
    mixed = explain.explain(model, x, "rise", y, masks=masks, amp=True)
    c2 = time.process_time()
    err = float(((mixed - full).abs().amax((1, 2)) / full.abs().amax((1, 2))).max())
    corr = float(torch.corrcoef(torch.stack([full.flatten(), mixed.flatten()]))[0, 1])
    return c1 - c0, c2 - c1, err, corr


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-fast", type=int, default=256, help="scenes for grad-cam (default 256)")
    p.add_argument("--n-slow", type=int, default=64, help="scenes for occlusion (default 64)")
    p.add_argument("--amp-n", type=int, default=16, help="scenes for the RISE amp rows (default 16)")
    p.add_argument("--amp-masks", type=int, default=500, help="RISE masks for the amp rows (default 500)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"## explain_dataset: shapes-classifier 96 px, chunks of {CHUNK}, gloo, 1 thread per process\n")
    print(
        "| method | scenes | processes | wall s | images/s | CPU s (all processes) | in the method's calls "
        "| chunks per rank | load avg |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    same = {}
    with tempfile.TemporaryDirectory() as root:
        for method, n in (("grad-cam", a.n_fast), ("occlusion", a.n_slow)):
            for world in (1, 2):
                r = throughput(root, method, n, world)
                print(
                    f"| {method} | {n} | {world} | {r['wall']:.2f} | {r['ips']:.1f} | {r['cpu']:.2f} | {100 * r['share']:.0f} % | "
                    f"{'/'.join(map(str, r['chunks']))} | {r['load']:.1f} |",
                    flush=True,
                )
            import zarr

            one = zarr.open_group(f"{root}/{method}-1.zarr", mode="r")["maps"][:]
            two = zarr.open_group(f"{root}/{method}-2.zarr", mode="r")["maps"][:]
            same[method] = bool(np.array_equal(one, two))
    print("\n2-process maps bitwise equal to 1-process maps: " + ", ".join(f"{k} {v}" for k, v in same.items()))
    fp32, amp, err, corr = amp_error(a.amp_n, a.amp_masks)
    print(f"\n## RISE amp=True vs fp32: {a.amp_n} scenes x {a.amp_masks} masks, CPU (bfloat16), 1 thread\n")
    print("| variant | CPU s | max error / max | correlation |")
    print("|---|---:|---:|---:|")
    print(f"| fp32 | {fp32:.2f} | – | – |")
    print(f"| amp (bfloat16) | {amp:.2f} | {err:.4f} | {corr:.5f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
