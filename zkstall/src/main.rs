//! The `zkstall` binary: parses the command line and runs a command from the library.

use std::io::IsTerminal as _;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;
use zkstall::{
    cli::{Cli, Command},
    commands,
};

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    cli.normalize();
    let level = cli.log_filter();
    zkstall::sinks::text::set_localtime(cli.localtime);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_env_filter(
            EnvFilter::try_from_env("ZKSTALL_LOG").unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .init();

    let result = match &cli.command {
        Command::Check => {
            let ok = commands::check::run(std::io::stdout());
            return if ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            };
        }
        Command::Workload(a) => commands::workload::run(a),
        Command::Report(a) => commands::report::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Merge(a) => commands::merge::run(a),
        Command::Trace(a) => runtime().and_then(|rt| rt.block_on(commands::trace::run(a))),
        Command::Demo(a) => runtime().and_then(|rt| rt.block_on(commands::demo::run(a))),
        Command::Agent(a) => runtime().and_then(|rt| rt.block_on(commands::agent::run(a))),
        Command::Floor => runtime().and_then(|rt| rt.block_on(commands::floor::run())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A closed pipe (`| head`): the reader has what it wanted.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
                    // JSON written straight to stdout: serde_json's error hides the io error.
                    || c.downcast_ref::<serde_json::Error>()
                        .and_then(|e| e.io_error_kind())
                        == Some(std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zkstall: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
