"""The security rules of `umtune cluster check`: who can reach a cluster and what they hold.

- Token auth (Ray 2.60): every `ray start` runs with RAY_AUTH_MODE=token, nothing switches it
  off, and the token reaches every node as a file (file_mounts), the way Ray's token guide does
  it (docs.ray.io, ray-security/token-auth). Without it anyone who reaches a Ray port runs code.
- The dashboard, and with it the job API (code execution), listens on 127.0.0.1 only.
- Security group rules open nothing but SSH to the internet, and SSH only to a chosen range:
  address ranges are unioned before they are judged (0.0.0.0/1 + 128.0.0.0/1 is the world).
- No secret is written into a command or a container's environment: cluster files are shared
  and committed, and Ray prints the commands it runs.
- On AWS the head names its instance profile: without one Ray creates `ray-autoscaler-v1` with
  AmazonEC2FullAccess and AmazonS3FullAccess (cluster/aws-account.yaml ships a narrow one).
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from umtune.cluster.findings import Finding

START = re.compile(r"(?:^|[\s;&|/])ray\s+start\b")
TOKEN_MODE = re.compile(r"\bRAY_AUTH_MODE=([\"']?)token\1(?=[\s;&|\"']|$)")
OTHER_MODE = re.compile(r"\bRAY_AUTH_MODE=([\"']?)(?!token\b|[$`])([\w-]*)")
TOKEN_FILE = re.compile(r"(?:^|/)\.ray/auth_token$")
TOKEN_PATH = re.compile(r"\bRAY_AUTH_TOKEN_PATH=([\"']?)([^\s\"';&|]+)")
# NAME=literal where NAME says secret (a path or a $reference is no secret)
SECRET_VARIABLE = re.compile(
    r"\b([A-Za-z0-9_]*(?:TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY)"
    r"[A-Za-z0-9_]*)=([\"']?)(?![$`\"'\s])(\S+)", re.IGNORECASE)
SECRET_LITERALS = (
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b(?:echo|printf)\s+([\"']?)(?![$`])[^\s\"';&|]{8,}\1\s*>{1,2}\s*\S*auth_token"),
     "a Ray token"),
)
ALL_INTERFACES = {"0.0.0.0", "::", "[::]", "0:0:0:0:0:0:0:0", "*"}
LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
SSH = ("tcp", 22, 22)
WIDE_PREFIX = {4: 8, 6: 32}  # a public range this wide (or wider) counts as the internet
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                              "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                                              "fc00::/7", "fe80::/10")]


def secrets(where: str, text: str) -> list[Finding]:
    """An error for a secret written into `text` (a command, an option, an env entry); the
    message names the variable or the kind of secret, never its value."""
    found = []
    for match in SECRET_VARIABLE.finditer(text):
        name = match.group(1)
        if name.upper().endswith(("_PATH", "_FILE", "_DIR")) or name.upper() == "RAY_AUTH_MODE":
            continue
        found.append(f"{name}=...")
    found += [kind for pattern, kind in SECRET_LITERALS if pattern.search(text)]
    return [Finding("error", where, f"a secret is written into the file ({what}): cluster files "
                    "are shared and Ray prints the commands it runs; ship it as a file (the Ray "
                    "token: file_mounts of ~/.ray/auth_token) or a Kubernetes Secret")
            for what in dict.fromkeys(found)]


def launcher_commands(config: dict) -> list[tuple[str, str]]:
    """(field, text) of every command and docker option of a `ray up` file."""
    keys = ["initialization_commands", "setup_commands", "head_setup_commands",
            "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"]
    out = [(f"{k}.{i}", str(c)) for k in keys for i, c in enumerate(config.get(k) or [])]
    for name, node in (config.get("available_node_types") or {}).items():
        for k in ("initialization_commands", "worker_setup_commands"):
            out += [(f"available_node_types.{name}.{k}.{i}", str(c))
                    for i, c in enumerate(node.get(k) or [])]
    docker = config.get("docker") or {}
    for k in ("run_options", "head_run_options", "worker_run_options"):
        out += [(f"docker.{k}.{i}", str(c)) for i, c in enumerate(docker.get(k) or [])]
    return out


def launcher_findings(config: dict) -> list[Finding]:
    """Token auth, the dashboard, secrets, security groups and the head's IAM profile."""
    commands = launcher_commands(config)
    found = [f for where, text in commands for f in secrets(where, text)]
    found += _token_auth(config, commands)
    found += [f for where, text in commands for f in dashboard(where, text)]
    if config["provider"].get("type") == "aws":
        found += _security_groups(config) + _iam_profile(config)
    return found


def _token_auth(config: dict, commands: list[tuple[str, str]]) -> list[Finding]:
    found = [Finding("error", where, f"RAY_AUTH_MODE={m.group(2) or '(empty)'} switches token "
                     "auth off: anyone who reaches the cluster's ports could run code; use "
                     "RAY_AUTH_MODE=token") for where, text in commands
             for m in OTHER_MODE.finditer(text)]
    docker = bool((config.get("docker") or {}).get("image") or
                  (config.get("docker") or {}).get("head_image"))
    # Where RAY_AUTH_MODE=token reaches every later command: the containers' environment, or a
    # login shell's ~/.bashrc (written where those commands run: the container under docker).
    shell_wide = ("docker.", "setup_commands", "head_setup_commands", "worker_setup_commands",
                  "available_node_types") + (() if docker else ("initialization_commands",))
    everywhere = any(where.startswith(shell_wide) and TOKEN_MODE.search(text)
                     and (where.startswith("docker.") or ".bashrc" in text)
                     for where, text in commands)
    for where, text in commands:
        if where.startswith(("head_start_ray_commands", "worker_start_ray_commands")) and \
                START.search(text) and not TOKEN_MODE.search(text) and not everywhere:
            found.append(Finding("error", where, "`ray start` without RAY_AUTH_MODE=token: the "
                                 "node would run without token auth, open to anyone who reaches "
                                 "its ports; prefix the command with RAY_AUTH_MODE=token"))
    mounts = [str(remote) for remote in (config.get("file_mounts") or {})]
    paths = {m.group(2) for _, text in commands for m in TOKEN_PATH.finditer(text)}
    if not any(TOKEN_FILE.search(m.rstrip("/")) or m in paths for m in mounts):
        found.append(Finding("error", "file_mounts", "no Ray token reaches the nodes: add "
                             "'~/.ray/auth_token: ~/.ray/auth_token' (create it once with "
                             "`ray get-auth-token --generate`)"))
    return found


def dashboard(where: str, text: str) -> list[Finding]:
    """An error for a dashboard bound to every interface, a warning for any other address but
    loopback; in a command (`--dashboard-host X`) or a KubeRay rayStartParams value."""
    try:
        words = shlex.split(text)
    except ValueError:  # unbalanced quotes: read it as plain words
        words = text.split()
    hosts = []
    for i, word in enumerate(words):
        if word.startswith("--dashboard-host="):
            hosts.append(word.partition("=")[2])
        elif word == "--dashboard-host" and i + 1 < len(words):
            hosts.append(words[i + 1])
    return [host_finding(where, host) for host in hosts if host not in LOOPBACK]


def host_finding(where: str, host: str) -> Finding:
    if host in ALL_INTERFACES:
        return Finding("error", where, f"the dashboard listens on every interface ({host}): its "
                       "job API runs code for anyone who reaches port 8265; keep Ray's default "
                       "127.0.0.1 and use `ray dashboard FILE` (an SSH tunnel)")
    return Finding("warning", where, f"the dashboard listens on {host}, not only 127.0.0.1: "
                   "whoever reaches that address can submit jobs (with the token)")


def _security_groups(config: dict) -> list[Finding]:
    found = []
    rules = (config["provider"].get("security_group") or {}).get("IpPermissions") or []
    by_ports: dict[tuple, list] = {}
    for i, rule in enumerate(rules):
        where = f"provider.security_group.IpPermissions.{i}"
        networks = []
        for key, field in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
            for r in rule.get(key) or []:
                try:
                    networks.append(ipaddress.ip_network(str(r.get(field)), strict=False))
                except ValueError:
                    found.append(Finding("error", where, f"{field} {r.get(field)!r} is not an "
                                         "address range; expected a CIDR such as 203.0.113.7/32"))
        by_ports.setdefault(_ports(rule), []).append((where, networks))
    for ports, entries in by_ports.items():
        networks = [n for _, ns in entries for n in ns]
        wide = _wide(networks)
        if not wide:
            continue
        where = entries[0][0] if len(entries) == 1 else \
            ", ".join(w.rpartition(".")[2] for w, _ in entries).join(("provider.security_group."
                                                                       "IpPermissions.", ""))
        opened = ", ".join(map(str, wide))
        if ports == SSH:
            found.append(Finding("warning", where, f"SSH (22) is open to {opened}, most of the "
                                 "internet; open it to your own range only"))
        else:
            found.append(Finding("error", where, f"{_describe(ports)} open to {opened}, most of "
                                 "the internet; only SSH (22) should be, to your own range: "
                                 "reach the dashboard with `ray dashboard FILE`"))
    missing = [n for n, t in (config.get("available_node_types") or {}).items()
               if not (t.get("node_config") or {}).get("SecurityGroupIds")]
    if missing:
        found.append(Finding("warning", f"available_node_types.{missing[0]}.node_config",
                             f"{', '.join(missing)} without SecurityGroupIds get Ray's default "
                             "group, which opens SSH (22) to 0.0.0.0/0; use the group of "
                             "cluster/aws-account.yaml (SSH from your range only)"))
    return found


def _ports(rule: dict) -> tuple:
    protocol = str(rule.get("IpProtocol", "-1")).lower()
    if protocol in ("-1", "all"):
        return ("all",)
    return (protocol, rule.get("FromPort"), rule.get("ToPort"))


def _describe(ports: tuple) -> str:
    if ports == ("all",):
        return "all protocols and ports"
    protocol, low, high = ports
    if low is None or low == -1:
        return f"all of {protocol}"
    return f"{protocol} port {low}" if low == high else f"{protocol} ports {low}-{high}"


def _wide(networks: list) -> list:
    """The ranges, after merging adjacent ones, at least WIDE_PREFIX wide and not inside a
    private range (ipaddress's `is_private` calls 0.0.0.0/1 private: both its ends are)."""
    wide = []
    for version in (4, 6):
        merged = ipaddress.collapse_addresses(n for n in networks if n.version == version)
        wide += [n for n in merged if n.prefixlen <= WIDE_PREFIX[version] and not any(
            n.version == p.version and n.subnet_of(p) for p in PRIVATE)]
    return wide


def _iam_profile(config: dict) -> list[Finding]:
    head = config.get("head_node_type")
    node = (config.get("available_node_types") or {}).get(head) or {}
    if (node.get("node_config") or {}).get("IamInstanceProfile") or \
            (config.get("head_node") or {}).get("IamInstanceProfile"):
        return []
    return [Finding("error", f"available_node_types.{head}.node_config",
                    "no IamInstanceProfile for the head: Ray would create ray-autoscaler-v1 with "
                    "AmazonEC2FullAccess and AmazonS3FullAccess; give it the least-privilege "
                    "profile of cluster/aws-account.yaml")]
