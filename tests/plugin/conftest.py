from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "cases"

if os.geteuid() != 0:
    pytestmark = pytest.mark.skip(reason="plugin tests start containers as root; "
                                         "this process is not root")


@pytest.fixture
def case(pytester: pytest.Pytester):
    """case("c01") copies that field case into the pytester directory; returns its name."""

    def _copy(prefix: str) -> str:
        (src,) = CASES.glob(f"{prefix}_*.py")
        shutil.copy(src, pytester.path / src.name)
        return src.name

    return _copy
