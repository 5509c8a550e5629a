"""The objects of the operator benchmarks: N target Services and N MonitoredServices
naming them, in one namespace (bench/operator-scale.sh, bench/apiserver-cost.sh).

Usage: scale-objects.py N NAMESPACE DIR writes DIR/objects-0.yaml .. objects-9.yaml (each
target Service followed by its MonitoredService, spread over ten files for ten kubectl at
once), and DIR/msvcs.yaml and DIR/targets.yaml (the two kinds apart, for `routemeter
render -f msvcs.yaml --targets targets.yaml`).

Each proxy asks for 100 CPUs, so its pod is created and stays Pending.
"""
import sys


def service(i, ns):
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: app-{i}, namespace: {ns}}}
spec:
  selector: {{app: app-{i}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


def monitored_service(i, ns):
    return f"""---
apiVersion: routemeter.io/v1alpha1
kind: MonitoredService
metadata: {{name: app-{i}, namespace: {ns}}}
spec:
  target: {{service: app-{i}, port: http}}
  routes: [{{path: "/users/{{id}}"}}, {{path: /health}}]
  scaling: {{minReplicas: 1}}
  proxy: {{resources: {{requests: {{cpu: "100"}}}}}}
"""


def main():
    n, ns, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    files = [open(f"{out}/objects-{k}.yaml", "w") for k in range(10)]
    with open(f"{out}/msvcs.yaml", "w") as msvcs, open(f"{out}/targets.yaml", "w") as targets:
        for i in range(n):
            s, m = service(i, ns), monitored_service(i, ns)
            files[i % 10].write(s + m)
            targets.write(s)
            msvcs.write(m)
    for f in files:
        f.close()


main()
