"""The object client's API-server rules, validation with field paths, and the CLI's errors."""

from __future__ import annotations

import subprocess

import pytest

from controlplane.api import kinds
from controlplane.api.defaults import apply_defaults
from controlplane.api.validation import ValidationError, validate
from controlplane.client import retry_on_conflict
from controlplane.store.base import AlreadyExists, Conflict
from tests.controlplane.fakes import Env, deployment
from tests.controlplane.harness import ENV, KUBE
from tests.procs import REPO


def errors_of(obj: dict) -> list[str]:
    with pytest.raises(ValidationError) as e:
        validate(apply_defaults(obj))
    return [str(x) for x in e.value.errors]


def test_resource_version_is_mod_revision_and_updates_are_conditional():
    env = Env()
    d = env.create(deployment())
    kv = env.store.get(kinds.DEPLOYMENT.key("default", "web"))
    assert d["metadata"]["resourceVersion"] == str(kv.mod_revision)
    assert b"resourceVersion" not in kv.value, "not stored: read back from the key"
    assert d["metadata"]["generation"] == 1 and d["metadata"]["uid"] and d["metadata"]["creationTimestamp"]
    with pytest.raises(AlreadyExists):
        env.create(deployment())
    a = env.client.get(kinds.DEPLOYMENT, "default", "web")
    b = env.client.get(kinds.DEPLOYMENT, "default", "web")
    a["spec"]["replicas"] = 5
    env.client.update(a)
    b["spec"]["replicas"] = 7
    with pytest.raises(Conflict):
        env.client.update(b)

    def scale() -> dict:
        cur = env.client.get(kinds.DEPLOYMENT, "default", "web")
        cur["spec"]["replicas"] = 7
        return env.client.update(cur)

    env.store.fail_next = [Conflict("injected")]
    out = retry_on_conflict(scale, sleep=lambda _: None)
    assert out["spec"]["replicas"] == 7 and out["metadata"]["generation"] == 3


def test_status_and_spec_are_separate():
    env = Env()
    d = env.create(deployment())
    d["status"] = {"replicas": 9}
    d = env.client.update(d)
    assert d["status"] == {} and d["metadata"]["generation"] == 1, "update keeps status"
    d["status"] = {"replicas": 2}
    d["spec"]["replicas"] = 99
    d = env.client.update_status(d)
    assert d["status"] == {"replicas": 2} and d["spec"]["replicas"] == 3 and d["metadata"]["generation"] == 1


def test_field_paths():
    d = deployment()
    d["spec"]["replicas"] = -1
    d["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    c = d["spec"]["template"]["spec"]["containers"][0]
    del c["command"]
    c["resources"]["requests"]["cpu"] = "lots"
    d["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 0, "maxUnavailable": 0}
    errs = errors_of(d)
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in errs
    assert any(e.startswith("spec.template.metadata.labels: Invalid value") and "selector" in e for e in errs)
    assert any(e.startswith("spec.template.spec.containers[0].command: Required value") for e in errs)
    assert any(
        e.startswith('spec.template.spec.containers[0].resources.requests[cpu]: Invalid value: "lots"') for e in errs
    )
    assert "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0" in errs


def test_shape_errors():
    d = deployment()
    d["spec"]["replica"] = 3
    d["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    d["metadata"]["name"] = "Web_1"
    errs = errors_of(d)
    assert 'spec.replica: Unknown field "replica"' in errs
    d = deployment()
    d["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    d["spec"]["replicas"] = "three"
    errs = errors_of(d)
    assert 'spec.replicas: Invalid value: "three": must be an integer' in errs
    d["spec"]["replicas"] = 1
    errs = errors_of(d)
    assert errs == ['spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"']
    with pytest.raises(ValidationError, match=r'The Deployment "web" is invalid: spec\.template\.spec\.restartPolicy'):
        validate(d)


def test_cli_names_the_file_document_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
        "spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n"
        "  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: web\n"
    )
    r = subprocess.run(
        [*KUBE, "apply", "-f", str(bad), "--endpoints=127.0.0.1:1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=60,
    )
    assert r.returncode == 1
    assert f'error: {bad} (document 2): The Deployment "web" is invalid: ' in r.stderr
    assert "spec.template.spec.containers[0].command: Required value" in r.stderr
