"Fixtures shared by the test files."

import pytest
import torch

# One torch thread in every test process: pytest runs on two workers (make test), and two threads per worker on a
# 2-core machine oversubscribe it (test_morphisms' 200 chains took 398 s on two threads beside the other worker;
# 10 of them take 6.9 s on one thread). A test that wants more threads sets them itself.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    "One torch thread for the module: light on a shared machine, and in-process runs compare bit for bit."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SLOWEST = ("test_reproduce.py",)  # every reproduction notebook at smoke: minutes


def pytest_collection_modifyitems(items):
    "The slowest files first: on two workers (make test) they run side by side at the start, not alone at the end."
    items.sort(key=lambda item: item.path.name not in SLOWEST)  # stable: every other test keeps its order
