"""Real Ray nodes on this machine, started with `ray start` as a user would, stopped alone.

`ray stop` kills every Ray process of the user, whatever cluster it belongs to. These nodes
are started in process groups of their own and with a marker in their environment: Ray's
daemons and agents stay in the group, workers and job drivers inherit the marker. `stop()`
ends only the processes found either way, so a test never touches another Ray on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")
# Per-node agent ports: two nodes on one host would both default to the same ones.
AGENT_PORTS = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
               "--metrics-export-port", "--runtime-env-agent-port")
MARKER = "UMTUNE_TEST_RAY_NODES"
# One epoch of two steps on short segments: a trial costs little beyond Train's start-up.
TINY_TRIAL = ["train.max_epochs=1", "train.steps_per_epoch=2", "train.eval_segments=2",
              "data.segment_samples=800", "model.encoder.pool=200"]


def tiny_sweep_args(data: Path, storage: str, name: str, samples: int) -> list[str]:
    """`umtune sweep` arguments (after the executable) for `samples` tiny trials, each one
    1-CPU worker, no trial-end evaluation; add `--address` to join these nodes."""
    return ["sweep", "--space", "lambda-aug", "--samples", str(samples), "--search", "random",
            "--scheduler", "none", "--eval-clips", "0", "--data", str(data), "--storage",
            storage, "--name", name, *[arg for item in TINY_TRIAL for arg in ("--set", item)]]


def cpus_not_free(cpus: float, within: float = 60) -> float:
    """How many of the `cpus` CPUs of the cluster this process is connected to are still not
    free after up to `within` seconds (0 as soon as all are): taken by what a finished test
    left running, or lost with a node that died. Tune waits forever for CPUs, so on a shared
    cluster either would hang the next test's sweep."""
    import ray

    deadline = time.monotonic() + within
    while True:
        missing = cpus - ray.available_resources().get("CPU", 0)
        if missing <= 0 or time.monotonic() >= deadline:
            return max(missing, 0)
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNodes:
    """A head and optional extra nodes on 127.0.0.1, under a short temp dir of their own."""

    def __init__(self) -> None:
        # Unix socket paths live under it and must stay under ~100 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.groups: set[int] = set()  # process group ids, one per `ray start`

    def head_command(self, cpus: int, resources: dict | None = None) -> list[str]:
        """`ray start --head` for this cluster, as run here or written into a cluster YAML."""
        return self._command("--head", f"--port={self.port}", f"--temp-dir={self.temp_dir}",
                             "--include-dashboard=true", f"--dashboard-port={self.dashboard_port}",
                             f"--ray-client-server-port={free_port()}", cpus=cpus,
                             resources=resources)

    def start_head(self, cpus: int, resources: dict | None = None) -> RayNodes:
        self._run(self.head_command(cpus, resources))
        return self

    def add_node(self, cpus: int, resources: dict | None = None) -> None:
        self._run(self._command(f"--address={self.address}", cpus=cpus, resources=resources))

    def _command(self, *args: str, cpus: int, resources: dict | None) -> list[str]:
        ports = [f"{flag}={free_port()}" for flag in AGENT_PORTS]
        return [str(RAY), "start", *args, f"--num-cpus={cpus}", "--node-ip-address=127.0.0.1",
                f"--resources={json.dumps(resources or {})}", *ports, "--disable-usage-stats"]

    def _run(self, command: list[str]) -> None:
        start = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env={**os.environ, **self.env}, start_new_session=True)
        self.groups.add(start.pid)
        output = start.communicate(timeout=120)[0].decode()
        if start.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{output}")

    @property
    def env(self) -> dict[str, str]:
        """What `ray start` runs with: token auth, the marker its processes inherit, and a
        longer wait for the raylet to register (a loaded 2-core machine missed the default:
        "GCS cannot find the node ... Try increase the RAY_raylet_start_wait_time_s config")."""
        return {"RAY_AUTH_MODE": "token", MARKER: self.temp_dir,
                "RAY_raylet_start_wait_time_s": "60"}

    def pids(self) -> list[int]:
        """The live processes of these nodes (zombies excluded): those with the marker, those in
        the groups of `ray start`s run here, and those in the group of any process whose command
        line names the temp dir (a head started elsewhere, e.g. over SSH by `ray up`)."""
        marker = f"{MARKER}={self.temp_dir}".encode()
        procs = {}
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit():
                    state, _, group = (proc / "stat").read_text().rsplit(") ", 1)[1].split()[:3]
                    procs[int(proc.name)] = (state, int(group), (proc / "cmdline").read_bytes(),
                                             (proc / "environ").read_bytes().split(b"\0"))
            except OSError:  # gone meanwhile, or not ours to read
                pass
        groups = self.groups | {group for _, group, cmdline, _ in procs.values()
                                if self.temp_dir.encode() in cmdline} - {os.getpgrp()}
        return [pid for pid, (state, group, _, environ) in procs.items()
                if state != "Z" and pid != os.getpid() and (group in groups or marker in environ)]

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM this cluster's processes, SIGKILL what is left after `timeout`."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while left := self.pids():
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
            if not left:
                return
