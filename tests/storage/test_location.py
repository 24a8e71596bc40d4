"""The storage location layer against a real S3 server (moto on loopback): URLs, conditional
writes, ranged reads, multipart uploads, listings, and one-line errors for unusable URLs."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from storage.location import (
    as_location,
    check_reachable,
    list_files,
    local_copy,
    parse_storage_options,
    publish_file,
    remove_tree,
    sha256_of,
)
from storage.object_path import ObjectPath
from storage.object_store import LocationError, StoreError


def test_local_paths_and_file_urls_stay_paths(tmp_path):
    assert as_location(str(tmp_path)) == tmp_path
    assert as_location(f"file://{tmp_path}") == tmp_path
    assert as_location(tmp_path / "x") == tmp_path / "x"


@pytest.mark.parametrize(
    "bad, message",
    [
        ("s3://", "malformed URL"),
        ("s3://ab/key", "malformed URL"),  # bucket names need 3+ characters
        ("s3:/bucket/key", "malformed URL"),
        ("ftp://host/x", "unsupported URL scheme 'ftp'"),
        ("file://otherhost/x", "names host"),
        ("s3://bucket/../../etc", "climbs above the bucket"),
    ],
)
def test_unusable_urls_are_one_line_errors(bad, message):
    with pytest.raises(LocationError, match=message) as err:
        as_location(bad)
    assert "\n" not in str(err.value)


def test_a_path_that_lost_its_url_slash_is_refused():
    with pytest.raises(LocationError, match="lost a slash"):
        as_location(Path("s3://bucket/ds"))  # Path() collapses '//' into '/'


def test_storage_option_pairs_parse_and_refuse_garbage():
    assert parse_storage_options(["aws_region=eu-west-1", "endpoint=http://h:1/x=y"]) == {
        "aws_region": "eu-west-1",
        "endpoint": "http://h:1/x=y",
    }
    with pytest.raises(LocationError, match="expected key=value"):
        parse_storage_options(["novalue"])


def test_object_paths_behave_like_paths_and_pickle_as_url_plus_options():
    p = as_location("s3://bucket-a/data/set/shards/00001.h5")
    assert isinstance(p, ObjectPath)
    assert (p.name, p.stem, p.suffix) == ("00001.h5", "00001", ".h5")
    assert p.parent.url == "s3://bucket-a/data/set/shards"
    assert (p.parent.parent / "index" / "00001.parquet").url == "s3://bucket-a/data/set/index/00001.parquet"
    assert str(p.relative_to(as_location("s3://bucket-a/data"))) == "set/shards/00001.h5"
    assert not p.is_relative_to(as_location("s3://bucket-a/dat"))
    q = ObjectPath("s3://bucket-a/k", {"aws_region": "eu-west-1"})
    r = pickle.loads(pickle.dumps(q))
    assert r == q and r.options == {"aws_region": "eu-west-1"}


def test_create_if_absent_and_compare_and_swap(s3_bucket):
    lock = as_location(f"s3://{s3_bucket}/ds/_locks/build.lock")
    first = lock.create_if_absent(b"one")
    assert first
    assert lock.create_if_absent(b"two") is None  # If-None-Match: * refused the second writer
    assert lock.read_bytes() == b"one"
    second = lock.replace_if_match(b"three", first)
    assert second and second != first
    assert lock.replace_if_match(b"four", first) is None  # a stale e-tag loses
    assert lock.read_bytes() == b"three"


def test_ranged_reads_multipart_upload_and_hashes(s3_bucket, tmp_path):
    data = os.urandom(40 * 1024 * 1024 + 123)  # > 2 parts of 16 MB
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    target = as_location(f"s3://{s3_bucket}/ds/shards/00000.h5")
    publish_file(local, target)
    assert not local.exists()
    assert target.head()["e_tag"].strip('"').endswith("-3"), "large files go up as a multipart upload"
    assert target.size() == len(data)
    assert target.read_range(1000, 1010) == data[1000:1010]
    import hashlib

    assert sha256_of(target) == hashlib.sha256(data).hexdigest()
    copy = local_copy(target)
    assert copy.read_bytes() == data


def test_listing_glob_and_remove_tree(s3_bucket):
    root = as_location(f"s3://{s3_bucket}/src")
    for key in [
        "visible/train/a.jpg",
        "visible/train/b.jpg",
        "visible/test/c.jpg",
        "infrared/train/a.jpg",
        "notes.txt",
    ]:
        (root / key).write_bytes(key.encode())
    assert [p.name for p in (root / "visible" / "train").glob("*.jpg")] == ["a.jpg", "b.jpg"]
    assert sorted(p.name for p in root.rglob("*.jpg")) == ["a.jpg", "a.jpg", "b.jpg", "c.jpg"]
    dirs = [p for p in root.rglob("train")]
    assert {p.parent.name for p in dirs} == {"visible", "infrared"} and all(p.is_dir() for p in dirs)
    assert [p.name for p in list_files(root / "visible" / "train", ".jpg")] == ["a.jpg", "b.jpg"]
    assert (root / "visible").is_dir() and not (root / "visible").is_file()
    assert (root / "notes.txt").is_file() and not (root / "missing.txt").exists()
    remove_tree(root / "visible")
    assert not (root / "visible").is_dir()
    assert (root / "notes.txt").read_text() == "notes.txt"


def test_missing_bucket_is_one_clear_line(s3_server):
    with pytest.raises(StoreError, match="bucket s3://no-such-bucket-xyz does not exist"):
        check_reachable(as_location("s3://no-such-bucket-xyz/ds"))


def _without_keys(**extra: str) -> dict[str, str]:
    """This environment minus the access keys, and no instance metadata to fall back on."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return {**env, "AWS_EC2_METADATA_DISABLED": "true", **extra}


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``code`` in a fresh process (credentials are read when a process first uses a store)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )


def test_missing_credentials_are_one_clear_line(s3_server):
    bucket = s3_server.new_bucket()
    result = _python(
        "from storage.location import as_location, check_reachable\n"
        f"check_reachable(as_location('s3://{bucket}/ds'))\n",
        _without_keys(),
    )
    assert result.returncode != 0
    assert "no credentials for s3://" in result.stderr


def test_credentials_from_a_shared_profile_file(s3_server, tmp_path):
    """The standard chain includes ~/.aws/credentials profiles, which object_store alone does not read."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[team]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    bucket = s3_server.new_bucket()
    result = _python(
        "from storage.location import as_location\n"
        f"p = as_location('s3://{bucket}/x.txt'); p.write_bytes(b'hi'); print(p.read_text())\n",
        _without_keys(AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_PROFILE="team"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hi"
