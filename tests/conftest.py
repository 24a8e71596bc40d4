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


def pytest_configure(config):
    # Prefect in tests: a private, throwaway home, ephemeral API unless a test starts a server,
    # no analytics (tests never touch the network).
    import tempfile

    home = tempfile.mkdtemp(prefix="bindset-prefect-")
    os.environ.setdefault("PREFECT_HOME", home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"
