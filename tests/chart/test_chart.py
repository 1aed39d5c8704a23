"""The Helm chart and the CRDs, checked without a cluster.

- The chart renders (helm-python-sdk, no helm binary) with the required values only, with
  every value set, and with every optional value unset; every rendered manifest passes
  `kubernetes-validate --strict`.
- Missing required values fail the render with a message naming the value to set; a
  misspelt or unknown value is rejected by values.schema.json.
- The Roles in the render grant exactly the calls the controller makes in each mode (one
  namespace, another namespace, several namespaces: `patchops controller --print-rbac`),
  and the finalizer-removal hook's Roles those of `--print-rbac --remove-finalizers`.
- The PrometheusRule carries rules/patchops.rules.yaml unchanged (promtool checks it).
- The chart ships the CRDs of crds/ unchanged, and every example resource validates
  against its CRD's openAPIV3Schema (jsonschema).

Run: .venv/bin/python tests/chart/test_chart.py [path/to/patchops]
"""

import copy
import json
import os
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


RELEASE_NS = "patchops"

# Every value the chart added for the usual layout, set to something non-default.
ALL_SET = {
    **REQUIRED,
    "imagePullSecrets": [{"name": "regcred"}],
    "podAnnotations": {"example.com/team": "platform"},
    "podLabels": {"example.com/cost-center": "it"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                           "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "patchops"}}}}]}},
    "podSecurityContext": {"runAsNonRoot": True, "fsGroup": 2000},
    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsGroup": 3000},
    "controller": {
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 7},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 3},
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}],
    },
    "managementPoint": {
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 9},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "failureThreshold": 5},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"},
        "contentLibrary": {"enabled": True, "size": "100Gi", "storageClassName": "nfs"},
        "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
    },
    "serviceAccount": {"create": True, "name": "patchops-sa", "annotations": {"iam.example.com/role": "patchops"}},
    "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
}

# Every optional feature off and every defaulted map removed (null deletes a default in Helm).
ALL_UNSET = {
    **REQUIRED,
    "podSecurityContext": None,
    "securityContext": None,
    "controller": {"livenessProbe": None, "readinessProbe": None},
    "managementPoint": {"livenessProbe": None, "readinessProbe": None, "podDisruptionBudget": {"enabled": False}},
    "serviceAccount": {"create": False, "name": "existing-sa"},
    "rbac": {"aggregatedClusterRoles": False},
    "finalizerCleanup": {"enabled": False},
}

MULTI = {**REQUIRED, "database": {"url": "postgres://patchops@db:5432/patchops_{namespace}"},
         "controller": {"namespaces": ["berlin", "paris"]}}


def render_files(values):
    chart = helm.Chart.load(str(CHART))
    return chart.render(values, name="patchops", namespace=RELEASE_NS, is_install=True)


def render(values):
    docs = []
    for name, text in render_files(values).items():
        if name.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def notes(values):
    return next(text for name, text in render_files(values).items() if name.endswith("NOTES.txt"))


def named(docs, kind, suffix):
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    return doc


def pod(docs, suffix):
    return named(docs, "Deployment", suffix)["spec"]["template"]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def rules_set(rules):
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def print_rbac(namespaces, *extra):
    """`patchops controller --print-rbac` as the chart runs the controller: its namespaces
    from PATCHOPS_NAMESPACE, the Lease in the release namespace. → {namespace: rule set}"""
    cmd = [BINARY] if BINARY else ["cargo", "run", "-q", "--"]
    env = {**os.environ, "PATCHOPS_NAMESPACE": namespaces, "PATCHOPS_LEASE_NAMESPACE": RELEASE_NS}
    out = subprocess.run(cmd + ["controller", "--print-rbac", *extra], cwd=ROOT, check=True, capture_output=True,
                         text=True, env=env)
    roles = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert all(r["kind"] == "Role" for r in roles), roles
    return {r["metadata"]["namespace"]: rules_set(r["rules"]) for r in roles}


def chart_roles(docs, name_suffix):
    """The render's Roles named …<suffix> → {namespace: rule set} (no namespace: the release's)."""
    out = {}
    for r in by_kind(docs, "Role"):
        if r["metadata"]["name"].endswith(name_suffix):
            ns = r["metadata"].get("namespace", RELEASE_NS)
            out.setdefault(ns, set()).update(rules_set(r["rules"]))
    return out


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
                self.assertIn(d["kind"], ["ServiceMonitor", "PrometheusRule"])
                if d["kind"] == "ServiceMonitor":
                    self.assertTrue(d["spec"]["endpoints"] and d["spec"]["selector"]["matchLabels"], name)
                else:
                    self.assertTrue(all(g["name"] and g["rules"] for g in d["spec"]["groups"]), name)
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
        mp_args = deployments["patchops-management-point"]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertEqual(mp_args, ["serve", "--listen", "0.0.0.0:8080"], "the management points follow the site")
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
        self.assertIn("patchops_deployment_compliance_ratio", dashboard["data"]["patchops.json"])

    def test_management_points_that_do_not_follow_the_site_pass_no_follow(self):
        values = json.loads(json.dumps(REQUIRED))
        values.setdefault("managementPoint", {})["followSite"] = False
        docs = render(values)
        mp = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("management-point"))
        self.assertIn("--no-follow", mp["spec"]["template"]["spec"]["containers"][0]["args"])

    def test_a_missing_database_url_fails_the_render_naming_the_value_to_set(self):
        with self.assertRaises(helm.HelmRenderError) as caught:
            render({"enrollment": {"secret": "x"}})
        self.assertIn("set database.url", str(caught.exception))

    def test_the_roles_grant_exactly_the_calls_the_controller_makes_in_each_namespace_mode(self):
        modes = {
            "the release namespace": REQUIRED,
            "another namespace": {**REQUIRED, "controller": {"namespaces": ["berlin"]}},
            "several namespaces": MULTI,
        }
        for mode, values in modes.items():
            with self.subTest(mode):
                docs = render(values)
                controller = pod(docs, "-controller")["spec"]["containers"][0]
                namespaces = env_of(controller)["PATCHOPS_NAMESPACE"]["value"]
                self.assertEqual(chart_roles(docs, "-controller"), print_rbac(namespaces))
                self.assertEqual(chart_roles(docs, "-remove-finalizers"),
                                 print_rbac(namespaces, "--remove-finalizers"))
                # Each Role is bound to the controller's (or the hook's) ServiceAccount.
                bindings = {(b["metadata"].get("namespace", RELEASE_NS), b["roleRef"]["name"])
                            for b in by_kind(docs, "RoleBinding")}
                roles = {(r["metadata"].get("namespace", RELEASE_NS), r["metadata"]["name"])
                         for r in by_kind(docs, "Role")}
                self.assertEqual(bindings, roles)
        self.assertEqual(sorted(print_rbac("berlin,paris")), ["berlin", "paris", RELEASE_NS])

    def test_several_namespaces_get_a_management_point_and_a_store_each(self):
        docs = render(MULTI)
        self.assert_strictly_valid(docs)
        (secret,) = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == "patchops-database"]
        self.assertEqual(secret["stringData"]["url-berlin"], "postgres://patchops@db:5432/patchops_berlin")
        self.assertEqual(secret["stringData"]["url"], MULTI["database"]["url"], "the controller substitutes itself")
        for site in ["berlin", "paris"]:
            mp = pod(docs, f"management-point-{site}")
            store = env_of(mp["spec"]["containers"][0])["PATCHOPS_STORE"]["valueFrom"]["secretKeyRef"]
            self.assertEqual(store, {"name": "patchops-database", "key": f"url-{site}"})
            self.assertEqual(named(docs, "Service", f"management-point-{site}")["spec"]["selector"]["patchops.dev/site"],
                             site)
        self.assertIn("berlin, paris", notes(MULTI))

    def test_several_namespaces_without_a_namespace_placeholder_fail_naming_the_fix(self):
        values = {**MULTI, "database": {"url": "postgres://patchops@db:5432/patchops"}}
        with self.assertRaises(helm.HelmRenderError) as caught:
            render(values)
        self.assertIn("write {namespace} in the URL", str(caught.exception))

    def test_every_new_value_set_reaches_the_manifests_and_passes_strict_validation(self):
        docs = render(ALL_SET)
        self.assert_strictly_valid(docs)
        for suffix in ["-controller", "-management-point"]:
            p = pod(docs, suffix)
            spec = p["spec"]
            self.assertEqual(p["metadata"]["annotations"], ALL_SET["podAnnotations"])
            self.assertEqual(p["metadata"]["labels"]["example.com/cost-center"], "it")
            for key in ["imagePullSecrets", "nodeSelector", "tolerations", "affinity"]:
                self.assertEqual(spec[key], ALL_SET[key], f"{suffix} {key}")
            # Maps merge with the defaults (seccompProfile, capabilities stay).
            self.assertEqual(spec["securityContext"]["fsGroup"], 2000)
            self.assertEqual(spec["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
            self.assertEqual(spec["containers"][0]["securityContext"]["capabilities"], {"drop": ["ALL"]})
        controller = pod(docs, "-controller")["spec"]
        self.assertEqual(controller["serviceAccountName"], "patchops-sa")
        c = controller["containers"][0]
        self.assertEqual(c["livenessProbe"]["periodSeconds"], 7)
        self.assertEqual(c["readinessProbe"]["periodSeconds"], 3)
        self.assertIn({"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}, c["volumeMounts"])
        self.assertIn({"name": "ca", "configMap": {"name": "corp-ca"}}, controller["volumes"])
        (sa,) = [s for s in by_kind(docs, "ServiceAccount") if s["metadata"]["name"] == "patchops-sa"]
        self.assertEqual(sa["metadata"]["annotations"], ALL_SET["serviceAccount"]["annotations"])
        mp = pod(docs, "-management-point")["spec"]
        m = mp["containers"][0]
        self.assertEqual((m["livenessProbe"]["periodSeconds"], m["readinessProbe"]["failureThreshold"]), (9, 5))
        self.assertEqual(env_of(m)["PATCHOPS_CONTENT_DIR"]["value"], "/var/lib/patchops/content")
        self.assertIn({"name": "content", "mountPath": "/var/lib/patchops/content"}, m["volumeMounts"])
        self.assertIn({"name": "scratch", "mountPath": "/tmp"}, m["volumeMounts"])
        (pvc,) = by_kind(docs, "PersistentVolumeClaim")
        self.assertEqual((pvc["spec"]["storageClassName"], pvc["spec"]["accessModes"]), ("nfs", ["ReadWriteMany"]))
        self.assertEqual(pvc["spec"]["resources"]["requests"]["storage"], "100Gi")
        self.assertIn({"name": "content", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}},
                      mp["volumes"])
        self.assertEqual(named(docs, "PodDisruptionBudget", "-management-point")["spec"]["maxUnavailable"], "50%")
        policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
        self.assertEqual(policies["patchops-controller"]["spec"]["ingress"][0]["from"],
                         ALL_SET["networkPolicy"]["metricsFrom"])
        self.assertNotIn("from", policies["patchops-management-point"]["spec"]["ingress"][0], "clients from anywhere")
        (rule,) = by_kind(docs, "PrometheusRule")
        self.assertEqual(rule["metadata"]["labels"]["release"], "prometheus")
        rules_file = yaml.safe_load((CHART / "rules" / "patchops.rules.yaml").read_text())
        self.assertEqual(rule["spec"], rules_file)
        alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
        self.assertEqual(alerts, {"PatchopsRolloutHalted", "PatchopsDeadlineMissed", "PatchopsCatalogSyncFailing",
                                  "PatchopsClientsStale", "PatchopsStateIngestionErrors"})

    def test_every_optional_value_unset_renders_without_it(self):
        docs = render(ALL_UNSET)
        self.assert_strictly_valid(docs)
        for suffix in ["-controller", "-management-point"]:
            p = pod(docs, suffix)
            for key in ["imagePullSecrets", "nodeSelector", "tolerations", "affinity", "securityContext"]:
                self.assertNotIn(key, p["spec"], f"{suffix} {key}")
            self.assertNotIn("annotations", p["metadata"])
            c = p["spec"]["containers"][0]
            for key in ["livenessProbe", "readinessProbe", "securityContext"]:
                self.assertNotIn(key, c, f"{suffix} {key}")
        self.assertEqual(pod(docs, "-controller")["spec"]["serviceAccountName"], "existing-sa")
        self.assertEqual(by_kind(docs, "ServiceAccount"), [], "neither the controller's nor the hook's")
        for kind in ["ClusterRole", "Job", "PodDisruptionBudget", "NetworkPolicy", "PrometheusRule",
                     "PersistentVolumeClaim"]:
            self.assertEqual(by_kind(docs, kind), [], kind)
        self.assertIn("patchops controller --remove-finalizers --namespace patchops", notes(ALL_UNSET))

    def test_the_defaults_set_no_user_id_and_add_the_usual_objects(self):
        docs = render(REQUIRED)
        text = json.dumps(docs)
        self.assertNotIn("runAsUser", text, "OpenShift's restricted policy assigns the user")
        self.assertTrue(pod(docs, "-controller")["spec"]["securityContext"]["runAsNonRoot"])
        self.assertEqual(named(docs, "PodDisruptionBudget", "-management-point")["spec"]["maxUnavailable"], 1)
        views = {c["metadata"]["name"]: c for c in by_kind(docs, "ClusterRole")}
        view, edit = views["patchops-view"], views["patchops-edit"]
        self.assertEqual(view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"], "true")
        self.assertEqual(edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true")
        self.assertEqual(edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"], "true")
        kinds = {p.name.split(".")[0] for p in (ROOT / "crds").glob("*.yaml")}
        self.assertEqual(set(view["rules"][0]["resources"]), kinds)
        self.assertEqual(view["rules"][0]["verbs"], ["get", "list", "watch"])
        self.assertNotIn("/status", json.dumps(edit), "status stays the controller's")
        job = named(docs, "Job", "-remove-finalizers")
        self.assertEqual(job["metadata"]["annotations"]["helm.sh/hook"], "post-delete")
        container = job["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(container["args"], ["controller", "--remove-finalizers"])
        self.assertEqual(env_of(container)["PATCHOPS_NAMESPACE"]["value"], RELEASE_NS)
        self.assertIn("post-delete Job removes it", notes(REQUIRED))

    def test_the_schema_rejects_a_misspelt_or_unknown_value(self):
        for values, key in [
            ({**REQUIRED, "nodeSelecter": {"disk": "ssd"}}, "nodeSelecter"),
            ({**REQUIRED, "controller": {"resynk": "10s"}}, "resynk"),
            ({**REQUIRED, "managementPoint": {"podDisruptionBudget": {"minAvaliable": 1}}}, "minAvaliable"),
        ]:
            with self.subTest(key):
                with self.assertRaises(helm.HelmValuesError) as caught:
                    render(values)
                self.assertIn(f"additional properties '{key}' not allowed", str(caught.exception))
        with self.assertRaises(helm.HelmValuesError) as caught:
            render({**REQUIRED, "controller": {"namespaces": ["Not_A_Namespace"]}})
        self.assertIn("namespaces", str(caught.exception))

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
                       "patchops_deployment_compliance_ratio", "patchops_clients", "patchops_clients_stale",
                       "patchops_catalog_age_seconds", "patchops_client_last_scan_age_seconds",
                       "patchops_state_messages_pending"]:
            self.assertIn(metric, exprs)
        self.assertNotIn("compliance_percent", json.dumps(dash), "renamed to the ratio")


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
