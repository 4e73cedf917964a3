"""The clock, the interleaved rounds, the ratios and the number format every benchmark shares.

    from timing import timed, rounds, medians, fmt   # benchmarks/ is on sys.path when a script runs

On CPU a call's time is the process's CPU time (run with OMP_NUM_THREADS=1 on a shared machine:
then waiting for a core is not counted); on CUDA it is wall time with synchronisation. Rounds are
interleaved (each round times every implementation once, after a warm-up round that is not kept),
so a busy spell of the machine slows every implementation alike; the median is reported.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable

import torch
import torchvision

#: A benchmark's table: {row: {implementation: fn}}; a ``(key, fn)`` pair is a floor that several
#: rows share, timed once per round under ``key``.
Table = dict[str, dict[str, "Callable[[], object] | tuple[str, Callable[[], object]]"]]


def timed(fn: Callable[[], object], device: str) -> float:
    """Seconds of one call of ``fn``: process CPU time on CPU, synchronised wall time on CUDA."""
    if device == "cuda":
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start
    start = time.process_time()
    fn()
    return time.process_time() - start


def rounds(table: Table, repeats: int, device: str, label: str | None = None) -> dict[str, dict[str, list[float]]]:
    """Time every implementation of every row in ``repeats`` interleaved rounds after one warm-up
    round (lazy imports, allocator, cudnn autotune); returns the seconds, {row: {impl: [s, ...]}}.
    With ``label``, each finished round is reported on stderr."""
    times: dict[str, dict[str, list[float]]] = {m: {i: [] for i in impls} for m, impls in table.items()}
    for r in range(repeats + 1):
        floors: dict[str, float] = {}
        for m, impls in table.items():
            for impl, fn in impls.items():
                if isinstance(fn, tuple):
                    key, run = fn
                    if key not in floors:
                        floors[key] = timed(run, device)
                    took = floors[key]
                else:
                    took = timed(fn, device)
                if r:
                    times[m][impl].append(took)
        if label is not None:
            print(f"  {label}: round {r}/{repeats} done", file=sys.stderr, flush=True)
    return times


def median_ms(times: dict[str, list[float]]) -> dict[str, float]:
    """The median of each implementation's times, in milliseconds."""
    return {i: 1000 * statistics.median(v) for i, v in times.items()}


def medians(impls: dict[str, list[float]]) -> tuple[dict[str, float], str]:
    """The median time of each implementation, and ours / the fastest peer ("n/a" without one)."""
    med = {i: statistics.median(v) for i, v in impls.items()}
    peers = [med[p] for p in ("pytorch-grad-cam", "captum") if p in med]
    return med, f"{med['ours'] / min(peers):.2f}" if peers else "n/a"


def fmt(v: float | None) -> str:
    """Seconds as whole milliseconds (one decimal under 0.1 s); "-" for no value."""
    return "-" if v is None else (f"{v * 1000:.0f}" if v >= 0.1 else f"{v * 1000:.1f}")


def devices(arg: str | None) -> list[str]:
    """``--devices`` as a list: as given, else cpu plus cuda when available."""
    return arg.split(",") if arg else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def environment(devs: Iterable[str]) -> str:
    """The start of a table's header line: versions, processor, CPU threads and the GPU if used."""
    gpu = f"GPU {torch.cuda.get_device_name()}; " if "cuda" in devs else ""
    return (
        f"# torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads; {gpu}"
    )


def print_grid(bench: Callable[[str, int, str, object], list[str]], cfg: object, devs: list[str]) -> None:
    """Print ``bench(model, batch, device, cfg)``'s rows for every device, ``cfg.models`` and
    ``cfg.batches`` (comma separated), each as soon as it is measured."""
    for device in devs:
        for model_name in cfg.models.split(","):  # type: ignore[attr-defined]
            for batch in (int(b) for b in cfg.batches.split(",")):  # type: ignore[attr-defined]
                for line in bench(model_name, batch, device, cfg):
                    print(line, flush=True)


def grid_medians(
    model_name: str, batch: int, device: str, cfg: argparse.Namespace, cases: Callable[..., Table]
) -> dict[str, tuple[dict[str, float], str]]:
    """{row: (median ms per implementation, ratio to the best peer)} of ``cases(model, x, targets,
    cfg)`` on :func:`predicted_input`'s net and images: one cell of :func:`print_grid`'s grid."""
    model, x, t = predicted_input(model_name, batch, cfg.size, device)
    times = rounds(cases(model, x, t, cfg), cfg.repeats, device, f"{model_name} B={batch} {device}")
    return {row: medians(impls) for row, impls in times.items()}


def grid_parser(
    doc: str, *, models: str, methods: Iterable[str], layer_help: str | None = None
) -> argparse.ArgumentParser:
    """The command line of the grid benchmarks (explain_variants.py, fullgrad_dff.py): models x
    batches x devices, the layer, the methods, rounds and ``--quick``; parse with :func:`parse_grid`."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=models)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--layer", default="layer4", help=layer_help)
    p.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, plus cuda when available)")
    p.add_argument("--methods", default=",".join(methods))
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="resnet18, 64 px, batch 2, CPU, 2 repeats")
    return p


def parse_grid(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """:func:`grid_parser`'s options parsed, ``--quick``'s settings applied and ``repeats`` filled in."""
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.models, cfg.batches, cfg.devices, cfg.size = "resnet18", "2", "cpu", 64
        cfg.repeats = cfg.repeats or 2
    cfg.repeats = cfg.repeats or 5
    return cfg


def add_size_options(p: argparse.ArgumentParser, *, size: int, batch: int, quick: str) -> None:
    """The options of the one-model peer benchmarks (attribution.py, lrp.py): image side, batch,
    rounds, device and ``--quick`` (its help says what it picks)."""
    p.add_argument("--size", type=int, default=size, help=f"image side in pixels (default {size})")
    p.add_argument("--batch", type=int, default=batch, help=f"images per call (default {batch})")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds, median reported (default 5)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help=quick)


def settings_line(cfg: argparse.Namespace, *extra: str) -> str:
    """The first line of those benchmarks' output: device, threads, size, batch, ``extra``, rounds."""
    parts = [cfg.device, f"{torch.get_num_threads()} threads", f"{cfg.size} px", f"batch {cfg.batch}", *extra]
    return ", ".join(parts) + f", median of {cfg.repeats}; ms (ratio < 1: ours faster)"


#: The table head of the per-method "ours against Captum" benchmarks.
CAPTUM_HEADER = "| model | method | ours | Captum | ours / Captum |\n| --- | --- | --- | --- | --- |"


def random_net(name: str, batch: int, size: int, device: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The torchvision net ``name`` with random weights (seed 0, eval mode) and ``batch`` random
    images of ``size`` px (seed 1): the same inputs on every run and every machine."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval().to(device)
    return model, torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)


def predicted_input(
    name: str, batch: int, size: int, device: str
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """:func:`random_net`'s net and images, and the class it predicts for each image (the target)."""
    model, x = random_net(name, batch, size, device)
    with torch.no_grad():
        return model, x, model(x).argmax(1)


def seeded_input(name: str, cfg: argparse.Namespace, device: str) -> tuple[torch.nn.Module, torch.Tensor, list[int]]:
    """:func:`random_net` at ``cfg.batch`` and ``cfg.size``, and one fixed target class per image."""
    model, x = random_net(name, cfg.batch, cfg.size, device)
    return model, x, [(7 * i + 3) % 1000 for i in range(cfg.batch)]


def captum_rows(name: str, table: Table, cfg: argparse.Namespace, device: str) -> list[str]:
    """Time each method of ``table`` ({method: {"ours", "captum"}}, those in ``cfg.methods`` or all)
    and print its row under :data:`CAPTUM_HEADER` as soon as it is measured."""
    rows = []
    for method, impls in table.items():
        if cfg.methods and method not in cfg.methods:
            continue
        med = median_ms(rounds({method: impls}, cfg.repeats, device)[method])
        rows.append(
            f"| {name} | {method} | {med['ours']:.0f} | {med['captum']:.0f} | {med['ours'] / med['captum']:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def out_of_place(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with out-of-place ReLUs, which Captum's backward hooks need."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    return m


def captum_main(
    argv: list[str] | None,
    doc: str,
    cases: Callable[[str, torch.nn.Module, torch.Tensor, list[int], argparse.Namespace], Table],
    *,
    models: str,
    models_help: str,
    quick_models: str,
    option: tuple[str, int, str],
) -> None:
    """The command line and table of the "ours against Captum, per method" benchmarks
    (attribution.py, layer_neuron.py).

    Args:
        argv: the arguments (None: sys.argv). doc: the script's docstring (its first paragraph
            is the description).
        cases: ``cases(name, model, x, targets, cfg)`` -> {method: {"ours": fn, "captum": fn}}.
        models: default ``--models``; models_help: its help. quick_models: ``--quick``'s models.
        option: the script's own integer option (name, default, what it is), e.g. samples.
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--models", default=models, help=models_help)
    p.add_argument("--methods", default="", help="comma separated subset (default: all five)")
    flag, default, what = option
    p.add_argument(f"--{flag}", type=int, default=default, help=f"{what} (default {default})")
    add_size_options(p, size=160, batch=2, quick=f"{quick_models}, 96 px, 3 repeats")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.models, cfg.size, cfg.repeats = quick_models, 96, 3
    cfg.methods = [m for m in cfg.methods.split(",") if m]
    print(settings_line(cfg, f"{getattr(cfg, flag)} {flag}"))
    print(CAPTUM_HEADER)
    for name in cfg.models.split(","):
        model, x, targets = seeded_input(name, cfg, cfg.device)
        captum_rows(name, cases(name, model, x, targets, cfg), cfg, cfg.device)
