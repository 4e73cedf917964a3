"""Shared test setup: CPU only, one intra-op thread, deterministic seeds."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The models under test are small: on a busy 2-core CI box extra intra-op threads only add
    synchronisation (a guide step measured 10-30x slower with two threads under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
