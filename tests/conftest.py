"""Shared test settings."""
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests use tiny models: one torch thread is fastest for them and leaves the other cores to
    other processes (OpenMP threads fighting over shared cores slow everything down)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
