"""`ray up` for real: sshd on a loopback port with a throwaway key, `ray up -y` of a
`provider: local` cluster file pointing at 127.0.0.1, a tiny sweep through `ray exec`, `ray down`.

Everything runs as the current user on this machine, under a temp dir: the SSH host and client
keys, sshd's config, the cluster file. Over SSH `ray` is not on the login shell's PATH, so the
file names the venv's executables; `ray down`'s own `ray stop` therefore finds no `ray` (which
is as well: it would stop every Ray of the user on the machine), and the test stops the head's
processes itself after `ray down` has released the node.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ray.autoscaler._private.local.config import get_state_path
from ray_nodes import RAY, RayNodes, free_port, tiny_sweep_args

from umtune.cluster.check import check

pytestmark = pytest.mark.slow  # sshd, `ray up`, a sweep: a minute or two
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SSHD = Path("/usr/sbin/sshd")


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture
def sshd(tmp_path):
    """sshd on 127.0.0.1:<free port>, accepting one throwaway key for the current user."""
    _keygen(tmp_path / "host_key")
    _keygen(tmp_path / "client_key")
    (tmp_path / "authorized_keys").write_text((tmp_path / "client_key.pub").read_text())
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {tmp_path / 'host_key'}",
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "UsePAM no",
        "StrictModes no", f"PidFile {tmp_path / 'sshd.pid'}", ""]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    ssh = ["ssh", "-i", str(tmp_path / "client_key"), "-p", str(port), "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           f"{getpass.getuser()}@127.0.0.1", "true"]
    for _ in range(50):
        if subprocess.run(ssh, capture_output=True).returncode == 0:
            break
        assert server.poll() is None, server.stderr.read().decode()
        time.sleep(0.2)
    else:
        pytest.fail(f"sshd on port {port} never accepted the key")
    yield port, tmp_path / "client_key"
    server.terminate()
    server.wait(timeout=10)


def _cluster_file(path: Path, head: RayNodes, port: int, key: Path) -> Path:
    """A `provider: local` file for one head on 127.0.0.1 that, like ray_cluster.yaml, copies
    this checkout and the Ray token to the node with file_mounts and pip-installs umtune there
    (into a folder of the test's, put first on the PYTHONPATH of the head's Ray and of the
    sweep); the node's Ray reads the token it was given (RAY_AUTH_TOKEN_PATH)."""
    node = path.parent / "node"
    env = {**head.env, **_on_node(node)}
    start = " ".join(map(shlex.quote, head.head_command(cpus=2)))
    config = {
        "cluster_name": f"umtune-test-{port}",
        "provider": {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []},
        "auth": {"ssh_user": getpass.getuser(), "ssh_private_key": str(key),
                 # Ray's SSH runner has no port option: reach the test's sshd through nc.
                 "ssh_proxy_command": f"nc %h {port}"},
        "max_workers": 0,
        "file_mounts": {str(node / "umtune"): str(ROOT),
                        str(node / "auth_token"): os.environ["RAY_AUTH_TOKEN_PATH"]},
        "rsync_exclude": [".venv", ".git", ".*_cache", "data", "sweeps", "reports", "*.egg-info"],
        # The venv already holds umtune's pinned dependencies: install umtune alone.
        "setup_commands": [f"{BIN / 'pip'} install --quiet --no-deps --no-build-isolation "
                           f"--target {node / 'site'} {node / 'umtune'}"],
        "head_start_ray_commands": [f"{_exports(env)} {start}"],
        "worker_start_ray_commands": [],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _on_node(node: Path) -> dict[str, str]:
    """What commands on the node run with: token auth with the token file_mounts copied there,
    and the umtune the setup commands installed."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(node / "auth_token"),
            "PYTHONPATH": str(node / "site")}


def _exports(env: dict[str, str]) -> str:
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def _ray(*args: str, timeout: float = 300) -> str:
    run = subprocess.run([str(RAY), *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "RAY_AUTH_MODE": "token"})
    assert run.returncode == 0, f"ray {args[0]}:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    return run.stdout + run.stderr


def test_ray_up_exec_down_on_localhost(sshd, tiny_dataset, tmp_path):
    port, key = sshd
    head = RayNodes()
    cluster = _cluster_file(tmp_path / "cluster.yaml", head, port, key)
    assert [f for f in check(cluster) if f.level == "error"] == []
    try:
        _ray("up", "-y", "--no-config-cache", "--disable-usage-stats", str(cluster))
        installed = _on_node(tmp_path / "node")
        where = _ray("exec", str(cluster), f"{_exports(installed)} {sys.executable} -c "
                     "'import umtune; print(umtune.__file__)'")
        assert f"{tmp_path}/node/site/umtune/__init__.py" in where, where
        args = tiny_sweep_args(tiny_dataset, str(tmp_path), "via-ray-exec", samples=1)
        sweep = " ".join([_exports(installed), *map(shlex.quote, [str(BIN / "umtune"), *args,
                                                                   "--address", head.address])])
        output = _ray("exec", str(cluster), sweep, timeout=400)
        assert "1 trials: 1 completed" in output, output[-3000:]
        table = pd.read_parquet(tmp_path / "via-ray-exec" / "trials.parquet")
        assert list(table["status"]) == ["completed"]
        _ray("down", "-y", str(cluster))
        state = json.loads(Path(get_state_path(f"umtune-test-{port}")).read_text())
        assert state["127.0.0.1"]["state"] == "terminated", state
    finally:
        head.stop()
        for leftover in ("state", "lock"):
            Path(get_state_path(f"umtune-test-{port}")).with_suffix(f".{leftover}").unlink(
                missing_ok=True)
    assert head.pids() == []
