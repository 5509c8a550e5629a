//! The command line: one binary, one subcommand per part.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Per-route Prometheus metrics, alerts and dashboards for any HTTP service.
#[derive(Debug, Parser)]
#[command(name = "routemeter", version, about)]
pub struct Cli {
    /// Log format: json for production, text for a terminal.
    #[arg(
        long,
        global = true,
        env = "ROUTEMETER_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Kubernetes operator (in-cluster config, or KUBECONFIG).
    Operator(crate::operator::Args),
    /// Run the metering reverse proxy.
    Proxy(crate::proxy::Args),
    /// Print the MonitoredService CRD as YAML.
    Crd,
    /// Print every object the operator would create for the MonitoredServices in a file.
    Render(crate::operator::render::Args),
    /// Compare two /api/summary snapshots, files or two windows of a MonitoredService's
    /// proxies (`--msvc`, through the API server): exit 1 when the current one regressed
    /// past the thresholds, 2 when either cannot be read.
    Compare(crate::summary::compare::Args),
    /// Show the live summary in the terminal, like `kubectl top`, of one proxy
    /// (`--admin`) or of a MonitoredService's proxies merged (`--msvc`, through the API
    /// server): the routes by requests, the overall figures and the recommendations,
    /// refreshed in place.
    Top(crate::summary::top::Args),
}

impl Cli {
    /// Runs the chosen subcommand. The long-running ones (`operator`, `proxy`) start
    /// logging first, so that a failure, reading the config included, is one log line in
    /// the chosen format (JSON in a pod); the others (the one-shot commands and `top`, a
    /// terminal's) print errors as text.
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Crd => print(crate::crd::crd_yaml().map_err(anyhow::Error::from)),
            Command::Render(args) => print(args.render().map_err(anyhow::Error::from)),
            Command::Top(args) => args.run().map_err(anyhow::Error::from),
            Command::Compare(args) => {
                return match args.run() {
                    Ok(false) => ExitCode::SUCCESS,
                    Ok(true) => ExitCode::from(1),
                    Err(error) => {
                        eprintln!("error: {error}");
                        ExitCode::from(2)
                    }
                };
            }
            Command::Proxy(args) => {
                crate::telemetry::init(self.log_format);
                // pingora builds its own runtimes: the proxy must not run inside one.
                return logged("routemeter proxy", args.run().map_err(anyhow::Error::from));
            }
            Command::Operator(args) => {
                crate::telemetry::init(self.log_format);
                let result = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")
                    .and_then(|runtime| Ok(runtime.block_on(args.run())?));
                return logged("routemeter operator", result);
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {}", message(&error));
                ExitCode::FAILURE
            }
        }
    }
}

/// The exit code of a long-running command, its failure logged as one event.
fn logged(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{what} cannot run: {}", message(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once: routemeter's errors already end with their
/// source's message, which `{:#}` would repeat.
fn message(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn print(text: anyhow::Result<String>) -> anyhow::Result<()> {
    std::io::stdout()
        .lock()
        .write_all(text?.as_bytes())
        .context("cannot write to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_says_each_cause_once() {
        let parse = crate::config::ProxyConfig::from_yaml(
            "upstream: {endpoints: ['a:1']}\nroutes: [{path: /a, methods: GET}]",
        )
        .expect_err("invalid");
        let error = anyhow::Error::from(crate::proxy::ProxyError::Config(parse));
        let text = message(&error);
        assert!(
            text.starts_with("invalid config: routes[0].methods: "),
            "{text}"
        );
        assert_eq!(text.matches("routes[0].methods").count(), 1, "{text}");
        // A context that does not repeat its cause gets it appended.
        let io = std::io::Error::other("no threads");
        let wrapped = anyhow::Error::from(io).context("cannot start the async runtime");
        assert_eq!(
            message(&wrapped),
            "cannot start the async runtime: no threads"
        );
    }
}
