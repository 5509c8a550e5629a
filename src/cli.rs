//! The command line: one binary, one subcommand per part.

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Per-route Prometheus metrics, alerts and dashboards for any HTTP service.
#[derive(Debug, Parser)]
#[command(name = "routemeter", version, about)]
pub struct Cli {
    /// Log format: json for production, text for a terminal.
    #[arg(long, global = true, env = "ROUTEMETER_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the metering reverse proxy.
    Proxy(crate::proxy::Args),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        crate::telemetry::init(self.log_format);
        match self.command {
            Command::Proxy(args) => args.run()?,
        }
        Ok(())
    }
}
