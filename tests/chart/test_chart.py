"""The Helm chart and the CRDs, checked without a cluster.

- The chart renders (helm-python-sdk, no helm binary) with the required values only and
  with non-default values; every rendered manifest passes `kubernetes-validate --strict`.
- Missing required values fail the render with a message naming the value to set.
- The Role in the render grants exactly the calls the controller makes
  (`patchops controller --print-rbac`).
- The chart ships the CRDs of crds/ unchanged, and every example resource validates
  against its CRD's openAPIV3Schema (jsonschema).

Run: .venv/bin/python tests/chart/test_chart.py [path/to/patchops]
"""

import copy
import json
import pathlib
import subprocess
import sys
import unittest

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "patchops"
BINARY = sys.argv[1] if len(sys.argv) > 1 else None
K8S_VERSION = "1.33.0"

REQUIRED = {"database": {"url": "postgres://patchops@db:5432/patchops"}, "enrollment": {"secret": "s3cret"}}
NON_DEFAULT = {
    "image": {"repository": "registry.local/patchops", "tag": "1.2.3", "pullPolicy": "Always"},
    "database": {"existingSecret": "pg", "existingSecretKey": "dsn"},
    "enrollment": {"existingSecret": "enroll", "existingSecretKey": "token"},
    "logFilter": "debug",
    "controller": {"resync": "10s", "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
    "managementPoint": {
        "replicas": 5,
        "service": {"type": "LoadBalancer", "port": 8443},
        "ingress": {"enabled": True, "className": "nginx", "host": "mp.example.org", "tlsSecret": "mp-tls"},
    },
    "serviceMonitor": {"enabled": True, "interval": "15s"},
    "dashboards": {"enabled": True},
}


class JsonLikeLoader(yaml.SafeLoader):
    """YAML as the API server reads it: timestamps stay strings."""


JsonLikeLoader.yaml_implicit_resolvers = {
    k: [(tag, r) for tag, r in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def render(values):
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name="patchops", namespace="patchops", is_install=True)
    docs = []
    for text in out.values():
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def rules_set(rules):
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def controller_rules():
    cmd = [BINARY] if BINARY else ["cargo", "run", "-q", "--"]
    out = subprocess.run(cmd + ["controller", "--print-rbac"], cwd=ROOT, check=True, capture_output=True, text=True)
    return yaml.safe_load(out.stdout)


def openapi_to_jsonschema(schema):
    """openAPIV3Schema → JSON Schema: `nullable` becomes a null type; x-kubernetes-* go."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.pop("nullable", False) and "type" in node:
                node["type"] = [node["type"], "null"]
            for k in [k for k in node if k.startswith("x-kubernetes-")]:
                node.pop(k)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


class Chart(unittest.TestCase):
    def assert_strictly_valid(self, docs):
        for d in docs:
            name = f"{d['kind']} {d['metadata']['name']}"
            if d["apiVersion"].startswith("monitoring.coreos.com/"):
                # No upstream schema for the Prometheus Operator's CRDs: check the shape it needs.
                self.assertEqual(d["kind"], "ServiceMonitor")
                self.assertTrue(d["spec"]["endpoints"] and d["spec"]["selector"]["matchLabels"], name)
                continue
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                self.fail(f"{name}: {e.message} at {list(e.path)}")

    def test_the_chart_renders_with_only_the_required_values_and_passes_strict_validation(self):
        docs = render(REQUIRED)
        self.assert_strictly_valid(docs)
        deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
        self.assertEqual(deployments["patchops-controller"]["spec"]["replicas"], 1)
        self.assertEqual(deployments["patchops-management-point"]["spec"]["replicas"], 2)
        self.assertEqual(by_kind(docs, "Ingress"), [])
        self.assertEqual(by_kind(docs, "ServiceMonitor"), [])
        secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
        self.assertEqual(secrets["patchops-database"]["stringData"]["url"], REQUIRED["database"]["url"])

    def test_non_default_values_reach_the_manifests_and_pass_strict_validation(self):
        docs = render(NON_DEFAULT)
        self.assert_strictly_valid(docs)
        self.assertEqual(by_kind(docs, "Secret"), [], "existing Secrets are used, none created")
        mp = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("management-point"))
        self.assertEqual(mp["spec"]["replicas"], 5)
        container = mp["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(container["image"], "registry.local/patchops:1.2.3")
        env = {e["name"]: e for e in container["env"]}
        self.assertEqual(env["PATCHOPS_STORE"]["valueFrom"]["secretKeyRef"], {"name": "pg", "key": "dsn"})
        self.assertEqual(env["PATCHOPS_ENROLL_SECRET"]["valueFrom"]["secretKeyRef"], {"name": "enroll", "key": "token"})
        self.assertEqual(env["PATCHOPS_LOG"]["value"], "debug")
        (ingress,) = by_kind(docs, "Ingress")
        self.assertEqual(ingress["spec"]["tls"][0]["secretName"], "mp-tls")
        self.assertEqual(len(by_kind(docs, "ServiceMonitor")), 1)
        (dashboard,) = by_kind(docs, "ConfigMap")
        self.assertIn("patchops_deployment_compliance_percent", dashboard["data"]["patchops.json"])

    def test_a_missing_database_url_fails_the_render_naming_the_value_to_set(self):
        with self.assertRaises(helm.HelmRenderError) as caught:
            render({"enrollment": {"secret": "x"}})
        self.assertIn("set database.url", str(caught.exception))

    def test_the_role_grants_exactly_the_calls_the_controller_makes(self):
        (role,) = by_kind(render(REQUIRED), "Role")
        self.assertEqual(rules_set(role["rules"]), rules_set(controller_rules()))

    def test_the_chart_ships_the_generated_crds_unchanged(self):
        chart = helm.Chart.load(str(CHART))
        shipped = {pathlib.Path(c["filename"]).name: c["data"] for c in chart.crds}
        committed = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
        self.assertEqual(sorted(shipped), sorted(committed))
        for name, text in committed.items():
            self.assertEqual(yaml.safe_load(shipped[name]), yaml.safe_load(text), name)

    def test_the_dashboard_queries_the_controller_metrics(self):
        dash = json.loads((CHART / "dashboards" / "patchops.json").read_text())
        exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
        for metric in ["patchops_reconcile_duration_seconds", "patchops_reconcile_errors_total",
                       "patchops_deployment_compliance_percent"]:
            self.assertIn(metric, exprs)


class Examples(unittest.TestCase):
    def test_every_example_resource_validates_against_its_crd_schema(self):
        schemas = {}
        for path in (ROOT / "crds").glob("*.yaml"):
            crd = yaml.safe_load(path.read_text())
            (version,) = crd["spec"]["versions"]
            schemas[crd["spec"]["names"]["kind"]] = openapi_to_jsonschema(version["schema"]["openAPIV3Schema"])
        checked = 0
        for path in sorted((ROOT / "examples" / "repo").rglob("*.yaml")):
            for doc in yaml.load_all(path.read_text(), Loader=JsonLikeLoader):
                if not isinstance(doc, dict) or doc.get("apiVersion") != "patchops.dev/v1alpha1":
                    continue  # catalog data files, not resources
                validator = jsonschema.Draft7Validator(schemas[doc["kind"]])
                errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
                self.assertEqual(errors, [], f"{path.relative_to(ROOT)} {doc['kind']} {doc['metadata']['name']}")
                checked += 1
        self.assertGreater(checked, 10)

    def test_a_wrong_example_is_caught_by_the_schema(self):
        crd = yaml.safe_load((ROOT / "crds" / "updatedeployments.patchops.dev.yaml").read_text())
        schema = openapi_to_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        bad = {"apiVersion": "patchops.dev/v1alpha1", "kind": "UpdateDeployment", "metadata": {"name": "x"},
               "spec": {"startTime": "2026-01-01T00:00:00Z"}}
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(bad))
        self.assertTrue(any("updateList" in e.message for e in errors), errors)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
