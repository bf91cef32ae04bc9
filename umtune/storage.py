"""Where runs and sweeps live, and how files get there: local paths, shared file systems written
as file:///path, and cloud URIs (s3://, gs://, ... read and written with pyarrow.fs).

Every atomic write in the package is here: a file is written beside its final name and renamed
onto it (readers see the old file or the new one, never half), a folder is filled beside its
final name and swapped in. Kept free of heavy imports (pyarrow is imported on use): the CLI, the
sweep driver, Train workers and `umtune cluster check` all read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Storage every node of a cluster can reach: object stores, HDFS, and file systems mounted at
# the same path on every node (NFS, EFS, Lustre), written as file:///mnt/shared/...
SHARED_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "hdfs://", "file://")
_STAGED = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$")  # `staged`'s names: .NAME.PID.HEX.tmp


class Locked(OSError):
    """Another process holds the lock."""


def exclusive_lock(path: Path) -> int:
    """An exclusive `flock` on the file `path` (created if need be), held by the returned file
    descriptor until it is closed or the process ends (a killed holder's lock is free at once);
    `Locked` when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Locked(f"{path} is locked by another process") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder before us removed the file as we opened it: take the new one


def is_locked(path: Path) -> bool:
    """Whether another process holds `exclusive_lock(path)` now (a missing file: no)."""
    if not path.exists():
        return False
    try:
        os.close(exclusive_lock(path))
    except Locked:
        return True
    except OSError:  # cannot even open it: no writer of ours holds it
        return False
    return False


def refuse_output_in(output: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """No output may land on what a command reads: `output` must be none of `inputs` (what ->
    path; URIs and None are skipped) nor inside one that is a folder. A ValueError names both."""
    out = Path(output).resolve()
    for what, path in inputs.items():
        if path is None or local_path(str(path)) is None:
            continue
        source = local_path(str(path)).resolve()
        if out == source or (source.is_dir() and out.is_relative_to(source)):
            raise ValueError(f"output {output} lies in {what} {path}, which this command reads; "
                             "expected an output elsewhere")


def local_path(location: str) -> Path | None:
    """The file system path of a location given as a path or a file:// URI; None for a URI of
    any other scheme (written with pyarrow.fs instead)."""
    plain = location.removeprefix("file://")
    return None if "://" in plain else Path(plain)


def check_storage(storage: str | Path, alive_nodes: int) -> str:
    """The storage path Ray should use, refusing node-local disks on multi-node clusters.

    A plain path is taken to be on this node's disk: fine on one node (made absolute), an error
    on a cluster of several, whose workers could not write their checkpoints there. Shared
    storage is named by a URI: s3://, gs://, ... or file:///path for a filesystem mounted at
    the same path on every node (NFS, EFS, Lustre).
    """
    storage = str(storage)
    if storage.startswith(SHARED_SCHEMES):
        return storage
    if "://" in storage:
        raise ValueError(f"storage {storage!r}: unknown scheme; expected a local path or one of "
                         f"{', '.join(SHARED_SCHEMES)}")
    if alive_nodes > 1:
        raise ValueError(
            f"storage {storage!r} is a directory on this node's disk, but the Ray cluster has "
            f"{alive_nodes} nodes, whose workers cannot write checkpoints there. Use a cloud URI "
            "(s3://bucket/runs, gs://bucket/runs) or a filesystem mounted at the same path on "
            "every node, written as file:///mnt/shared/runs")
    return str(Path(storage).resolve())


def split_run_dir(run_dir: str | Path) -> tuple[str, str]:
    """`<storage>/<name>` -> (storage, name), for local paths and URIs alike."""
    text = str(run_dir).rstrip("/")
    if "://" not in text:
        path = Path(text).resolve()
        return str(path.parent), path.name
    storage, _, name = text.rpartition("/")
    if storage.endswith(":/"):
        raise ValueError(f"run directory {run_dir!r}: expected SCHEME://STORAGE/NAME")
    return storage, name


def absolute(location: str | Path) -> str:
    """A local path made absolute (Ray's processes run in folders of their own); URIs as they
    are."""
    return str(location) if "://" in str(location) else str(Path(location).resolve())


# -- atomic writes on a local file system ------------------------------------------------------

@contextlib.contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A temporary path beside `final` to write to; renamed onto `final` when the block ends
    without an error, removed when it raises. Created with mode 0666 less the umask; what a
    killed writer left beside `final` is removed first."""
    final = Path(final)
    for old in final.parent.glob(f".{final.name}.*.tmp"):
        match = _STAGED.match(old.name)
        if match and not process_alive(int(match.group(1))):
            old.unlink(missing_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_text_atomic(path: Path, text: str) -> Path:
    """Write text via a temporary file and a rename (creating the parent folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json_atomic(path: Path, data: dict) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")


_STAGED_DIR = re.compile(r"(\d+)-[0-9a-f]{8}")  # staged_dir's pid and token


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A fresh folder beside `final` to fill (with the permissions the umask allows); swapped
    in for `final` (replacing any folder there) when the block ends without an error, removed
    when it raises. What a killed writer left beside `final` is removed first."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".{final.name}-*"):
        match = _STAGED_DIR.fullmatch(old.name.removeprefix(f".{final.name}-"))
        if match and not process_alive(int(match.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    staging = final.with_name(f".{final.name}-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        yield staging
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# -- files at any location: a path, file:// or a cloud URI --------------------------------------

def _filesystem(location: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(location)


def join(location: str, *parts: str) -> str:
    return "/".join([str(location).rstrip("/"), *parts])


def exists(location: str) -> bool:
    if "://" not in location:
        return Path(location).exists()
    import pyarrow.fs

    fs, where = _filesystem(location)
    return fs.get_file_info(where).type != pyarrow.fs.FileType.NotFound


def read_bytes(location: str) -> bytes:
    """A file's bytes, local or at a URI; FileNotFoundError when there is none."""
    if "://" not in location:
        return Path(location).read_bytes()
    fs, where = _filesystem(location)
    with fs.open_input_stream(where) as f:
        return f.read()


def read_text(location: str) -> str | None:
    """A file's text, local or at a URI; None when there is none."""
    try:
        return read_bytes(location).decode()
    except FileNotFoundError:
        return None


def write_text(location: str, text: str) -> None:
    """Write a whole file: atomically on a file system; an object store's object appears whole
    by itself."""
    if (local := local_path(location)) is not None:
        write_text_atomic(local, text)
        return
    fs, where = _filesystem(location)
    fs.create_dir(where.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(where) as f:
        f.write(text.encode())


def delete(location: str) -> None:
    """Remove a file if it is there."""
    if (local := local_path(location)) is not None:
        local.unlink(missing_ok=True)
        return
    import pyarrow.fs

    fs, where = _filesystem(location)
    if fs.get_file_info(where).type != pyarrow.fs.FileType.NotFound:
        fs.delete_file(where)


def list_names(location: str) -> list[str]:
    """The names in a folder, local or at a URI; [] when there is none."""
    if (local := local_path(location)) is not None:
        return sorted(p.name for p in local.iterdir()) if local.is_dir() else []
    import pyarrow.fs

    fs, where = _filesystem(location)
    selector = pyarrow.fs.FileSelector(where, allow_not_found=True)
    return sorted(info.base_name for info in fs.get_file_info(selector))


def copy_dir(source: Path, location: str) -> None:
    """Copy the folder `source` to `location` (a path or a URI), replacing what is there: on a
    file system swapped in whole (`staged_dir`); an object store's objects each appear whole."""
    if (local := local_path(location)) is not None:
        with staged_dir(local) as staging:
            for file in sorted(Path(source).rglob("*")):
                target = staging / file.relative_to(source)
                if file.is_dir():
                    target.mkdir()
                else:
                    shutil.copyfile(file, target)  # an OSError names the file
        return
    import pyarrow.fs

    fs, where = _filesystem(location)
    delete_dir(location)
    pyarrow.fs.copy_files(str(source), where, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=fs)


def delete_dir(location: str) -> None:
    """Remove a folder and what it holds, if it is there."""
    if (local := local_path(location)) is not None:
        shutil.rmtree(local, ignore_errors=True)
        return
    import pyarrow.fs

    fs, where = _filesystem(location)
    if fs.get_file_info(where).type == pyarrow.fs.FileType.Directory:
        fs.delete_dir(where)
