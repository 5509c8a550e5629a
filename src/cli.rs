//! The command line: one binary, one subcommand per part.

use std::io::Write;

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
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Crd => print(&crate::crd::crd_yaml()?),
            Command::Render(args) => print(&args.render()?),
            Command::Proxy(args) => {
                crate::telemetry::init(self.log_format);
                // pingora builds its own runtimes: the proxy must not run inside one.
                args.run()?;
                Ok(())
            }
            Command::Operator(args) => {
                crate::telemetry::init(self.log_format);
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                runtime.block_on(args.run())?;
                Ok(())
            }
        }
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write to stdout")
}
