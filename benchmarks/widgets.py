"""Widget latency: from a control change to the new RGBA frame (and to the PNG on the wire).

    python benchmarks/widgets.py [--repeat 10] [--threads 1] [--device cpu|cuda]

What is timed, per row (median over ``--repeat`` runs, nothing cached unless the row says so):
- ExplainWidget ``w.method = name`` for a method whose map is not cached: the explanation on the
  embedded classifier, colourising, and the overlay frame stored on the view ("frame ready").
  "+ send" also encodes the frame as the PNG ipycanvas puts on the wire (view attached).
- the same toggle when the map is cached, and an opacity change (no model call at all);
- GuideWidget Run (a fresh hint each time, block reset between runs) until the new
  segmentation frame and the readouts (loss curve, gamma bars) are ready; and a single Step.
Targets from issue 5: < 100 ms for CAM / Grad-CAM / saliency, < 0.5 s for a Guide Run.
Not asserted anywhere: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _median_ms(fn, repeat: int, setup=None) -> float:
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from guidewidgets import explain, zoo
    from guidewidgets.widgets import ExplainWidget, GuideWidget

    rows: list[tuple[str, str, float, str]] = []
    clf = zoo.load("shapes-classifier", device=args.device)
    w = ExplainWidget(clf)
    w.view.client_ready = False
    size = f"{w.size}px"
    for name in explain.methods():
        if explain.method_info(name).slow:
            continue

        def toggle(name=name):
            w.method = "grad-cam" if name != "grad-cam" else "saliency"
            w._cache.clear()

        def change(name=name):
            w.method = name

        ms = _median_ms(change, args.repeat, setup=toggle)
        target = "< 100 ms" if name in ("cam", "grad-cam", "saliency") else ""
        rows.append((f"ExplainWidget method -> {name}", size, ms, target))
        assert w.status == "", w.status
    w.view.client_ready = True  # now every frame is also PNG-encoded for the canvas
    for name in ("cam", "grad-cam", "saliency"):

        def toggle(name=name):
            w.method = "guided-backprop"
            w._cache.clear()

        ms = _median_ms(lambda name=name: setattr(w, "method", name), args.repeat, setup=toggle)
        rows.append((f"ExplainWidget method -> {name} + send", size, ms, "< 100 ms"))
    w.method = "cam"
    w.method = "grad-cam"
    rows.append(
        (
            "ExplainWidget toggle back (cached)",
            size,
            _median_ms(lambda: (setattr(w, "method", "cam"), setattr(w, "method", "grad-cam")), args.repeat) / 2,
            "",
        )
    )
    rows.append(
        (
            "ExplainWidget opacity change",
            size,
            _median_ms(lambda: setattr(w, "opacity", 0.3 if w.opacity != 0.3 else 0.6), args.repeat),
            "",
        )
    )
    for name in [m for m in explain.methods() if explain.method_info(m).slow]:

        def slow(name=name):
            w.method = name
            w.wait()

        ms = _median_ms(slow, max(1, args.repeat // 3), setup=lambda: (setattr(w, "method", "cam"), w._cache.clear()))
        rows.append((f"ExplainWidget {name} (background, until applied)", size, ms, "progress bar"))
    w.close()

    seg = zoo.load("shapes-segmenter", device=args.device)
    g = GuideWidget(seg)
    g.view.client_ready = True
    gsize = f"{g.height}px"
    ys = list(range(8, g.height - 8, 7))
    state = {"i": 0}

    def fresh_hint():
        g.reset()
        y = ys[state["i"] % len(ys)]
        state["i"] += 1
        x = g.width // 2
        pred = int(g._prediction[y, x])
        g.add_stroke([(y, x)], cls=(pred % (g.num_classes - 1)) + 1, radius=2)

    rows.append(
        (
            "GuideWidget Run (hint -> frame + readouts)",
            gsize,
            _median_ms(g.run, args.repeat, setup=fresh_hint),
            "< 500 ms",
        )
    )
    steps = []
    for _ in range(args.repeat):
        fresh_hint()
        g.run()
        steps.append(g.step_count)
    rows.append(("  (steps per Run, median)", gsize, float(statistics.median(steps)), "count"))
    rows.append(("GuideWidget Step", gsize, _median_ms(g.step, args.repeat, setup=fresh_hint), ""))
    fresh_hint()
    t = time.perf_counter()
    n = g.guide.run()
    rows.append(("  Guide.run alone (no widget)", gsize, (time.perf_counter() - t) * 1000, f"{n} steps"))
    rows.append(
        (
            "GuideWidget click (mouse down+up -> hint frame)",
            gsize,
            _median_ms(lambda: (g.view.on_mouse_down(30, 30), g.view.on_mouse_up(30, 30)), args.repeat, setup=g.reset),
            "",
        )
    )
    g.close()

    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} thread(s)"
    print(f"\nWidget latency on {dev}, torch {torch.__version__}, median of {args.repeat}\n")
    print(f"| {'what':58s} | {'image':6s} | {'ms':>8s} | {'target':14s} |")
    print(f"|{'-' * 60}|{'-' * 8}|{'-' * 10}|{'-' * 16}|")
    for what, sz, ms, target in rows:
        val = f"{ms:8.0f}" if target == "count" else f"{ms:8.1f}"
        print(f"| {what:58s} | {sz:6s} | {val} | {target:14s} |")


if __name__ == "__main__":
    main()
