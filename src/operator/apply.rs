//! How the operator writes: server-side apply under one field manager, and a child
//! written or deleted only when the caches show it would change something.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};

use super::context::Context;
use super::error::Error;

/// Every write by the operator is a server-side apply under this field manager.
pub const FIELD_MANAGER: &str = "routemeter";

/// A forced server-side apply: what the operator sets is the operator's.
pub fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies `manifest` to the child `name`, or deletes the child when there is none;
/// neither when the caches show it would change nothing ([`super::caches`]). An error
/// names the child and what was done to it.
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
        Some(m) => {
            let answer = api
                .patch(name, &params(), &Patch::Apply(m))
                .await
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
