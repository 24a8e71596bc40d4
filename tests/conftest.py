import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path | None:
    candidate = Path(os.environ.get("BINDSET_SHARED", REPO.parent / "shared"))
    return candidate if (candidate / "samples").is_dir() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if root is None:
        pytest.skip("../shared not found: real-media parity tests need the shared samples and references")
    return root
