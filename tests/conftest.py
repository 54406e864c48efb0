"""Test setup: quiet, local, CPU-only, no network."""

import os
import shutil

import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def one_thread():
    """One torch thread: convolutions on tiny maps gain nothing from threads, and threads fight over a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A clean 128x64 store pair (tests/hostile_stores.py), built once per module that asks for it."""
    from hostile_stores import clean_stores, warm_up

    warm_up()
    return clean_stores(tmp_path_factory.mktemp("pristine") / "stores", per_shard=2)


@pytest.fixture
def stores(pristine, tmp_path):
    """A test's own copy of `pristine`, to damage. Modules that need other stores define their own `stores`."""
    return shutil.copytree(pristine, tmp_path / "stores")
