"""The dataset lock on an object store (real S3 server) and on disk: create-if-absent, a lease the
holder renews, takeover after expiry, refusal of a live holder naming it."""

import json
import time

import pytest

from storage.location import as_location
from storage.locks import DatasetLock, DatasetLocked, LockInfo


def _foreign_lock(path, expires: float) -> None:
    info = LockInfo("node-7.cluster", 4242, "2026-12-01T00:00:00+0000", "build", expires=expires, token="other")
    path.write_bytes(info.encode())


@pytest.fixture(params=["s3", "local"])
def root(request, tmp_path):
    if request.param == "local":
        return tmp_path / "ds"
    bucket = request.getfixturevalue("s3_bucket")
    return as_location(f"s3://{bucket}/ds")


def test_live_holder_is_named_and_a_second_lock_refused(root):
    with DatasetLock(root, "build", lease_s=30) as held:
        record = json.loads(held.path.read_bytes())
        assert record["expires"] > time.time() + 20 and record["token"]
        with pytest.raises(DatasetLocked) as err:
            DatasetLock(root, "build", lease_s=30).acquire()
        message = str(err.value)
        assert f"pid {record['pid']} on {record['host']}" in message and "lease ends in" in message
    assert not held.path.exists(), "release removes the lock"
    DatasetLock(root, "build").acquire().release()


def test_a_dead_hosts_lock_is_taken_over_only_after_its_lease(root):
    path = DatasetLock(root, "build").path
    path.parent.mkdir(parents=True, exist_ok=True)
    _foreign_lock(path, expires=time.time() + 60)
    with pytest.raises(DatasetLocked, match="pid 4242 on node-7.cluster"):
        DatasetLock(root, "build").acquire()
    _foreign_lock(path, expires=time.time() - 1)  # the lease ran out: its driver is gone
    lock = DatasetLock(root, "build", lease_s=30).acquire()
    try:
        assert LockInfo.decode(path.read_bytes()).token == lock._info.token
    finally:
        lock.release()


def test_the_holder_renews_its_lease(root):
    lock = DatasetLock(root, "build", lease_s=1.5).acquire()
    try:
        first = LockInfo.decode(lock.path.read_bytes()).expires
        time.sleep(1.6)  # longer than the lease: only renewals keep it alive
        assert LockInfo.decode(lock.path.read_bytes()).expires > first
        with pytest.raises(DatasetLocked):
            DatasetLock(root, "build", lease_s=1.5).acquire()
        lock.check()
    finally:
        lock.release()


def test_a_holder_that_lost_its_lease_notices_and_leaves_the_new_lock(root):
    lock = DatasetLock(root, "build", lease_s=30).acquire()
    lock._stop.set()  # a stalled holder: no more renewals
    _foreign_lock(lock.path, expires=time.time() + 60)  # someone took over after expiry
    lock.renew()
    with pytest.raises(DatasetLocked, match="lost the lock"):
        lock.check()
    lock.release()
    assert LockInfo.decode(lock.path.read_bytes()).token == "other", "release must not remove another's lock"
