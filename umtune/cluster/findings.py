"""What `umtune cluster check` reports, and the rules every kind of cluster file shares.

A `Finding` is one problem with the field it concerns. Shared here: the Ray version umtune pins,
the unfilled placeholders of the shipped examples, and the error for nodes that share no
storage. Launcher files (`ray up`) are checked in check.py, KubeRay manifests in kuberay.py,
their security (token auth, exposure, secrets) in security.py.
"""

from __future__ import annotations

from dataclasses import dataclass

RAY_VERSION = "2.60.0"  # pyproject.toml's pin; a cluster on another Ray cannot run umtune's code
PLACEHOLDER = "REPLACE_ME"


@dataclass(frozen=True)
class Finding:
    """One problem: `where` is the dotted field path it concerns ("" for the whole file)."""

    level: str  # "error" stops `ray up` or the sweep, or leaves the cluster open; "warning" runs
    where: str
    message: str


def placeholders(config, where: str = "") -> list[Finding]:
    """An error for every string that still holds PLACEHOLDER, naming its field."""
    if isinstance(config, dict):
        return [f for k, v in config.items()
                for f in placeholders(v, f"{where}.{k}" if where else str(k))]
    if isinstance(config, list):
        return [f for i, v in enumerate(config) for f in placeholders(v, f"{where}.{i}")]
    if PLACEHOLDER in str(config):
        return [Finding("error", where, f"fill in {PLACEHOLDER} ({str(config)[:80]!r})")]
    return []


def no_shared_storage(where: str, storage: str | None, nodes: str, how: str) -> Finding:
    """The error for a cluster of several nodes (`nodes` says which) that share no storage;
    `how` names what would fix it in this kind of file."""
    prefix = f"--storage {storage!r}: " if storage else ""
    return Finding("error", where, f"{prefix}{nodes} but no storage they all see: checkpoints "
                   f"and the dataset must be on {how}, or --storage a URI (s3://..., "
                   "file:///mnt/shared/...)")
