import pytest

import store_factory


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory):
    """A grid (λ × 3 seeds, one failed), a search (3 stopped), a running study and an old-schema store."""
    return store_factory.write_fixture_root(tmp_path_factory.mktemp("results"))
