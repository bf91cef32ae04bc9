"""`umtune cluster check`: Ray's schema from the installed ray package, then umtune's rules,
run on the shipped cluster files and on real broken variants of them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from umtune.cli import main
from umtune.cluster.check import RAY_VERSION, check, load

ROOT = Path(__file__).resolve().parents[1]


def _filled(name: str) -> dict:
    """A shipped file with its placeholders filled in, as a user would before `ray up`."""
    return yaml.safe_load((ROOT / name).read_text().replace("REPLACE_ME", "10.0.0.9"))


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _errors(tmp_path: Path, config: dict, **kw) -> list[str]:
    return [f"{f.where}: {f.message}" for f in check(_write(tmp_path, config), **kw)
            if f.level == "error"]


def test_shipped_aws_file_passes_once_its_placeholder_is_filled(tmp_path, capsys):
    assert main(["cluster", "check", str(ROOT / "ray_cluster.yaml"), "--gpu"]) == 1
    assert "initialization_commands.0: fill in REPLACE_ME" in capsys.readouterr().out
    assert main(["cluster", "check", str(_write(tmp_path, _filled("ray_cluster.yaml")),),
                 "--gpu"]) == 0
    assert "ok (Ray 2.60.0 schema" in capsys.readouterr().out


def test_shipped_aws_file_keeps_the_project_promises():
    config = _filled("ray_cluster.yaml")
    assert f"rayproject/ray:{RAY_VERSION}" in config["docker"]["image"]
    assert "security_group" not in config["provider"]  # Ray's own group opens SSH to the world
    types = config["available_node_types"]
    assert all(t["node_config"]["SecurityGroupIds"] == ["10.0.0.9"] for t in types.values())
    assert types["head"]["node_config"]["IamInstanceProfile"] == {"Arn": "10.0.0.9"}
    assert not any("IamInstanceProfile" in t["node_config"] for n, t in types.items()
                   if n != "head")
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert not any("dashboard-host" in c for c in config["head_start_ray_commands"])
    gpus = [t["node_config"]["InstanceType"] for t in config["available_node_types"].values()]
    assert {"g6e.12xlarge", "p5.48xlarge"} <= set(gpus)


def test_on_premise_file_warns_that_gpus_are_detected_not_declared(tmp_path):
    findings = check(_write(tmp_path, _filled("cluster/local.yaml")), gpu=True)
    assert [f.level for f in findings] == ["warning"]
    assert "ray status" in findings[0].message


def test_kuberay_manifest_is_checked_and_passes_once_its_image_is_named(tmp_path, capsys):
    """The shipped RayCluster: its placeholders are errors, filled in it passes with --gpu."""
    assert main(["cluster", "check", str(ROOT / "cluster/kuberay.yaml"), "--gpu"]) == 1
    out = capsys.readouterr().out
    assert "spec.headGroupSpec.template.spec.containers.0.image: fill in REPLACE_ME" in out
    assert main(["cluster", "check", str(_write(tmp_path, _filled("cluster/kuberay.yaml"))),
                 "--gpu"]) == 0
    manifest = load(ROOT / "cluster/kuberay.yaml")
    assert manifest["spec"]["rayVersion"] == RAY_VERSION
    assert f"rayproject/ray:{RAY_VERSION}" in (ROOT / "cluster/Dockerfile").read_text()


def _pods(config: dict) -> list[dict]:
    spec = config["spec"]
    return [c for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
            for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("break_it, expected", [
    (lambda c: [p.pop("env") for p in _pods(c)], "containers.0.env: no token auth"),
    (lambda c: _pods(c)[1]["env"][0].update(value="disabled"),
     "workerGroupSpecs.0.template.spec.containers.0.env: RAY_AUTH_MODE=disabled"),
    (lambda c: _pods(c)[0]["env"][1].update(value="0123456789abcdef", valueFrom=None),
     "env.RAY_AUTH_TOKEN: a secret is written into the file (RAY_AUTH_TOKEN=...)"),
    (lambda c: c["spec"]["headGroupSpec"].update(serviceType="LoadBalancer"),
     "spec.headGroupSpec.serviceType: LoadBalancer puts the head's GCS and dashboard"),
    (lambda c: [g["template"]["spec"].pop("volumes") for g in c["spec"]["workerGroupSpecs"]],
     "worker pods but no storage they all see"),
    (lambda c: c["spec"].update(rayVersion="2.9.0"), "spec.rayVersion: '2.9.0'; umtune pins"),
    (lambda c: [p.update(image="rayproject/ray:2.60.0") for p in _pods(c)],
     "'rayproject/ray:2.60.0' does not hold umtune"),
    (lambda c: c["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
     ["resources"]["limits"].pop("nvidia.com/gpu"), "no worker group has GPUs"),
])
def test_kuberay_rules(tmp_path, break_it, expected):
    """Each broken variant of the shipped RayCluster is an error naming the field."""
    config = _filled("cluster/kuberay.yaml")
    break_it(config)
    errors = _errors(tmp_path, config, gpu=True)
    assert any(expected in e for e in errors), errors


def test_schema_errors_name_the_field(tmp_path):
    config = _filled("ray_cluster.yaml")
    del config["available_node_types"]["gpu_4x"]["node_config"]
    config["available_node_types"]["gpu_8x"]["max_workers"] = "two"
    config["auth"]["ssh_port"] = 2222
    errors = _errors(tmp_path, config)
    assert len(errors) == 3, errors
    assert any(e.startswith("auth: Ray's schema: Additional properties") for e in errors)
    assert any(e.startswith("available_node_types.gpu_4x: Ray's schema: 'node_config' is a "
                            "required property") for e in errors)
    assert any(e.startswith("available_node_types.gpu_8x.max_workers: Ray's schema: 'two'")
               for e in errors)


@pytest.mark.parametrize("break_it, expected", [
    (lambda c: c.update(head_node_type="cpu"), "head_node_type: 'cpu' is not one of"),
    (lambda c: c["available_node_types"]["gpu_8x"].update(min_workers=3),
     "min_workers 3 > max_workers 2"),
    (lambda c: c.update(setup_commands=["pip install torch"]),
     "nothing installs umtune on the head nodes"),
    (lambda c: c["docker"].update(image="rayproject/ray:2.9.0-py311-gpu"),
     "Ray 2.9.0 on the nodes; umtune pins ray==2.60.0"),
    (lambda c: c.update(setup_commands=["pip install ray[default]==2.59.0 -e ~/umtune"]),
     "setup_commands: Ray 2.59.0 on the nodes"),
    (lambda c: c.update(initialization_commands=[]), "no storage they all see"),
    (lambda c: [c["available_node_types"].pop(t) for t in ("gpu_4x", "gpu_8x")],
     "no node type has GPUs"),
    (lambda c: c["provider"].update(security_group={"GroupName": "g", "IpPermissions": [
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp",
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}), "tcp port 8265 open to 0.0.0.0/0"),
])
def test_project_rules(tmp_path, break_it, expected):
    config = _filled("ray_cluster.yaml")
    break_it(config)
    errors = _errors(tmp_path, config, gpu=True)
    assert any(expected in e for e in errors), errors


def test_shared_storage_uri_or_a_single_node_needs_no_mount(tmp_path):
    config = _filled("ray_cluster.yaml")
    config["initialization_commands"] = []
    assert "--storage 'sweeps': up to 10 worker node(s)" in \
        _errors(tmp_path, config, storage="sweeps")[0]
    assert _errors(tmp_path, config, storage="s3://bucket/umtune") == []
    single = copy.deepcopy(config)
    for node_type in ("gpu_4x", "gpu_8x"):
        single["available_node_types"][node_type]["max_workers"] = 0
    assert _errors(tmp_path, single) == []


@pytest.mark.parametrize("option, where", [
    (" --dashboard-host=0.0.0.0", "head_start_ray_commands.1"),
    (" --dashboard-host 0.0.0.0", "head_start_ray_commands.1"),
    (" --dashboard-host=::", "head_start_ray_commands.1"),
    (' --dashboard-host "[::]"', "head_start_ray_commands.1"),
    (" --dashboard-host=0.0.0.0", "worker_start_ray_commands.1"),
])
def test_a_dashboard_on_every_interface_is_an_error(tmp_path, capsys, option, where):
    """--dashboard-host 0.0.0.0 or :: (any spelling, any start command) exposes the job API."""
    config = _filled("ray_cluster.yaml")
    config[where.rpartition(".")[0]][1] += option
    findings = check(_write(tmp_path, config))
    assert [(f.level, f.where) for f in findings] == [("error", where)]
    assert "listens on every interface" in findings[0].message
    assert main(["cluster", "check", str(_write(tmp_path, config))]) == 1


def test_a_dashboard_on_one_address_is_a_warning_and_warnings_pass(tmp_path):
    config = _filled("ray_cluster.yaml")
    config["head_start_ray_commands"][1] += " --dashboard-host=10.0.0.5"
    assert [(f.level, f.where) for f in check(_write(tmp_path, config))] == [
        ("warning", "head_start_ray_commands.1")]
    assert main(["cluster", "check", str(_write(tmp_path, config))]) == 0


def _without_token_mode(config: dict) -> dict:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        config[key] = [c.replace("RAY_AUTH_MODE=token ", "") for c in config[key]]
    return config


def test_token_auth_removed_from_the_start_commands_is_an_error(tmp_path):
    """`ray start` without RAY_AUTH_MODE=token, with nothing else setting it, on either file;
    and RAY_AUTH_MODE=disabled anywhere."""
    aws = _without_token_mode(_filled("ray_cluster.yaml"))
    aws["docker"]["run_options"].remove("--env RAY_AUTH_MODE=token")
    errors = _errors(tmp_path, aws)
    assert [e.partition(":")[0] for e in errors] == ["head_start_ray_commands.1",
                                                     "worker_start_ray_commands.1"]
    assert all("`ray start` without RAY_AUTH_MODE=token" in e for e in errors)
    local = _without_token_mode(_filled("cluster/local.yaml"))
    local["setup_commands"].pop()  # the ~/.bashrc export
    assert len(_errors(tmp_path, local)) == 2
    aws = _filled("ray_cluster.yaml")
    aws["head_start_ray_commands"][1] = aws["head_start_ray_commands"][1].replace(
        "RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled")
    assert any("RAY_AUTH_MODE=disabled switches token auth off" in e
               for e in _errors(tmp_path, aws))
    del aws["file_mounts"]["~/.ray/auth_token"]
    assert any(e.startswith("file_mounts: no Ray token reaches the nodes")
               for e in _errors(tmp_path, aws))


def test_token_mode_set_for_the_whole_node_is_enough(tmp_path):
    """The containers' environment (docker --env) or ~/.bashrc (Ray's token guide) covers the
    start commands too."""
    assert _errors(tmp_path, _without_token_mode(_filled("ray_cluster.yaml"))) == []
    assert _errors(tmp_path, _without_token_mode(_filled("cluster/local.yaml"))) == []


@pytest.mark.parametrize("command, what", [
    ("export RAY_AUTH_TOKEN=3f9a1c2b7d8e4f60a1b2c3d4e5f60718", "RAY_AUTH_TOKEN=..."),
    ("echo 3f9a1c2b7d8e4f60a1b2c3d4e5f60718 > ~/.ray/auth_token", "a Ray token"),
    ("AWS_SECRET_ACCESS_KEY='wJalrXUtnFEMI/K7MDENG' aws s3 ls", "AWS_SECRET_ACCESS_KEY=..."),
    ("aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
    ("pip install -e ~/umtune --index-url https://u:pw@x --password=hunter2", "password=..."),
])
def test_a_secret_written_into_a_command_is_an_error_that_does_not_repeat_it(
        tmp_path, command, what):
    config = _filled("ray_cluster.yaml")
    config["setup_commands"].append(command)
    errors = _errors(tmp_path, config)
    at = len(config["setup_commands"]) - 1
    assert errors == [f"setup_commands.{at}: a secret is written into the file ({what}): cluster "
                      "files are shared and Ray prints the commands it runs; ship it as a file "
                      "(the Ray token: file_mounts of ~/.ray/auth_token) or a Kubernetes Secret"]
    for secret in ("3f9a1c2b", "wJalrXUt", "AKIAIOSF", "hunter2"):
        assert secret not in errors[0]


def test_references_to_secrets_are_not_secrets(tmp_path):
    config = _filled("ray_cluster.yaml")
    config["setup_commands"] += ["export RAY_AUTH_TOKEN=$(cat ~/.ray/auth_token)",
                                 "RAY_AUTH_TOKEN_PATH=/etc/ray/token ray status"]
    assert _errors(tmp_path, config) == []


def _rule(protocol="tcp", low=8265, high=8265, v4=(), v6=()) -> dict:
    rule = {"IpProtocol": protocol, "IpRanges": [{"CidrIp": c} for c in v4],
            "Ipv6Ranges": [{"CidrIpv6": c} for c in v6]}
    return {**rule, "FromPort": low, "ToPort": high} if protocol != "-1" else rule


@pytest.mark.parametrize("rules, expected", [
    ([_rule(v4=["0.0.0.0/1", "128.0.0.0/1"])], "tcp port 8265 open to 0.0.0.0/0"),
    ([_rule(v4=["0.0.0.0/1"]), _rule(v4=["128.0.0.0/1"])],
     "IpPermissions.0, 1: tcp port 8265 open to 0.0.0.0/0"),
    ([_rule(v4=["0.0.0.0/1"])], "tcp port 8265 open to 0.0.0.0/1"),
    ([_rule(v6=["::/0"])], "tcp port 8265 open to ::/0"),
    ([_rule("-1", v4=["0.0.0.0/0"])], "all protocols and ports open to 0.0.0.0/0"),
    ([_rule(low=0, high=65535, v4=["0.0.0.0/0"])], "tcp ports 0-65535 open to 0.0.0.0/0"),
])
def test_ports_open_to_most_of_the_internet_are_errors_however_the_ranges_are_split(
        tmp_path, rules, expected):
    config = _filled("ray_cluster.yaml")
    config["provider"]["security_group"] = {"GroupName": "g", "IpPermissions": rules}
    errors = _errors(tmp_path, config)
    assert any(expected in e for e in errors), errors
    assert not any("None" in e for e in errors)


def test_ssh_to_the_world_and_ray_default_group_are_warnings(tmp_path):
    """SSH from 0.0.0.0/0 (Ray's default group does that too) runs but is flagged; SSH from
    one range and private ranges pass."""
    config = _filled("ray_cluster.yaml")
    config["provider"]["security_group"] = {"GroupName": "g", "IpPermissions": [
        _rule(low=22, high=22, v4=["0.0.0.0/0"]), _rule(v4=["10.0.0.0/8"])]}
    for t in config["available_node_types"].values():
        del t["node_config"]["SecurityGroupIds"]
    findings = check(_write(tmp_path, config))
    assert {f.level for f in findings} == {"warning"}
    assert any("SSH (22) is open to 0.0.0.0/0" in f.message for f in findings)
    assert any("without SecurityGroupIds get Ray's default group" in f.message
               for f in findings)


def test_an_aws_head_without_an_instance_profile_is_an_error(tmp_path):
    config = _filled("ray_cluster.yaml")
    del config["available_node_types"]["head"]["node_config"]["IamInstanceProfile"]
    assert _errors(tmp_path, config) == [
        "available_node_types.head.node_config: no IamInstanceProfile for the head: Ray would "
        "create ray-autoscaler-v1 with AmazonEC2FullAccess and AmazonS3FullAccess; give it the "
        "least-privilege profile of cluster/aws-account.yaml"]


def test_the_shipped_aws_account_stack_grants_least_privilege_and_ssh_from_one_range():
    """cluster/aws-account.yaml: writes only on instances tagged with the cluster's name (or
    created by that launch), reads only Describe*, nothing of S3 or IAM; SSH only from the
    SshCidr the user must give, which has no default."""
    stack = yaml.safe_load((ROOT / "cluster/aws-account.yaml").read_text())
    statements = stack["Resources"]["HeadRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"]
    actions = [a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str)
                                               else s["Action"])]
    assert all(a.startswith("ec2:") and "*" not in a for a in actions), actions
    for s in statements:
        assert s["Effect"] == "Allow"
        if s["Resource"] == "*":
            assert all(a.startswith("ec2:Describe") for a in s["Action"]), s
        writes = {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"}
        if writes & set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]]):
            assert s["Condition"]["StringEquals"] == {
                "ec2:ResourceTag/ray-cluster-name": {"Ref": "ClusterName"}}
    launch = [s for s in statements if s["Action"] == "ec2:RunInstances"
              and "instance/*" in str(s["Resource"])]
    assert launch[0]["Condition"]["StringEquals"] == {
        "aws:RequestTag/ray-cluster-name": {"Ref": "ClusterName"}}
    group = stack["Resources"]["NodeSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert group == [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                      "CidrIp": {"Ref": "SshCidr"}}]
    assert "Default" not in stack["Parameters"]["SshCidr"]
    assert set(stack["Outputs"]) == {"HeadInstanceProfileArn", "NodeSecurityGroupId"}


@pytest.mark.parametrize("text, expected", [
    ("cluster_name: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping of cluster fields, got list"),
])
def test_unreadable_files_name_the_file(tmp_path, text, expected, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["cluster", "check", str(path)]) == 2
    assert f"{path}: {expected}" in capsys.readouterr().err
