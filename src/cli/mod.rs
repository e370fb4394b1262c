//! The `ranged` command line: parses the flags, builds the runtime and logging, and hands each
//! command to its module. `main.rs` calls [`main`] and nothing else.
//!
//! - [`args`] — the flags as clap types (every flag has a `RANGED_*` environment twin);
//! - [`bench_args`] — the flags of `ranged bench`;
//! - [`parse`] — value parsers and address rules;
//! - `serve` — `start`, `gateway`, `demo`, and their flags' translation into library configs;
//! - `client` — `init`, `kv`, `node`, `cert`, `workload`, `bench`;
//! - `output` — tables and JSON.

pub mod args;
pub mod bench_args;
mod client;
mod output;
pub mod parse;
mod serve;

use std::process::ExitCode;

pub use self::args::{Cli, Command};
use self::bench_args::BenchCommand;
pub use self::client::connect;

/// Default log filter of `ranged start` (override with RANGED_LOG). openraft logs every failed
/// attempt to reach a down peer at ERROR, twice a second; liveness already reports that.
const DEFAULT_NODE_LOG: &str = "info,openraft=off,chitchat=warn";

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ERROR: {message}");
    ExitCode::FAILURE
}

fn install_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RANGED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// The log filter a command runs with unless RANGED_LOG says otherwise: servers log their
/// progress, one-shot commands only what went wrong.
fn log_filter(command: &Command) -> &'static str {
    match command {
        Command::Start(_) => DEFAULT_NODE_LOG,
        Command::Gateway(_) => "info",
        Command::Demo(_) => "warn,openraft=error",
        // A leader replicating to 99 learners on two cores misses some 150 ms heartbeat
        // deadlines; openraft logs each as an error, which would drown the result.
        Command::Bench { command: BenchCommand::Fanout { .. } } => "error,openraft=off",
        Command::Bench { command: BenchCommand::HotRanges { .. } } => "error",
        // The stopped node's peers fail to reach it thousands of times a second.
        Command::Bench { command: BenchCommand::RaftGroups { .. } } => "error,openraft=off",
        _ => "warn",
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::parse_command_line(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = err.print();
                return if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: clap's first line, without its usage block.
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("ERROR: {first} (see 'ranged --help')");
            return ExitCode::from(2);
        }
    };
    crate::install_crypto_provider();
    let workers = match &cli.command {
        Command::Start(args) => args.runtime.worker_threads,
        Command::Gateway(args) => args.runtime.worker_threads,
        _ => None,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers as usize);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return fail(format!("cannot start the runtime: {err}")),
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    install_tracing(log_filter(&cli.command));
    let result = match cli.command {
        Command::Start(args) => serve::start(*args).await,
        Command::Gateway(args) => serve::gateway(args).await,
        Command::Demo(args) => serve::demo(args).await,
        Command::Workload { command } => client::workload(command).await,
        Command::Bench { command } => client::bench(command).await,
        Command::Init(args) => client::init(args).await.map_err(|err| err.to_string()),
        Command::Kv { client, command } => client::kv(client, command).await.map_err(|err| err.to_string()),
        Command::Node { client, command } => client::node(client, command).await.map_err(|err| err.to_string()),
        Command::Cert { cert, command } => client::cert(cert, command).map_err(|err| err.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

/// Resolves on Ctrl-C or SIGTERM: the one shutdown signal of every server.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
