"""Checks of .ci/deploy-check that no off-the-shelf tool makes.

deploy_validate.py manifests SCHEMA_DIR K8S_VERSION FILE...
    Each FILE is one `kubectl kustomize` output: strict Kubernetes schemas, the CRD schemas of
    SCHEMA_DIR, and (for names starting with `overlay-`, the deployable renders) the
    deployment rules. An object whose kind has no schema fails: unknown kinds never pass.
deploy_validate.py monitoring ALERTS DASHBOARD RUNBOOK TESTS...
    Every alert has `for`, a severity, summary/description, a runbook anchor that RUNBOOK
    has a heading for, and a promtool test that expects it to fire; the dashboard is sound.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

# Custom resources and the hand-written schema of each (deploy/schemas/README.md).
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}
SCALERS = {"HorizontalPodAutoscaler", "ScaledObject"}


def name_of(doc: dict[str, Any]) -> str:
    """`Kind/name` of an object."""
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def schema_errors(doc: dict[str, Any], schema_dir: Path, version: str) -> list[str]:
    """Every schema violation of one object (empty when valid)."""
    crd = CRD_SCHEMAS.get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if crd is not None:
        schema = json.loads((schema_dir / crd).read_text())
        validator = jsonschema.Draft202012Validator(schema)
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(doc)
        ]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"unknown kind {doc.get('apiVersion')} {doc.get('kind')}: no schema"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path)) or '(root)'}: {exc.message}"]
    return []


def uses_postgres(deployment: dict[str, Any], configmaps: dict[str, dict[str, str]]) -> bool:
    """True when the service container gets a DIALER_DATABASE_URL (else: SQLite)."""
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        names = {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            names |= set(configmaps.get(source.get("configMapRef", {}).get("name", ""), {}))
        if names & {"DIALER_DATABASE_URL", "DIALER_DATABASE_URL_FILE"}:
            return True
    return False


def rule_errors(docs: list[dict[str, Any]]) -> list[str]:
    """Rules of a deployable render: one autoscaler at most; SQLite means one replica."""
    errors = []
    configmaps = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"
    }
    targets: dict[str, list[str]] = {}
    for doc in docs:
        if doc["kind"] in SCALERS:
            target = doc["spec"]["scaleTargetRef"]["name"]
            targets.setdefault(target, []).append(name_of(doc))
    for target, scalers in targets.items():
        if len(scalers) > 1:
            errors.append(f"Deployment/{target} has several autoscalers: {', '.join(scalers)}")
    for doc in docs:
        if doc["kind"] != "Deployment" or uses_postgres(doc, configmaps):
            continue
        where = name_of(doc)
        if doc["spec"].get("replicas", 1) != 1:
            errors.append(f"{where}: SQLite ledger with {doc['spec']['replicas']} replicas")
        if doc["spec"].get("strategy", {}).get("type") != "Recreate":
            errors.append(
                f"{where}: SQLite ledger without strategy Recreate (two pods in a rollout)"
            )
        if doc["metadata"]["name"] in targets:
            errors.append(f"{where}: SQLite ledger with an autoscaler")
    return errors


def check_manifests(schema_dir: Path, version: str, files: list[Path]) -> int:
    """Validate every render; print one line per problem; the number of problems."""
    failures = 0
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        problems = [
            f"{name_of(doc)}: {error}"
            for doc in docs
            for error in schema_errors(doc, schema_dir, version)
        ]
        if path.name.startswith("overlay-"):
            problems += rule_errors(docs)
        for problem in problems:
            print(f"{path.name}: {problem}", file=sys.stderr)
        failures += len(problems)
        kinds = sorted({str(d["kind"]) for d in docs})
        print(
            f"  {path.name}: {len(docs)} objects ({', '.join(kinds)}): {len(problems)} problem(s)"
        )
    return failures


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def alert_errors(rule: dict[str, Any], anchors: set[str], tested: set[str]) -> list[str]:
    """What one alert rule lacks."""
    name, annotations = rule["alert"], rule.get("annotations", {})
    errors = []
    if "for" not in rule:
        errors.append("no `for:`")
    if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
        errors.append("severity is not warning or critical")
    errors += [
        f"no {key} annotation" for key in ("summary", "description") if key not in annotations
    ]
    runbook = annotations.get("runbook", "")
    if runbook != f"README.md#{github_anchor('Alert: ' + name)}":
        errors.append(f"runbook should be README.md#{github_anchor('Alert: ' + name)}")
    elif runbook.split("#")[1] not in anchors:
        errors.append(f"no heading 'Alert: {name}' in the runbook")
    if name not in tested:
        errors.append("no promtool test expects it to fire")
    return [f"{name}: {error}" for error in errors]


def check_monitoring(alerts: Path, dashboard: Path, runbook: Path, tests: list[Path]) -> int:
    """Alerts, runbook anchors, tests and dashboard; the number of problems."""
    anchors = {
        github_anchor(line.lstrip("#"))
        for line in runbook.read_text().splitlines()
        if line.startswith("#")
    }
    tested = {
        case["alertname"]
        for path in tests
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    rules = [r for g in yaml.safe_load(alerts.read_text())["groups"] for r in g["rules"]]
    problems = [e for r in rules if "alert" in r for e in alert_errors(r, anchors, tested)]
    panels = json.loads(dashboard.read_text())["panels"]
    ids = [p.get("id") for p in panels]
    if len(set(ids)) != len(ids):
        problems.append(f"{dashboard.name}: panel ids are not unique")
    for panel in panels:
        if panel.get("type") != "row" and not all(t.get("expr") for t in panel.get("targets", [])):
            problems.append(f"{dashboard.name}: panel '{panel.get('title')}' has no query")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"  {len(rules)} alerts, {len(panels)} panels: {len(problems)} problem(s)")
    return len(problems)


def main(argv: list[str]) -> int:
    """Run one of the two checks; 0 when there is no problem."""
    if len(argv) > 4 and argv[1] == "manifests":
        return 1 if check_manifests(Path(argv[2]), argv[3], [Path(p) for p in argv[4:]]) else 0
    if len(argv) > 5 and argv[1] == "monitoring":
        paths = [Path(p) for p in argv[2:]]
        return 1 if check_monitoring(paths[0], paths[1], paths[2], paths[3:]) else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
