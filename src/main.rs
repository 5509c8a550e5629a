use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the proxy allocates per request (headers, buffers) on several threads, where
/// glibc's allocator showed up as about a tenth of the CPU profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    routemeter::cli::Cli::parse().run()
}
