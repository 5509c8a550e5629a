//! How the operator writes: server-side apply under one field manager, and a child
//! written or deleted only when the caches show it would change something.

use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;

use super::caches::Caches;
use super::context::Context;
use super::error::Error;

/// Every write by the operator is a server-side apply under this field manager.
pub const FIELD_MANAGER: &str = "routemeter";

/// A forced server-side apply: what the operator sets is the operator's.
pub fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies `manifest` to the child `name`, or deletes the child when there is none;
/// neither when the caches show it would change nothing ([`super::caches`]), nor while
/// it is a RoleBinding whose Role the caches do not show yet ([`waits_for_its_role`]).
/// An error names the child and what was done to it.
pub async fn apply_or_delete(
    ctx: &Context,
    ns: &str,
    resource: &kube::core::ApiResource,
    name: &str,
    manifest: Option<&serde_json::Value>,
) -> Result<(), Error> {
    let caches = ctx.caches.load();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, resource);
    let child = |verb, source| Error::Object {
        verb,
        kind: resource.kind.clone(),
        name: format!("{ns}/{name}"),
        source,
    };
    let outcome = match manifest {
        Some(m) if caches.unchanged(resource, ns, name, m) => "unchanged",
        Some(m) if waits_for_its_role(&caches, ns, m) => "waiting",
        Some(m) => {
            let answer = match api.patch(name, &params(), &Patch::Apply(m)).await {
                Err(kube::Error::Api(s)) if s.code == 422 && made_headless(m, &s.message) => {
                    // A Service made with a cluster IP (by an earlier version) that is
                    // to be headless: the cluster IP cannot change once set, so the
                    // Service is made anew.
                    tracing::info!(service = %format!("{ns}/{name}"), "replacing Service {ns}/{name}: it is headless now");
                    caches.forget(resource, ns, name);
                    match api.delete(name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(child("delete", e)),
                    }
                    ctx.metrics.child(&resource.kind, "replaced");
                    api.patch(name, &params(), &Patch::Apply(m)).await
                }
                answer => answer,
            }
            .map_err(|e| child("apply", e))?;
            caches.applied(resource, ns, name, m, &answer);
            "applied"
        }
        None if caches.absent(resource, ns, name) => "absent",
        None => {
            caches.forget(resource, ns, name);
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                // Already gone is what we wanted.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(child("delete", e)),
            }
            "deleted"
        }
    };
    ctx.metrics.child(&resource.kind, outcome);
    Ok(())
}

/// Whether the API server refused `manifest`, a headless Service, because the Service
/// has a cluster IP: `spec.clusterIPs[0]: Invalid value: ["None"]: may not change once set`.
fn made_headless(manifest: &serde_json::Value, message: &str) -> bool {
    manifest["kind"] == "Service"
        && manifest["spec"]["clusterIP"] == "None"
        && message.contains("spec.clusterIP")
        && message.contains("may not change once set")
}

/// Whether `manifest` is a RoleBinding of a Role in `ns` that the caches show does not
/// exist yet. The API server lets the operator bind a Role only once its own RBAC
/// informer holds that Role (to check the binding grants nothing the operator lacks);
/// applied in the same breath as the Role, the binding fails with a 404 most of the time
/// (983 of 1,000 MonitoredServices created at once, each with an `ApplyFailed` Warning
/// and a retry). So the binding waits: the Role's own watch event, which the operator
/// sees after the API server's informer does, brings the next reconcile, which binds it.
/// While the Role's store has not synced nothing waits.
pub fn waits_for_its_role(caches: &Caches, ns: &str, manifest: &serde_json::Value) -> bool {
    let role_ref = &manifest["roleRef"];
    if manifest["kind"] != "RoleBinding" || role_ref["kind"] != "Role" {
        return false;
    }
    role_ref["name"]
        .as_str()
        .is_some_and(|role| caches.absent(&ApiResource::erase::<Role>(&()), ns, role))
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;
    use crate::operator::caches::Meta;

    fn binding(role_kind: &str) -> serde_json::Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": { "name": "web-routemeter", "namespace": "shop" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "web-routemeter" },
            "subjects": [{ "kind": "ServiceAccount", "name": "web-routemeter", "namespace": "shop" }],
        })
    }

    #[test]
    fn only_a_headless_service_refused_for_its_cluster_ip_is_made_anew() {
        // The API server's words (Kubernetes 1.34) for a cluster IP set to None.
        let refused = r#"Service "web-routemeter-metrics" is invalid: spec.clusterIPs[0]: Invalid value: ["None"]: may not change once set"#;
        let headless = json!({ "kind": "Service", "spec": { "clusterIP": "None" } });
        assert!(made_headless(&headless, refused));
        let with_ip = json!({ "kind": "Service", "spec": { "type": "ClusterIP" } });
        assert!(
            !made_headless(&with_ip, refused),
            "the Service clients call keeps its IP"
        );
        let other = r#"Service "x" is invalid: spec.ports[0].port: Invalid value: 0"#;
        assert!(!made_headless(&headless, other));
    }

    #[tokio::test]
    async fn a_binding_waits_while_the_caches_show_its_role_absent_and_nothing_else_waits() {
        let role = ApiResource::erase::<Role>(&());
        let mut caches = Caches::unwatched();
        // Not synced: nothing is known, so nothing waits (the apply finds out).
        assert!(!waits_for_its_role(&caches, "shop", &binding("Role")));
        let mut roles = caches.synced_metadata(&role).await;
        assert!(waits_for_its_role(&caches, "shop", &binding("Role")));
        // A ClusterRole is not one of the operator's children; no other kind waits.
        assert!(!waits_for_its_role(
            &caches,
            "shop",
            &binding("ClusterRole")
        ));
        let mut not_a_binding = binding("Role");
        not_a_binding["kind"] = json!("Role");
        assert!(!waits_for_its_role(&caches, "shop", &not_a_binding));
        roles.apply_watcher_event(&Event::Apply(Meta {
            types: None,
            metadata: ObjectMeta {
                name: Some("web-routemeter".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            _phantom: Default::default(),
        }));
        assert!(!waits_for_its_role(&caches, "shop", &binding("Role")));
        // The Role of that name in another namespace is not this binding's.
        assert!(waits_for_its_role(&caches, "other", &binding("Role")));
    }
}
