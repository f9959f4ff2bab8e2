"""One embedded cluster per test module, stopped at its end."""

import pytest

import ferroray


@pytest.fixture(scope="module")
def cluster():
    ferroray.init(num_cpus=2)
    yield
    ferroray.shutdown()
