use clap::Parser;

fn main() -> anyhow::Result<()> {
    routemeter::cli::Cli::parse().run()
}
