"""Shared test setup: CPU only, few threads (CI has 2 cores), deterministic seeds."""
import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
