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
    assert config["provider"]["security_group"].get("IpPermissions") is None  # only Ray's SSH
    assert not any("dashboard-host" in c for c in config["head_start_ray_commands"])
    gpus = [t["node_config"]["InstanceType"] for t in config["available_node_types"].values()]
    assert {"g6e.12xlarge", "p5.48xlarge"} <= set(gpus)


def test_on_premise_file_warns_that_gpus_are_detected_not_declared(tmp_path):
    findings = check(_write(tmp_path, _filled("cluster/local.yaml")), gpu=True)
    assert [f.level for f in findings] == ["warning"]
    assert "ray status" in findings[0].message


def test_kuberay_manifest_is_named_as_such_and_pins_ray():
    with pytest.raises(ValueError, match="KubeRay RayCluster.*kubectl apply --dry-run"):
        load(ROOT / "cluster/kuberay.yaml")
    manifest = yaml.safe_load((ROOT / "cluster/kuberay.yaml").read_text())
    assert manifest["spec"]["rayVersion"] == RAY_VERSION
    assert f"rayproject/ray:{RAY_VERSION}" in (ROOT / "cluster/Dockerfile").read_text()


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
    (lambda c: c["provider"]["security_group"].update(IpPermissions=[
        {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp",
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]), "ports 8265-8265 open to the world"),
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


def test_dashboard_on_every_interface_is_a_warning(tmp_path):
    config = _filled("ray_cluster.yaml")
    config["head_start_ray_commands"][1] += " --dashboard-host=0.0.0.0"
    findings = check(_write(tmp_path, config))
    assert [(f.level, f.where) for f in findings] == [("warning", "head_start_ray_commands.1")]
    assert main(["cluster", "check", str(_write(tmp_path, config))]) == 0  # warnings pass


@pytest.mark.parametrize("text, expected", [
    ("cluster_name: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping of cluster fields, got list"),
])
def test_unreadable_files_name_the_file(tmp_path, text, expected, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["cluster", "check", str(path)]) == 2
    assert f"{path}: {expected}" in capsys.readouterr().err
