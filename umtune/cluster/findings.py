"""What `umtune cluster check` reports, and the rules every kind of cluster file shares.

A `Finding` is one problem with the field it concerns. Shared here: the Ray version umtune pins
and the unfilled placeholders of the shipped examples. Launcher files (`ray up`) are checked in
check.py, KubeRay manifests in kuberay.py, their security (token auth, exposure, secrets) in
security.py.
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
