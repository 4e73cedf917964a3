"""The numbers behind the README's training-basics and segmentation-networks table.

Held-out scenes of seed 41001 (used by no training recipe), one thread:
    python benchmarks/basics.py
prints the shipped classifier's accuracy and confusion matrix, the circle-vs-ellipse AUC (sklearn and
the pairwise count), GAP vs GMP heads (frozen trunk, then with the last block retrained) and the
segmenter's pixel accuracy as one FCN forward vs a sliding window.
"""

from __future__ import annotations

import torch

from guidewidgets import basics, segnets, zoo


def main() -> None:
    torch.set_num_threads(1)
    m = zoo.load("shapes-classifier")
    b = zoo.ShapeScenes(600, seed=41001).batch()
    x, y = b["images"].float() / 255, b["labels"]
    logits = basics.predict(m, x)
    pred = logits.argmax(1)
    print("accuracy", f"{(pred == y).float().mean():.3f}")
    print(basics.confusion(pred, y, 6))
    s, t = basics.binary_scores(logits, y, 0, 1)
    r = basics.roc(s, t)
    print(
        f"circle vs ellipse: {int(t.sum())} pos {int((t == 0).sum())} neg, "
        f"AUC {r['auc']:.4f}, pairwise {basics.pairwise_auc(s, t):.4f}"
    )
    for retrain in (0, 1):
        kw = {} if retrain == 0 else {"retrain": 1, "epochs": 4}
        heads, info = basics.train_pooled_heads(m, n=1024, **kw)
        accs = {p: f"{(basics.predict(h, x).argmax(1) == y).float().mean():.3f}" for p, h in heads.items()}
        print(f"retrain={retrain}: {info['seconds']:.1f} s, held-out accuracy {accs}")
    seg = zoo.load("shapes-segmenter")
    sc = zoo.ShapeScenes(16, seed=41001, task="segmentation")
    acc: dict[str | int, list[torch.Tensor]] = {"fcn": [], 32: [], 48: []}
    for i in range(16):
        im, gt = sc[i]["image"], sc[i]["mask"]
        acc["fcn"].append((segnets.fcn_labels(seg, im) == gt).float().mean())
        for w in (32, 48):
            acc[w].append((segnets.sliding_window_labels(seg, im, window=w, stride=4)[0] == gt).float().mean())
    summary = {k: f"{torch.stack(v).mean():.3f}" for k, v in acc.items()}
    print("pixel accuracy over 16 scenes:", summary, "(sliding: 576 forwards per image)")


if __name__ == "__main__":
    main()
