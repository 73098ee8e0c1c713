from __future__ import annotations

import pytest

from tests.support import ListLoader


@pytest.fixture
def list_loader() -> ListLoader:
    return ListLoader()
