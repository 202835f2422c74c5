import os

import pytest
import torch

# Two cores on CI; xdist workers each get one thread so they do not fight.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
