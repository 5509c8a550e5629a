//! Why a reconcile failed: the one error type every part of a reconcile returns.

use thiserror::Error;

/// Why a reconcile failed.
#[derive(Debug, Error)]
pub enum Error {
    /// A call on one object failed: reading the target or the proxy Deployment, writing
    /// a child (the others are still written) or the status.
    #[error("cannot {verb} {kind} {name}: {source}")]
    Object {
        verb: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the object has no {0}")]
    MissingObjectKey(&'static str),
}

impl Error {
    /// The `error` label of the error counter: a closed set.
    pub fn metric_label(&self) -> &'static str {
        let kube = match self {
            Error::Object { source: e, .. } => e,
            Error::MissingObjectKey(_) => return "missing_key",
        };
        match kube {
            kube::Error::Api(s) if s.code == 409 => "conflict",
            kube::Error::Api(s) if s.code == 403 => "forbidden",
            kube::Error::Api(_) => "api",
            _ => "client",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_errors_name_the_child_and_keep_their_metric_label() {
        let forbidden = kube::Error::Api(Box::new(
            kube::core::Status::failure("services is forbidden", "Forbidden").with_code(403),
        ));
        let e = Error::Object {
            verb: "delete",
            kind: "Service".into(),
            name: "shop/shop-routemeter-upstream".into(),
            source: forbidden,
        };
        assert!(
            e.to_string()
                .starts_with("cannot delete Service shop/shop-routemeter-upstream: "),
            "{e}"
        );
        assert_eq!(e.metric_label(), "forbidden");
    }
}
