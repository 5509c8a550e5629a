//! `routemeter render`: every object the operator would create for MonitoredServices read
//! from a file, printed as YAML, offline, from the same builders the reconciler uses.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use serde::Deserialize;
use thiserror::Error;

use super::children::{self, Settings};
use super::takeover;
use crate::crd::{Mode, MonitoredService};

/// Why rendering failed.
#[derive(Debug, Error)]
pub enum RenderError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: document {index}: {source}")]
    Parse {
        path: String,
        index: usize,
        source: serde_yaml::Error,
    },
    #[error("{name}: {message}")]
    Invalid { name: String, message: String },
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// Arguments of `routemeter render`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// File with one or more MonitoredService documents.
    #[arg(long, short = 'f')]
    pub file: PathBuf,
    /// File with the target Service(s), and Pods of the application naming the numbers
    /// of named target ports (takeover mode); without it the target is assumed to have a
    /// selector and a numeric port equal to spec.target.port.
    #[arg(long)]
    pub targets: Option<PathBuf>,
    /// Proxy image when a MonitoredService names none.
    #[arg(long, env = "ROUTEMETER_PROXY_IMAGE", default_value = concat!("routemeter/routemeter:", env!("CARGO_PKG_VERSION")))]
    pub proxy_image: String,
    /// The cluster's DNS domain, as the operator's --cluster-domain.
    #[arg(long, env = "ROUTEMETER_CLUSTER_DOMAIN", default_value = children::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Print only the PrometheusRule specs (for promtool).
    #[arg(long)]
    pub rules_only: bool,
}

fn read_docs<T: for<'de> Deserialize<'de>>(
    path: &PathBuf,
    wanted: &str,
) -> Result<Vec<T>, RenderError> {
    let text = std::fs::read_to_string(path).map_err(|source| RenderError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|source| RenderError::Parse {
            path: path.display().to_string(),
            index,
            source,
        })?;
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if value.is_null() || kind != wanted {
            continue;
        }
        out.push(
            serde_yaml::from_value::<T>(value).map_err(|source| RenderError::Parse {
                path: path.display().to_string(),
                index,
                source,
            })?,
        );
    }
    Ok(out)
}

/// A stand-in for a target Service that is not at hand: it selects pods by
/// `app: <service>` and forwards its port unchanged.
fn assumed_target(msvc: &MonitoredService) -> Service {
    let port = match &msvc.spec.target.port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => *n,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_) => 80,
    };
    let name = msvc.spec.target.service.clone();
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "namespace": msvc.namespace() },
        "spec": { "selector": { "app": name }, "ports": [{ "name": match &msvc.spec.target.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(), _ => "http".into() },
            "port": port, "targetPort": port }] },
    }))
    .unwrap_or_default()
}

impl Args {
    /// Renders every object as a YAML stream.
    pub fn render(&self) -> Result<String, RenderError> {
        let msvcs: Vec<MonitoredService> = read_docs(&self.file, "MonitoredService")?;
        let targets: Vec<Service> = match &self.targets {
            Some(p) => read_docs(p, "Service")?,
            None => Vec::new(),
        };
        // Pods in the same file name the numbers of named target ports, for takeover.
        let pods: Vec<Pod> = match &self.targets {
            Some(p) => read_docs(p, "Pod")?,
            None => Vec::new(),
        };
        let mut out = String::new();
        let mut namespaces = std::collections::BTreeSet::new();
        for mut msvc in msvcs {
            if msvc.namespace().is_none() {
                msvc.metadata.namespace = Some("default".into());
            }
            let name = format!(
                "{}/{}",
                msvc.namespace().unwrap_or_default(),
                msvc.name_any()
            );
            let target = targets
                .iter()
                .find(|t| {
                    t.name_any() == msvc.spec.target.service
                        && t.namespace().is_none_or(|n| Some(n) == msvc.namespace())
                })
                .cloned()
                .unwrap_or_else(|| assumed_target(&msvc));
            let invalid = |message: String| RenderError::Invalid {
                name: name.clone(),
                message,
            };
            // Takeover: the proxies' ports, and the target Service as routemeter leaves it
            // once taken over (its selector, and the record of the original).
            let mut taken_over = None;
            let info = if msvc.spec.mode == Mode::Takeover {
                if let Some(message) = takeover::refusal(&target, None, &msvc.name_any()) {
                    return Err(invalid(message));
                }
                let ports =
                    takeover::ports(&msvc, &target, &pods, None, crate::proxy_pods::ADMIN_PORT)
                        .map_err(invalid)?;
                let original = target
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.clone())
                    .unwrap_or_default();
                taken_over = Some(takeover::taken_over(
                    &msvc,
                    &target,
                    &ports,
                    original.clone(),
                ));
                children::takeover_target_info(
                    &msvc,
                    &target,
                    original,
                    ports,
                    &self.cluster_domain,
                )
            } else {
                children::target_info(&msvc, &target, &self.cluster_domain).map_err(invalid)?
            };
            let settings = Settings {
                proxy_image: self.proxy_image.clone(),
                monitoring_labels: msvc.spec.monitoring.labels.clone(),
            };
            let built = children::build(&msvc, &msvc, &info, &settings).map_err(|e| {
                RenderError::Invalid {
                    name: name.clone(),
                    message: e.to_string(),
                }
            })?;
            // The namespace's shared children, once for each namespace.
            let first_here = namespaces.insert(msvc.namespace().unwrap_or_default());
            let mut docs: Vec<serde_json::Value> = built
                .shared
                .into_iter()
                .filter(|_| first_here)
                .chain(built.core)
                .map(|c| c.manifest)
                .collect();
            docs.extend(built.optional.into_iter().filter_map(|(_, _, m)| m));
            docs.extend(built.monitoring.into_iter().filter_map(|(_, _, m)| m));
            docs.extend(taken_over);
            for doc in docs {
                if self.rules_only {
                    if doc["kind"] != "PrometheusRule" {
                        continue;
                    }
                    out.push_str(&serde_yaml::to_string(&doc["spec"])?);
                    continue;
                }
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(&doc)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(example: &str) -> Vec<serde_json::Value> {
        let args = Args {
            file: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("manifests/examples")
                .join(example),
            targets: None,
            proxy_image: "routemeter/routemeter:test".into(),
            cluster_domain: "cluster.local".into(),
            rules_only: false,
        };
        let text = args.render().expect("renders");
        serde_yaml::Deserializer::from_str(&text)
            .map(|doc| serde_json::Value::deserialize(doc).expect("a YAML document"))
            .collect()
    }

    /// Paths of every null, empty string or empty object under `value`.
    fn empties(value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Null => out.push(path.to_string()),
            serde_json::Value::String(s) if s.is_empty() => out.push(path.to_string()),
            serde_json::Value::Object(m) => {
                if m.is_empty() {
                    out.push(path.to_string());
                }
                for (k, v) in m {
                    empties(v, &format!("{path}.{k}"), out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    empties(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn takeover_shows_the_target_service_as_it_is_left() {
        let docs = render("takeover.yaml");
        let target = docs
            .iter()
            .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "orders")
            .expect("the target Service in the output");
        assert_eq!(
            target["spec"]["selector"]["routemeter.io/monitored-service"],
            "orders"
        );
        let record: takeover::Record = serde_json::from_str(
            target["metadata"]["annotations"][takeover::RECORD_ANNOTATION]
                .as_str()
                .expect("the record"),
        )
        .expect("a record");
        assert_eq!(
            record.selector.get("app").map(String::as_str),
            Some("orders")
        );
        let config = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "orders-routemeter")
            .expect("proxy config");
        let text = config["data"]["config.yaml"].as_str().expect("config");
        assert!(text.contains("listen: 0.0.0.0:80\n"), "{text}");
    }

    #[test]
    fn render_output_applies_as_printed() {
        for example in ["trips-api.yaml", "minimal.yaml", "takeover.yaml"] {
            let docs = render(example);
            assert!(docs.len() >= 7, "{example}: {} objects", docs.len());
            for doc in &docs {
                let what = format!("{example}: {} {}", doc["kind"], doc["metadata"]["name"]);
                let meta = &doc["metadata"];
                assert!(
                    meta.get("ownerReferences").is_none(),
                    "{what}: an owner reference needs the owner's uid, which a file has not"
                );
                assert!(
                    !serde_json::to_string(doc)
                        .expect("JSON")
                        .contains("\"uid\""),
                    "{what}"
                );
                assert!(doc.get("status").is_none(), "{what}: status is not applied");
                for field in ["apiVersion", "kind"] {
                    assert!(
                        doc[field].as_str().is_some_and(|s| !s.is_empty()),
                        "{what}: {field}"
                    );
                }
                for field in ["name", "namespace"] {
                    assert!(
                        meta[field].as_str().is_some_and(|s| !s.is_empty()),
                        "{what}: metadata.{field}"
                    );
                }
                let mut found = Vec::new();
                empties(doc, "", &mut found);
                assert!(found.is_empty(), "{what}: empty fields {found:?}");
            }
        }
    }
}
