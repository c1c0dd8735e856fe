"Fixtures shared by the test files."
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    "One torch thread for the module: light on a shared machine, and in-process runs compare bit for bit."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
