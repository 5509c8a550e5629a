"""Checks on `helm template` output of charts/routemeter, for tests/chart.sh.

Usage: chart_checks.py render FILE (default|custom) RELEASE_NAMESPACE [WATCH_NAMESPACE]
       chart_checks.py env FILE POD_NAME      the operator container's env, as NAME=value lines
       chart_checks.py impersonate KUBECONFIG USER   the kubeconfig, impersonating USER

`render` prints one line per failed check and exits 1 if any failed. `default` is the
chart with its default values; `custom` is replicas=2, watchNamespace, a ServiceMonitor
and a proxy image tag, as tests/chart.sh sets them.
"""

import json
import os
import sys

import yaml

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "charts", "routemeter")

# The least the operator needs (src/operator), by (API group, resource): any change to the
# chart's rules shows up here, on purpose. Server-side apply of a child that does not
# exist yet is authorized as a create, hence create beside patch.
NAMESPACED = {
    # patch: the takeover finalizer.
    ("routemeter.io", "monitoredservices"): {"list", "watch", "patch"},
    ("routemeter.io", "monitoredservices/status"): {"patch"},
    ("routemeter.io", "monitoredservices/finalizers"): {"update"},
    # Events on the MonitoredServices (status.rs); a repeat patches the Event's series.
    ("events.k8s.io", "events"): {"create", "patch"},
    # delete: the headless upstream Service, when the target cannot have one.
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"list", "watch", "create", "patch", "delete"},
    # The proxy pods' cache (caches.rs); a list before it syncs, and of the application's
    # pods in takeover mode.
    ("", "pods"): {"list", "watch"},
    # The proxies' identity, and what their Role grants (RBAC lets one grant only what
    # one holds).
    ("", "serviceaccounts"): {"list", "watch", "create", "patch"},
    ("rbac.authorization.k8s.io", "roles"): {"list", "watch", "create", "patch"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"list", "watch", "create", "patch"},
    ("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch"},
    ("autoscaling", "horizontalpodautoscalers"): {"list", "watch", "create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"list", "watch", "create", "patch", "delete"},
    ("monitoring.coreos.com", "servicemonitors"): {"list", "watch", "create", "patch", "delete"},
    ("monitoring.coreos.com", "prometheusrules"): {"list", "watch", "create", "patch"},
}
CLUSTER = {
    # The namespaces' labels and the Prometheus objects are cached (caches.rs); a
    # namespace is read with get before its cache syncs.
    ("", "namespaces"): {"get", "list", "watch"},
    ("monitoring.coreos.com", "prometheuses"): {"list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def grants(role):
    """{(group, resource): verbs}, with resourceNames folded into the resource."""
    out = {}
    for rule in role.get("rules", []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                key = (group, resource)
                if rule.get("resourceNames"):
                    key = (group, resource + "/" + ",".join(rule["resourceNames"]))
                out.setdefault(key, set()).update(rule.get("verbs", []))
    return out


def expected_cluster():
    # The CRD watch is limited to the one CRD it names.
    return {
        (k[0], k[1] + "/servicemonitors.monitoring.coreos.com") if k[1] == "customresourcedefinitions" else k: v
        for k, v in CLUSTER.items()
    }


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    check(len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0] if found else {}


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def check_common(docs, release_ns, app_version):
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            check("namespace" in d["metadata"], f"{d['kind']} {d['metadata']['name']} has no namespace")
    sa = one(docs, "ServiceAccount")
    check(sa.get("automountServiceAccountToken") is False, "the ServiceAccount must not automount its token")
    dep = one(docs, "Deployment")
    pod = dep.get("spec", {}).get("template", {}).get("spec", {})
    c = (pod.get("containers") or [{}])[0]
    env = env_of(c)
    check(pod.get("serviceAccountName") == sa.get("metadata", {}).get("name"), "pod runs as the chart's ServiceAccount")
    check(pod.get("automountServiceAccountToken") is True, "the operator pod must mount its token")
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "runAsNonRoot")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
    sc = c.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    check(c.get("args") == ["operator"], "args: [operator]")
    check(c.get("ports") == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}], f"port 8080 named metrics: {c.get('ports')}")
    check(c.get("livenessProbe", {}).get("httpGet") == {"path": "/healthz", "port": "metrics"}, "liveness probe /healthz")
    check(c.get("readinessProbe", {}).get("httpGet") == {"path": "/readyz", "port": "metrics"}, "readiness probe /readyz")
    check(c.get("resources", {}).get("requests"), "resource requests set")
    check(env.get("ROUTEMETER_METRICS_ADDR") == "0.0.0.0:8080", "ROUTEMETER_METRICS_ADDR")
    check(env.get("ROUTEMETER_CLUSTER_DOMAIN") == "cluster.local", f"ROUTEMETER_CLUSTER_DOMAIN: {env.get('ROUTEMETER_CLUSTER_DOMAIN')}")
    check(env.get("ROUTEMETER_TRAFFIC_REFRESH") == "30s", f"ROUTEMETER_TRAFFIC_REFRESH: {env.get('ROUTEMETER_TRAFFIC_REFRESH')}")
    check(env.get("ROUTEMETER_LEASE_NAMESPACE") == release_ns, "ROUTEMETER_LEASE_NAMESPACE is the release namespace")
    check(env.get("POD_NAME") == {"fieldRef": {"fieldPath": "metadata.name"}}, "POD_NAME from the pod name")
    check(c.get("image") == f"routemeter/routemeter:{app_version}", f"operator image: {c.get('image')}")
    svc = one(docs, "Service")
    check(svc.get("spec", {}).get("ports", [{}])[0].get("targetPort") == "metrics", "Service targets port metrics")
    check(svc.get("spec", {}).get("selector", {}).items() <= dep["spec"]["template"]["metadata"]["labels"].items(), "Service selects the operator pods")
    cm = one(docs, "ConfigMap")
    check(cm.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1", "dashboard label grafana_dashboard: \"1\"")
    with open(os.path.join(CHART, "dashboards", "overview.json")) as f:
        want = json.load(f)
    got = json.loads(cm.get("data", {}).get("routemeter-overview.json", "null"))
    check(got == want and got.get("uid") == "routemeter-overview", "dashboard ConfigMap holds dashboards/overview.json")
    for d in docs:
        if d["kind"] in ("ClusterRole", "Role"):
            for rule in d.get("rules", []):
                for field in ("apiGroups", "resources", "verbs"):
                    check("*" not in rule.get(field, []), f"{d['kind']} {d['metadata']['name']}: no wildcard {field}")
                check("secrets" not in rule.get("resources", []), f"{d['kind']} {d['metadata']['name']}: no secrets")
    return dep, c, env


def render_checks(path, mode, release_ns, watch_ns):
    docs = load(path)
    with open(os.path.join(CHART, "Chart.yaml")) as f:
        app_version = yaml.safe_load(f)["appVersion"]
    dep, c, env = check_common(docs, release_ns, app_version)
    kinds = sorted(d["kind"] for d in docs)
    roles = [d for d in docs if d["kind"] == "Role"]
    if mode == "default":
        want = sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment", "ConfigMap"])
        check(kinds == want, f"default objects: {kinds}")
        check(dep.get("spec", {}).get("replicas") == 1, "one replica")
        check(dep.get("spec", {}).get("strategy", {}).get("type") == "Recreate", "a lone replica is replaced with Recreate")
        check(env.get("ROUTEMETER_LEADER_ELECTION") == "false", "no leader election with one replica")
        check("ROUTEMETER_WATCH_NAMESPACE" not in env, "all namespaces watched")
        check(env.get("ROUTEMETER_PROXY_IMAGE") == f"routemeter/routemeter:{app_version}", f"proxy image: {env.get('ROUTEMETER_PROXY_IMAGE')}")
        cr = one(docs, "ClusterRole")
        want_rules = {**NAMESPACED, **expected_cluster()}
        check(grants(cr) == want_rules, f"ClusterRole grants exactly what the operator uses: {grants(cr)}")
    else:
        check(kinds.count("Role") == 2 and kinds.count("RoleBinding") == 2, f"two Roles and RoleBindings: {kinds}")
        for kind in ("PodDisruptionBudget", "ServiceMonitor"):
            check(kind in kinds, f"{kind} rendered")
        check(dep.get("spec", {}).get("replicas") == 2, "two replicas")
        check("strategy" not in dep.get("spec", {}), "rolling updates with leader election")
        check(env.get("ROUTEMETER_LEADER_ELECTION") == "true", "leader election with two replicas")
        check(env.get("ROUTEMETER_WATCH_NAMESPACE") == watch_ns, "ROUTEMETER_WATCH_NAMESPACE")
        check(env.get("ROUTEMETER_PROXY_IMAGE") == "routemeter/routemeter:p1", f"proxy.image.tag: {env.get('ROUTEMETER_PROXY_IMAGE')}")
        cr = one(docs, "ClusterRole")
        check(grants(cr) == expected_cluster(), f"the ClusterRole has the cluster-scoped reads only: {grants(cr)}")
        check(cr.get("metadata", {}).get("name", "").endswith("-" + release_ns), "a namespace-scoped install's ClusterRole name carries its namespace")
        ns_role = [r for r in roles if r["metadata"].get("namespace") == watch_ns]
        check(len(ns_role) == 1 and grants(ns_role[0]) == NAMESPACED, "the Role in watchNamespace grants the namespaced verbs")
        lease = [r for r in roles if r["metadata"].get("namespace") == release_ns]
        lease_name = env.get("ROUTEMETER_LEASE_NAME")
        want = {("coordination.k8s.io", "leases"): {"create"}, ("coordination.k8s.io", f"leases/{lease_name}"): {"get", "patch"}}
        check(len(lease) == 1 and grants(lease[0]) == want, f"the leader-election Role: {lease and grants(lease[0])}")
        pdb = one(docs, "PodDisruptionBudget")
        check(pdb.get("spec", {}).get("selector", {}).get("matchLabels", {}).items() <= dep["spec"]["template"]["metadata"]["labels"].items(), "the PDB selects the operator pods")
        sm = one(docs, "ServiceMonitor")
        check(sm.get("spec", {}).get("endpoints", [{}])[0].get("port") == "metrics", "the ServiceMonitor scrapes port metrics")
    for f in failures:
        print(f"  {mode}: {f}")
    return 1 if failures else 0


def operator_env(path, pod_name):
    dep = [d for d in load(path) if d["kind"] == "Deployment"][0]
    for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
        value = pod_name if e["name"] == "POD_NAME" else e["value"]
        print(f"{e['name']}={value}")
    return 0


def impersonate(path, user):
    with open(path) as f:
        config = yaml.safe_load(f)
    for u in config["users"]:
        u["user"]["as"] = user
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "render":
        sys.exit(render_checks(args[0], args[1], args[2], args[3] if len(args) > 3 else ""))
    if cmd == "env":
        sys.exit(operator_env(*args))
    if cmd == "impersonate":
        sys.exit(impersonate(*args))
    sys.exit(f"unknown command {cmd}")
