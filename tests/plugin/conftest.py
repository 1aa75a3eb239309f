from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "cases"



@pytest.fixture
def case(pytester: pytest.Pytester):
    """case("c01") copies that field case into the pytester directory; returns its name."""

    def _copy(prefix: str) -> str:
        (src,) = CASES.glob(f"{prefix}_*.py")
        shutil.copy(src, pytester.path / src.name)
        return src.name

    return _copy
