"""GAIN under DistributedDataParallel: 2 CPU processes (gloo) == 1 process on the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from guidewidgets import zoo
from guidewidgets.gain import GainConfig, GainTrainer
from tests.helpers import PlainNet

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

STEPS = 3


def _model() -> torch.nn.Module:
    # Why no BatchNorm: its batch statistics stay per process under DDP (unless SyncBatchNorm),
    # so only a model without it can match one process exactly.
    torch.manual_seed(0)
    return PlainNet(zoo.CLASSES, stride=4)


def _data():
    b = zoo.ShapeScenes(24, seed=7).batch()
    return b["images"], b["labels"], (b["masks"] > 0).float()


def _train() -> dict:
    torch.set_num_threads(1)
    images, labels, masks = _data()
    model = _model()
    t = GainTrainer(
        model,
        "features",
        images,
        labels,
        config=GainConfig(alpha=1.0),
        masks=masks,
        has_mask=torch.arange(24) % 3 == 0,
        mask_batch=4,
        batch_size=8,
        seed=2,
    )
    t.fit(steps=STEPS)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        state = _train()
        if rank == 0:
            torch.save(state, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    two = torch.load(out)
    one = _train()
    moved = False
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, rtol=1e-4, atol=1e-5, msg=k)
        moved |= not torch.allclose(v, _model().state_dict()[k])
    assert moved  # the comparison is not of two untouched models
