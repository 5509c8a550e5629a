{{/* Names, labels and images shared by the templates. */}}

{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "routemeter.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Name of the cluster-scoped objects (ClusterRole, ClusterRoleBinding). A cluster-wide
install is one per cluster; namespace-scoped installs are many, one per namespace, so
their names carry the release namespace.
*/}}
{{- define "routemeter.clusterName" -}}
{{- if .Values.watchNamespace -}}
{{- printf "%s-%s" (include "routemeter.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "routemeter.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "routemeter.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "routemeter.labels" -}}
{{ include "routemeter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: routemeter
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "routemeter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "routemeter.fullname" .) -}}
{{- else -}}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Leader election is on exactly when several replicas run. */}}
{{- define "routemeter.leaderElection" -}}
{{- if gt (int .Values.replicas) 1 -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{- define "routemeter.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "routemeter.fullname" .) -}}
{{- end -}}

{{/* repository@digest, else repository:tag (the chart's appVersion when no tag). */}}
{{- define "routemeter.image" -}}
{{- $i := .Values.image -}}
{{- if $i.digest -}}
{{- printf "%s@%s" $i.repository $i.digest -}}
{{- else -}}
{{- printf "%s:%s" $i.repository ($i.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The proxy image: each empty proxy.image field falls back to image's. */}}
{{- define "routemeter.proxyImage" -}}
{{- $p := .Values.proxy.image -}}
{{- $repo := $p.repository | default .Values.image.repository -}}
{{- if $p.digest -}}
{{- printf "%s@%s" $repo $p.digest -}}
{{- else if $p.tag -}}
{{- printf "%s:%s" $repo $p.tag -}}
{{- else if and (not $p.repository) .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
The rules on namespaced objects: exactly the calls of src/operator (tests/chart.sh runs
the operator under them). Children are written by server-side apply, a patch, which the
API server also authorizes as a create when the object does not exist yet. The operator
records Events through events.k8s.io only (never the core group's) and deletes nothing by
collection; its Lease is in the leader-election Role (rbac.yaml).

Audit (src/operator), by Api<K> and the calls on it. The list and watch calls fill the
caches (caches.rs); the get and list calls on one object are what a reconcile does while
its cache has not synced yet.
  MonitoredService   list, watch (controller); patch status (status.rs)
  Event              create, patch (a repeat within minutes counts in its series) of
                     events.k8s.io Events on MonitoredServices (status.rs)
  Service            list, watch (caches.rs); get (target, before sync; takeover);
                     patch (apply); delete (the headless upstream Service, reconcile.rs)
  ConfigMap          list, watch (caches.rs); patch (proxy config, dashboard); delete (dashboard)
  Deployment         list, watch (caches.rs); patch; get (before sync)
  HPA, PDB           list, watch (caches.rs); patch; delete (scaling off)
  ServiceAccount, Role, RoleBinding  list, watch (caches.rs); patch
  ServiceMonitor     list, watch (caches.rs); patch; delete (serviceMonitor off)
  PrometheusRule     list, watch (caches.rs); patch
  Pod                list, watch of the proxy pods (caches.rs); list (before sync; in
                     takeover mode the application's pods, takeover.rs)
  Prometheus         list, watch, all namespaces (caches.rs, selection.rs)
  Namespace          list, watch (caches.rs); get (before sync, selection.rs)
  CRD                list, watch of servicemonitors.monitoring.coreos.com only
  Lease              create; get, patch of the named Lease (kube-lease-manager)
*/}}
{{- define "routemeter.namespacedRules" -}}
# MonitoredServices are watched; their status is written, and in takeover mode their
# finalizer (patch), so a Service taken over is given back before its proxies go.
- apiGroups: ["routemeter.io"]
  resources: ["monitoredservices"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["routemeter.io"]
  resources: ["monitoredservices/status"]
  verbs: ["patch"]
# Children carry an owner reference with blockOwnerDeletion, which clusters running the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift) allow only to those
# who may update the owner's finalizers.
- apiGroups: ["routemeter.io"]
  resources: ["monitoredservices/finalizers"]
  verbs: ["update"]
# Events on the MonitoredServices for what a user must act on, and becoming ready; a
# repeat within minutes is a patch counting it in the Event's series.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The target Service is read, and in takeover mode patched (its selector, and the
# annotation recording the original); the proxy's Services are applied, and the headless
# <name>-routemeter-upstream is deleted when the target cannot have one (a named
# targetPort, no selector, an ExternalName).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The proxy config and the dashboard (deleted when spec.monitoring.dashboard is off).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The ready proxy pods are listed to read their traffic figures and config state for the
# status (from each pod's admin port: no pods/proxy verb); in takeover mode the
# application's pods, for the numbers of named target ports.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Each proxy's identity: a ServiceAccount, and a Role (bound to it) reading EndpointSlices,
# which the proxies watch to follow the application's ready pods. RBAC lets the operator
# grant only what it holds itself, hence its own read on EndpointSlices.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
# The proxy Deployment is applied, and read for its available replicas.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# ServiceMonitors are deleted when spec.monitoring.serviceMonitor is off; the
# PrometheusRule always exists.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheusrules"]
  verbs: ["list", "watch", "create", "patch"]
{{- end -}}

{{/* Cluster-scoped reads, needed whatever watchNamespace says. */}}
{{- define "routemeter.clusterRules" -}}
# The labels of the MonitoredService's namespace, matched against Prometheus namespace selectors.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# Every Prometheus object, to learn which labels select ServiceMonitors and rules.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["prometheuses"]
  verbs: ["list", "watch"]
# The ServiceMonitor CRD appearing (the Prometheus Operator installed later) triggers a
# reconcile of everything; the watch names it, so only it is readable.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["servicemonitors.monitoring.coreos.com"]
  verbs: ["list", "watch"]
{{- end -}}
