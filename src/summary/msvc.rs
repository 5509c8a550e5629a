//! A MonitoredService's summary as `routemeter top --msvc` and `routemeter compare --msvc`
//! read it: its ready proxy pods, found as the operator finds them
//! ([`crate::proxy_pods`]), each read through the API server's pod proxy (no
//! port-forward, no route into the cluster: `get` on the MonitoredService, `list` on pods,
//! `get` on `pods/proxy`), and merged with [`super::merge`] (rates add, percentiles from
//! the added buckets), as in the MonitoredService's status. The client is configured as
//! kubectl's: `--kubeconfig`, `KUBECONFIG`, `~/.kube/config`, then in-cluster,
//! `--context` or the current one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use thiserror::Error;

use super::{Summary, Window};
use crate::crd::MonitoredService;
use crate::proxy_pods::{self, PodsError, ReadyProxy};

/// How long one proxy's answer may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a MonitoredService's summary could not be read.
#[derive(Debug, Error)]
pub enum MsvcError {
    #[error("cannot load the kubeconfig{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        path: Option<PathBuf>,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot configure a Kubernetes client (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    InferConfig(#[source] kube::config::InferConfigError),
    #[error("cannot start the Kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
    #[error("cannot read MonitoredService {namespace}/{name}: {source}")]
    ReadMonitoredService {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "no MonitoredService {name} in namespace {namespace} (kubectl get msvc -n {namespace})"
    )]
    NoMonitoredService { namespace: String, name: String },
    #[error("cannot find the proxies of MonitoredService {namespace}/{name}: {source}")]
    Pods {
        namespace: String,
        name: String,
        #[source]
        source: Box<PodsError>,
    },
    #[error("MonitoredService {namespace}/{name} has no ready proxy pod: {}", no_ready(*.matched, namespace, selector))]
    NoReadyProxy {
        namespace: String,
        name: String,
        matched: usize,
        selector: String,
    },
    #[error("no proxy of MonitoredService {namespace}/{name} answered through the API server's pod proxy: {}", failures.join("; "))]
    NoProxyAnswered {
        namespace: String,
        name: String,
        failures: Vec<String>,
    },
    #[error(
        "the summaries of MonitoredService {namespace}/{name}'s proxies do not merge: their windows or bucket boundaries differ (proxies of two configs, during a rollout?)"
    )]
    Unmergeable { namespace: String, name: String },
}

/// Why no proxy pod is ready, and where to look.
fn no_ready(matched: usize, namespace: &str, selector: &str) -> String {
    let look = format!("kubectl get pods -n {namespace} -l {selector}");
    match matched {
        0 => format!("no pod is labelled {selector} (is the operator running? {look})"),
        1 => format!("the 1 pod labelled {selector} is not ready ({look})"),
        n => format!("none of the {n} pods labelled {selector} is ready ({look})"),
    }
}

/// A Kubernetes object name (an RFC 1123 subdomain: lower-case letters, digits, `-` and
/// `.`, starting and ending with a letter or digit, at most 253 characters), so that it
/// goes into a request path as it is. A clap value parser.
pub fn parse_name(text: &str) -> Result<String, String> {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| alphanumeric(c) || c == '-' || c == '.')
        && text.starts_with(alphanumeric)
        && text.ends_with(alphanumeric);
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a Kubernetes name: lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
        ))
    }
}

/// A window by name, as a clap value parser.
pub fn parse_window(text: &str) -> Result<Window, String> {
    Window::parse(text).ok_or_else(|| format!("{text:?}: expected one of 1m, 5m, 15m, 1h"))
}

/// The flags that say where a MonitoredService is, shared by `top --msvc` and
/// `compare --msvc` (flattened into each one's arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// The MonitoredService's namespace [default: the kubeconfig context's, or the pod's
    /// in a cluster].
    #[arg(long, short = 'n', value_parser = parse_name)]
    pub namespace: Option<String>,
    /// The kubeconfig file [default: KUBECONFIG, then ~/.kube/config, then in-cluster].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: its current context].
    #[arg(long)]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// The first of these flags given, by its name: they go with `--msvc` only.
    pub fn given(&self) -> Option<&'static str> {
        [
            ("-n/--namespace", self.namespace.is_some()),
            ("--kubeconfig", self.kubeconfig.is_some()),
            ("--context", self.context.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag))
    }

    /// The client and namespace these flags name (see [`client`]).
    pub async fn client(&self) -> Result<(kube::Client, String), MsvcError> {
        client(
            self.kubeconfig.as_deref(),
            self.context.as_deref(),
            self.namespace.as_deref(),
        )
        .await
    }
}

/// A client configured as kubectl's (see [`kube_config`]), and the namespace to read in:
/// `namespace`, else the context's. The client does not retry: the API server answers 503
/// for a pod that does not answer, which it would retry with backoff; that pod is left out
/// and named instead.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<(kube::Client, String), MsvcError> {
    let mut config = kube_config(kubeconfig, context).await?;
    config.default_retry = false;
    let namespace = namespace.map_or_else(|| config.default_namespace.clone(), String::from);
    let client = kube::Client::try_from(config).map_err(MsvcError::KubeClient)?;
    Ok((client, namespace))
}

/// The Kubernetes client's config, as kubectl finds it: the file of `--kubeconfig`, or
/// `KUBECONFIG` / `~/.kube/config` (then in-cluster when neither is asked for by flag),
/// with `--context` or the current context.
async fn kube_config(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Config, MsvcError> {
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..KubeConfigOptions::default()
    };
    let error = |path: Option<&Path>| {
        let path = path.map(Path::to_path_buf);
        move |source| MsvcError::Kubeconfig { path, source }
    };
    match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(error(Some(path)))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(error(Some(path)))
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(error(None)),
        (None, None) => kube::Config::infer().await.map_err(MsvcError::InferConfig),
    }
}

/// The ready proxy pods of MonitoredService `namespace/name`, found once: every window
/// read from them is read from the same pods.
#[derive(Debug, Clone)]
pub struct Proxies {
    pub namespace: String,
    pub name: String,
    /// The ready ones, at least one.
    pub ready: Vec<ReadyProxy>,
}

/// One window's merged summary of a MonitoredService's proxies.
#[derive(Debug, Clone)]
pub struct Merged {
    pub summary: Summary,
    /// How many proxies answered (and are merged).
    pub answered: usize,
    /// How many were ready and asked.
    pub ready: usize,
    /// Each proxy that did not answer, and why.
    pub failures: Vec<String>,
}

impl Merged {
    /// `2 of 3 ready proxies`.
    pub fn proxies(&self) -> String {
        format!("{} of {} ready proxies", self.answered, self.ready)
    }
}

/// The ready proxies of MonitoredService `namespace/name`; an error when it does not
/// exist or none of its proxies is ready.
pub async fn find(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Proxies, MsvcError> {
    let (ns, n) = (namespace.to_string(), name.to_string());
    let msvc = Api::<MonitoredService>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| MsvcError::ReadMonitoredService {
            namespace: ns.clone(),
            name: n.clone(),
            source,
        })?
        .ok_or_else(|| MsvcError::NoMonitoredService {
            namespace: ns.clone(),
            name: n.clone(),
        })?;
    let proxies = proxy_pods::list(client, &msvc)
        .await
        .map_err(|source| MsvcError::Pods {
            namespace: ns.clone(),
            name: n.clone(),
            source: Box::new(source),
        })?;
    if proxies.ready.is_empty() {
        return Err(MsvcError::NoReadyProxy {
            namespace: ns,
            name: n,
            matched: proxies.matched,
            selector: proxy_pods::label_selector(&msvc),
        });
    }
    Ok(Proxies {
        namespace: ns,
        name: n,
        ready: proxies.ready,
    })
}

/// [`find`] then [`Proxies::read`]: one window's merged summary.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    window: Window,
) -> Result<Merged, MsvcError> {
    find(client, namespace, name)
        .await?
        .read(client, window)
        .await
}

impl Proxies {
    /// `shop/api`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The merged summary of `window`, each proxy read through the API server's pod
    /// proxy. Proxies that do not answer are left out and named in `failures`; it fails
    /// when none answers.
    pub async fn read(&self, client: &kube::Client, window: Window) -> Result<Merged, MsvcError> {
        let path = super::api_path(window);
        let answers = futures::future::join_all(
            self.ready
                .iter()
                .map(|p| read_pod(client, &self.namespace, p, &path)),
        )
        .await;
        let (mut summaries, mut failures) = (Vec::new(), Vec::new());
        for answer in answers {
            match answer {
                Ok(summary) => summaries.push(summary),
                Err(failure) => failures.push(failure),
            }
        }
        if summaries.is_empty() {
            return Err(MsvcError::NoProxyAnswered {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                failures,
            });
        }
        let summary = super::merge(&summaries).ok_or_else(|| MsvcError::Unmergeable {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        })?;
        Ok(Merged {
            summary,
            answered: summaries.len(),
            ready: self.ready.len(),
            failures,
        })
    }
}

/// An API error as `403 Forbidden: message`, others as they print.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    }
}

/// The summary of one proxy pod through the API server; `Err` says which pod and why.
async fn read_pod(
    client: &kube::Client,
    namespace: &str,
    proxy: &ReadyProxy,
    path: &str,
) -> Result<Summary, String> {
    let failed = |why: String| format!("pod {} did not answer {path}: {why}", proxy.name);
    let request = http::Request::get(proxy.api_server_path(namespace, path))
        .body(Vec::new())
        .map_err(|e| failed(e.to_string()))?;
    let body = tokio::time::timeout(REQUEST_TIMEOUT, client.request_text(request))
        .await
        .map_err(|_| failed(format!("no answer within {REQUEST_TIMEOUT:?}")))?
        .map_err(|e| failed(api_message(&e)))?;
    serde_json::from_str(&body).map_err(|e| format!("pod {}: not a summary: {e}", proxy.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_windows_are_checked_before_they_go_into_a_path() {
        assert_eq!(parse_name("trips-api.v2"), Ok("trips-api.v2".into()));
        for bad in ["Api", "api/x", ".api", "api-", ""] {
            let error = parse_name(bad).expect_err("not a name");
            assert!(error.contains("is not a Kubernetes name"), "{bad}: {error}");
        }
        assert_eq!(parse_window("1h"), Ok(Window::OneHour));
        assert!(
            parse_window("2m")
                .expect_err("no such window")
                .contains("1m, 5m")
        );
    }

    #[test]
    fn missing_proxies_are_named_with_where_to_look() {
        let error = |matched| {
            MsvcError::NoReadyProxy {
                namespace: "shop".into(),
                name: "api".into(),
                matched,
                selector: "a=b".into(),
            }
            .to_string()
        };
        assert_eq!(
            error(0),
            "MonitoredService shop/api has no ready proxy pod: no pod is labelled a=b (is the \
             operator running? kubectl get pods -n shop -l a=b)"
        );
        assert_eq!(
            error(3),
            "MonitoredService shop/api has no ready proxy pod: none of the 3 pods labelled a=b \
             is ready (kubectl get pods -n shop -l a=b)"
        );
        let forbidden = kube::Error::Api(
            kube::core::Status::failure("pods \"x\" is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        assert_eq!(
            api_message(&forbidden),
            "403 Forbidden: pods \"x\" is forbidden"
        );
    }
}
