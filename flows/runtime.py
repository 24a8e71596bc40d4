"""What a ``bindset`` command sets up before any work starts, and in which order.

1. Quiet defaults (``quiet_defaults``): no Prefect server telemetry (its heartbeat to
   sens-o-matic.prefect.io fails offline and logs an ERROR in every run), no Prefect SDK analytics
   (``DO_NOT_TRACK``), no Ray usage stats. Each only where the user has not set it.
2. Storage options (``apply_storage_options``): ``--storage-option`` wins over a run config's
   ``[storage] options``, which win over the environment.
3. Checks (flows.config, flows.cli): configs, URLs, buckets and credentials, cheap and one line each.
4. Only then the Prefect API (``PrefectApi``): the configured server (``PREFECT_API_URL``, in the
   environment or a Prefect profile) is used as is; otherwise the temporary server Prefect's
   ephemeral mode would start, but prepared as the command starts and started once the checks pass,
   in its own process, so its start overlaps the checks, the heavy imports (torch, Prefect) and Ray's
   start instead of following them. Prefect's own ephemeral path imports its whole server package
   into the client (about 3 s of CPU here) when the first flow starts, with nothing left to overlap.
5. The executor, chosen once the plan is known (flows.executor_choice).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: environment defaults of every bindset command (a value the user set is kept)
QUIET_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # the server's telemetry heartbeat (ERROR when offline)
    "DO_NOT_TRACK": "1",  # Prefect SDK analytics
    "RAY_USAGE_STATS_ENABLED": "0",
}


def quiet_defaults(environ: dict[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    for key, value in QUIET_DEFAULTS.items():
        env.setdefault(key, value)


# -- storage options --------------------------------------------------------------------------------

#: ``--storage-option`` pairs of this process; they win over a config file's [storage] options
_CLI_STORAGE_OPTIONS: dict[str, str] = {}


def set_cli_storage_options(options: dict[str, str]) -> None:
    from storage.object_store import set_storage_options

    _CLI_STORAGE_OPTIONS.clear()
    _CLI_STORAGE_OPTIONS.update(options)
    set_storage_options(dict(options))


def apply_storage_options(config_options: dict[str, str] | None) -> None:
    """A run config's [storage] options, under the command line's."""
    from storage.object_store import set_storage_options

    set_storage_options({**(config_options or {}), **_CLI_STORAGE_OPTIONS})


# -- locations given on the command line or in a config -------------------------------------------


def root_arg(value: str | os.PathLike, resolve: bool = False) -> Path | str:
    """A path argument as the pipeline takes it: a local ``Path`` (absolute with ``resolve``) or the
    normalized URL string. Malformed URLs raise ``LocationError`` here, before any work."""
    from storage.location import as_location
    from storage.object_path import ObjectPath

    location = as_location(os.fspath(value))
    if isinstance(location, ObjectPath):
        return location.url
    location = Path(location).expanduser()
    return location.resolve() if resolve else location


def local_only(value: str | os.PathLike, what: str) -> Path:
    """Arguments that are local files by nature (synthetic output, a run directory, a single input)."""
    from storage.location import as_location
    from storage.object_path import ObjectPath

    location = as_location(os.fspath(value))
    if isinstance(location, ObjectPath):
        from storage.object_store import LocationError

        raise LocationError(f"{what} {location.url}: must be a local path")
    return Path(location).expanduser()


def check_read(value: Path | str, what: str) -> None:
    """A root to read: a URL's bucket must exist and be readable with these credentials; a local
    path must exist."""
    from storage.location import as_location, check_reachable
    from storage.object_path import ObjectPath

    location = as_location(value)
    if isinstance(location, ObjectPath):
        check_reachable(location)
    elif not Path(location).exists():
        raise FileNotFoundError(f"{what} {location} does not exist")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_write(value: Path | str, what: str) -> None:
    """A root to write: a URL is probed with a write and a delete; a local directory is created
    (the command would create it next anyway) and must be writable."""
    from storage.location import as_location, check_reachable
    from storage.object_path import ObjectPath

    location = as_location(value)
    if isinstance(location, ObjectPath):
        check_reachable(location, write=True)
        return
    path = Path(location).absolute()
    # Nothing is created here: a refused command leaves no trace (the build makes the folder).
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {path} is a file, not a directory")
    existing = path if path.exists() else path.parent
    if not existing.exists():
        raise FileNotFoundError(f"{what} {path}: its parent folder {existing} does not exist")
    if not existing.is_dir():
        raise NotADirectoryError(f"{what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(existing) else "permission denied"
        raise PermissionError(f"{what} {path} cannot be written ({existing}: {reason})")


# -- the Prefect API --------------------------------------------------------------------------------


def _prefect_api_configured() -> bool:
    """Is a Prefect server configured (environment, profile, prefect.toml, .env)? Reads the files
    only when one could say so, so the common case costs no Prefect import."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    candidates = [
        Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")),
        Path("prefect.toml"),
        Path(".env"),
        Path("pyproject.toml"),
    ]
    markers = ("PREFECT_API_URL", "PREFECT_API_URL", "url", "tool.prefect")
    if not any(p.is_file() and marker in p.read_text(errors="replace") for p, marker in zip(candidates, markers)):
        return False
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The temporary server process: Prefect's own server application, as its ephemeral mode runs it
#: (``uvicorn --factory prefect.server.api.server:create_app``, no UI), behind two guards. It
#: imports the server (the slow part, ~3 s of CPU) at once, in parallel with the parent's checks, but
#: starts nothing (no port, no database) until the parent writes "start"; a parent that found a bad
#: input exits instead, and the child with it. Once serving, it stops when its stdin closes: the
#: parent is gone, even if it was killed.
_SERVER_PROCESS = r"""
import os, signal, sys, threading
try:
    import prefect.server.api.server
except Exception:
    pass  # uvicorn reports it below, where it matters
if sys.stdin.readline().strip() != "start":
    sys.exit(0)
def lifeline():
    sys.stdin.read()
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=lifeline, daemon=True).start()
import uvicorn
uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=int(sys.argv[1]),
            log_level="error", lifespan="on")
"""


class PrefectApi:
    """The Prefect API a command's flow runs report to: the configured server, or a temporary one.

    ``prepare()`` (first thing, before any check) launches the gated server process; ``start()``
    (after the checks) lets it start serving and points Prefect at it; ``wait()`` blocks until it
    answers. The temporary server keeps its SQLite database in ``PREFECT_HOME`` like Prefect's
    ephemeral mode, and is stopped at exit after Prefect's log and event workers have drained
    (``atexit`` runs last what was registered first). Where a server is configured
    (``PREFECT_API_URL``, a profile) or Prefect is already imported (its settings are read at import:
    tests that call ``main()`` in-process), this does nothing and Prefect behaves as it always does.
    """

    def __init__(self, url: str | None = None, process: subprocess.Popen | None = None):
        self.url = url
        self.process = process
        self.started = False

    @classmethod
    def prepare(cls) -> "PrefectApi":
        if "prefect" in sys.modules or _prefect_api_configured():
            return cls()
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update({"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"})
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVER_PROCESS, str(port)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        api = cls(f"http://127.0.0.1:{port}/api", process)
        atexit.register(api.stop)
        return api

    @property
    def temporary(self) -> bool:
        return self.process is not None

    def start(self) -> "PrefectApi":
        """The inputs are good: serve. Call before Prefect is imported."""
        if self.process is None or self.started:
            return self
        self.process.stdin.write(b"start\n")
        self.process.stdin.flush()
        self.started = True
        # Read by Prefect when it is imported, after this: every thread and exit handler sees it.
        os.environ["PREFECT_API_URL"] = self.url
        os.environ.setdefault("PREFECT_UI_URL", "")  # the temporary server has no UI to link to
        return self

    def wait(self, timeout: float | None = None) -> None:
        if self.process is None:
            return
        self.start()
        timeout = timeout or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 180))
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the temporary Prefect server exited with code {self.process.returncode} "
                    "before it answered; set PREFECT_API_URL to a running server or pass --no-prefect"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the temporary Prefect server did not answer within {timeout:.0f} s "
                    "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            process.stdin.close()
        except OSError:
            pass
        if process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def require_weights(encoder: str, checkpoint: str | None, random_weights: bool, option: str = "--checkpoint") -> None:
    """Embeddings of random weights look like any others: ask for them explicitly."""
    if checkpoint is None and not random_weights:
        raise ValueError(
            f"{encoder} needs {option} PATH, a local weights file (nothing is downloaded); "
            f"pass --random-weights to use a seeded random init instead (smoke tests only)"
        )
