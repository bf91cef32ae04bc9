"""Where runs and sweeps live: a local path, a shared file system as file:///path, or a URI.

Kept free of heavy imports: the CLI, the sweep driver, Train workers and `umtune cluster check`
all read it.
"""

from __future__ import annotations

from pathlib import Path

# Storage every node of a cluster can reach: object stores, HDFS, and file systems mounted at
# the same path on every node (NFS, EFS, Lustre), written as file:///mnt/shared/...
SHARED_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "hdfs://", "file://")


def local_path(location: str) -> Path | None:
    """The file system path of a location given as a path or a file:// URI; None for a URI of
    any other scheme (written with pyarrow.fs instead)."""
    plain = location.removeprefix("file://")
    return None if "://" in plain else Path(plain)
