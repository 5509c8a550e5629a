//! How the operator writes: server-side apply under one field manager, and a child
//! written or deleted only when the caches show it would change something.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;

use super::caches::{self, Caches};
use super::children::resources;
use super::context::Context;
use super::error::Error;

/// Every write by the operator is a server-side apply under this field manager.
pub const FIELD_MANAGER: &str = "routemeter";

/// A forced server-side apply: what the operator sets is the operator's.
///
/// Field validation is off (`fieldValidation=Ignore`). Left unset it is `Warn`, and the
/// API server then parses every apply body twice as YAML, the second time only to find
/// unknown or duplicate fields for a warning header that no one reads: with 1,000
/// MonitoredServices created at once, that parsing was 9 % of its CPU. What the operator
/// sends is built by code, and a test applies every child it renders with strict
/// validation (tests/operator.rs `render_output_applies_as_printed`), so an unknown
/// field is caught there, not silently dropped in a cluster.
pub fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_ignore()
}

/// Applies `manifest` to the child `name`, or deletes the child when there is none;
/// neither when the caches show it would change nothing ([`super::caches`]), nor while
/// it is a RoleBinding whose Role the caches do not show yet ([`waits_for_its_role`]).
/// An error names the child and what was done to it.
pub async fn apply_or_delete(
    ctx: &Context,
    ns: &str,
    resource: &ApiResource,
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
            let (outcome, answer) = match api.patch(name, &params(), &Patch::Apply(m)).await {
                Err(kube::Error::Api(s))
                    if made_headless(m, &s) && is_our_service(&caches, ns, name) =>
                {
                    // A Service an earlier version made with a cluster IP, now to be
                    // headless: a cluster IP cannot change once set, so it is made anew.
                    tracing::info!(service = %format!("{ns}/{name}"), "replacing Service {ns}/{name}: it is headless now");
                    caches.forget(resource, ns, name);
                    delete(&api, name).await.map_err(|e| child("delete", e))?;
                    (
                        "replaced",
                        api.patch(name, &params(), &Patch::Apply(m)).await,
                    )
                }
                answer => ("applied", answer),
            };
            let answer = answer.map_err(|e| child("apply", e))?;
            caches.applied(resource, ns, name, m, &answer);
            outcome
        }
        None if caches.absent(resource, ns, name) => "absent",
        None => {
            caches.forget(resource, ns, name);
            delete(&api, name).await.map_err(|e| child("delete", e))?;
            "deleted"
        }
    };
    ctx.metrics.child(&resource.kind, outcome);
    Ok(())
}

/// Deletes `name`; already gone is what was wanted.
async fn delete(api: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the caches show the Service `ns/name` as one the operator made, so that
/// replacing it deletes nothing of anyone else's.
fn is_our_service(caches: &Caches, ns: &str, name: &str) -> bool {
    caches
        .services
        .get(ns, name)
        .flatten()
        .is_some_and(|s| caches::is_ours(&s.metadata))
}

/// Whether the API server refused `manifest`, a headless Service, only because the
/// Service has a cluster IP: a 422 whose every cause is a `spec.clusterIP` field
/// (`spec.clusterIPs[0]: Invalid value: ["None"]: may not change once set`).
fn made_headless(manifest: &serde_json::Value, refusal: &kube::core::Status) -> bool {
    let causes = refusal
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default();
    manifest["kind"] == "Service"
        && manifest["spec"]["clusterIP"] == "None"
        && refusal.code == 422
        && refusal.message.contains("may not change once set")
        && !causes.is_empty()
        && causes.iter().all(|c| c.field.starts_with("spec.clusterIP"))
}

/// Whether `manifest` is a RoleBinding of a Role in `ns` that the caches show does not
/// exist yet. The API server lets the operator bind a Role only once its own RBAC
/// informer holds that Role (to check the binding grants nothing the operator lacks);
/// applied in the same breath as the Role, the binding fails with a 404 most of the time
/// (983 of 1,000 MonitoredServices created at once, each with an `ApplyFailed` Warning
/// and a retry). So the binding waits: the Role's own watch event brings the next
/// reconcile (after the controller's 500 ms debounce), which binds it; by then the API
/// server's informer has seen the Role too, in practice (a binding still refused is
/// retried with backoff, as any failed apply). While the Role's store has not synced
/// (the operator's first moments) nothing waits.
fn waits_for_its_role(caches: &Caches, ns: &str, manifest: &serde_json::Value) -> bool {
    let role_ref = &manifest["roleRef"];
    if manifest["kind"] != "RoleBinding" || role_ref["kind"] != "Role" {
        return false;
    }
    role_ref["name"]
        .as_str()
        .is_some_and(|role| caches.absent(&resources::role(), ns, role))
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

    /// A 422 as the API server words it, with the fields of its causes.
    fn refusal(message: &str, fields: &[&str]) -> kube::core::Status {
        serde_json::from_value(json!({
            "status": "Failure",
            "code": 422,
            "reason": "Invalid",
            "message": message,
            "details": { "causes": fields.iter().map(|f| json!({
                "reason": "FieldValueInvalid", "message": "Invalid value", "field": f,
            })).collect::<Vec<_>>() },
        }))
        .expect("a Status")
    }

    #[test]
    fn only_a_headless_service_refused_for_its_cluster_ip_alone_is_made_anew() {
        // The API server's words (Kubernetes 1.34) for a cluster IP set to None.
        let message = r#"Service "web-routemeter-metrics" is invalid: spec.clusterIPs[0]: Invalid value: ["None"]: may not change once set"#;
        let refused = refusal(message, &["spec.clusterIPs[0]"]);
        let headless = json!({ "kind": "Service", "spec": { "clusterIP": "None" } });
        assert!(made_headless(&headless, &refused));
        let with_ip = json!({ "kind": "Service", "spec": { "type": "ClusterIP" } });
        assert!(
            !made_headless(&with_ip, &refused),
            "the Service clients call keeps its IP"
        );
        // Refused for something else too: making it anew would not help.
        let also = refusal(message, &["spec.clusterIPs[0]", "spec.ports[0].port"]);
        assert!(!made_headless(&headless, &also));
        let other = refusal(
            r#"Service "x" is invalid: spec.ports[0].port: Invalid value: 0"#,
            &["spec.ports[0].port"],
        );
        assert!(!made_headless(&headless, &other));
        assert!(!made_headless(&headless, &refusal(message, &[])));
    }

    #[tokio::test]
    async fn a_binding_waits_while_the_caches_show_its_role_absent_and_nothing_else_waits() {
        let role = resources::role();
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
