"""The deployment artefacts, checked without a container daemon or a cluster (issue 20):
hadolint on the Dockerfile, yamllint on every YAML file of the deployment, compose.yaml
against the Compose Specification's schema, the Kubernetes manifests against the API's
schemas (kubernetes-validate, offline, strict), and the promises the files make to each
other: every setting named in compose.yaml, the same image entry points, grace periods
that cover the shutdown drain. Each linter is also shown a broken file, so a linter that
passes everything would fail here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import describe

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
YAML_FILES = [
    ROOT / "compose.yaml",
    ROOT / ".yamllint.yaml",
    *sorted((ROOT / "deploy").glob("*.yaml")),
    *K8S,
]


def run(tool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / tool), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_dockerfile_is_hadolint_clean(tmp_path: Path) -> None:
    done = run("hadolint", "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install litestar\n")
    assert run("hadolint", bad).returncode != 0


def test_yaml_is_yamllint_clean(tmp_path: Path) -> None:
    done = run("yamllint", "--strict", *YAML_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\n")
    assert run("yamllint", "--strict", "-c", ROOT / ".yamllint.yaml", bad).returncode != 0


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    done = run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "compose.yaml"
    bad.write_text(
        "services:\n  api:\n    image: x\n    depends_on:\n      db: {condition: maybe}\n"
    )
    assert run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", bad).returncode


def test_kubernetes_manifests_validate_offline(tmp_path: Path) -> None:
    done = run("kubernetes-validate", "--strict", "--quiet", *K8S)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 2}\n"
    )
    assert run("kubernetes-validate", "--strict", "--quiet", bad).returncode != 0


def test_compose_names_every_setting_and_runs_the_three_commands() -> None:
    compose = documents(ROOT / "compose.yaml")[0]
    env = compose["x-wedsync-env"]
    assert isinstance(env, dict)
    named = {v for v, _, _ in describe() if not v.startswith("WEDSYNC_DEV_")}
    assert named - set(env) == set(), "compose.yaml does not name these settings"
    assert set(env) - named == set(), "compose.yaml names settings that do not exist"
    services = compose["services"]
    assert isinstance(services, dict)
    commands = {name: s.get("command") for name, s in services.items() if "nats" not in name}
    assert commands["migrate"] == ["migrate"] and commands["api"] == ["api"]
    workers = {c[1] for c in commands.values() if isinstance(c, list) and c[0] == "worker"}
    assert workers == {"presence", "conflicts", "notifications", "retention"}
    assert services["api"]["deploy"]["replicas"] == 2
    assert env["WEDSYNC_STREAM_REPLICAS"] == "${WEDSYNC_STREAM_REPLICAS:-3}"
    assert sum(1 for n in services if re.fullmatch(r"nats\d", n)) == 3


def test_no_secret_has_a_value_in_the_artefacts() -> None:
    for doc in documents(ROOT / "deploy" / "k8s" / "secret.yaml"):
        data = doc["stringData"]
        assert isinstance(data, dict) and all(v == "" for v in data.values())
    env = documents(ROOT / "compose.yaml")[0]["x-wedsync-env"]
    assert isinstance(env, dict)
    for name in (
        "WEDSYNC_DATA_KEY",
        "WEDSYNC_ADMIN_TOKEN",
        "WEDSYNC_JWT_SECRET",
        "WEDSYNC_METRICS_TOKEN",
        "WEDSYNC_SMTP_PASSWORD",
        "WEDSYNC_SMS_AUTH_TOKEN",
    ):
        assert re.fullmatch(rf"\$\{{{name}:[-?][^}}]*\}}", env[name]), env[name]
        assert env[name].endswith((":-}", f":?set {name}}}")), env[name]
    assert "ENV WEDSYNC_JWT" not in (ROOT / "Dockerfile").read_text()


def test_api_grace_period_covers_the_shutdown_drain() -> None:
    config = documents(ROOT / "deploy" / "k8s" / "configmap.yaml")[0]["data"]
    assert isinstance(config, dict)
    shutdown = float(config["WEDSYNC_SHUTDOWN_TIMEOUT"])
    api = next(
        d for d in documents(ROOT / "deploy" / "k8s" / "api.yaml") if d["kind"] == "Deployment"
    )
    pod = api["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # preStop, then the shutdown timeout, then NATS drain and pool close (5 s each at most)
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + shutdown + 5
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("path", ["Dockerfile", ".dockerignore"])
def test_image_leaves_local_state_out(path: str) -> None:
    text = (ROOT / path).read_text()
    if path == ".dockerignore":
        assert text.splitlines()[1] == "*"  # everything out, then the packages back in
    else:
        assert "USER 10001" in text and "HEALTHCHECK" in text and "/healthz" in text
