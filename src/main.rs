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
    let cli = Cli::parse();
    match cli.command {
        Command::Audit(args) => meshgate::audit::run(&args),
        Command::Rules(args) => meshgate::catalogue::run(&args),
        Command::Policies(args) => meshgate::native::run(&args),
        Command::RemoveWebhooks(args) => {
            init_logging(LogFormat::Text);
            match tokio::runtime::Runtime::new() {
                Ok(rt) => rt.block_on(meshgate::uninstall::run(&args)),
                Err(error) => {
                    eprintln!("meshgate: cannot start the async runtime: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            init_logging(args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(error) => {
                    eprintln!("meshgate: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(meshgate::server::run(args, shutdown_signal())) {
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

/// kube-client logs, without context, every failed HTTP request at ERROR
/// (its trace layer, `failed with error ...`: 157 lines in 70 s of an API
/// server outage) and every watch stream the API server cut at WARN (`eof
/// in poll`, one per watch per restart). Each such failure reaches meshgate,
/// which logs it once per outage and counts it, so those lines are off
/// unless `MESHGATE_LOG` asks for them; the client's TLS module (CA bundle
/// reloads) still logs.
const DEFAULT_LOG_FILTER: &str =
    "info,kube_client::client=error,kube_client::client::builder=off,kube_client::client::tls=info";

fn init_logging(format: LogFormat) {
    let filter = match tracing_subscriber::EnvFilter::try_from_env("MESHGATE_LOG") {
        Ok(filter) => filter,
        Err(error) => {
            // Unset is the normal case; a filter that does not parse is a
            // mistake to say out loud, not to hide behind the default.
            if std::env::var_os("MESHGATE_LOG").is_some() {
                eprintln!("meshgate: MESHGATE_LOG is not a valid log filter ({error}): using the default filter");
            }
            tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)
        }
    };
    // Colour codes only on a terminal: in files and log collectors they are
    // noise. NO_COLOR (https://no-color.org) turns them off anyway.
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        // The review span once per line ("span"), not again as a one-entry
        // "spans" list: the formatter re-parses each span's fields for every
        // line, and the decision line is written once per review.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.init(),
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
