// The binary, like the library, returns errors rather than panicking; tests may
// unwrap (clippy.toml). Set here, not in Cargo.toml's [lints], which would
// also cover every test, bench and example crate.
#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use clap::Parser;
use meshgate::cli::{Cli, Command, LogFormat};

/// See `meshgate::allocator`.
#[global_allocator]
static ALLOCATOR: meshgate::allocator::Allocator = meshgate::allocator::Allocator;

fn main() -> ExitCode {
    let code = run(Cli::parse());
    // Log lines are written in batches: the last ones go out now.
    meshgate::serve::log::flush();
    code
}

fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Audit(args) => meshgate::audit::run(&args),
        Command::Rules(args) => meshgate::catalogue::run(&args),
        Command::Policies(args) => meshgate::native::run(&args),
        Command::RemoveWebhooks(args) => {
            meshgate::serve::log::init(LogFormat::Text);
            match tokio::runtime::Runtime::new() {
                Ok(rt) => rt.block_on(meshgate::uninstall::run(&args)),
                Err(error) => {
                    eprintln!("meshgate: cannot start the async runtime: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            meshgate::serve::log::init(args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(error) => {
                    eprintln!("meshgate: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(meshgate::serve::run(args, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "cannot start");
                    eprintln!("meshgate: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// SIGTERM (the kubelet) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown signal received");
}
