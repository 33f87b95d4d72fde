//! `res-push-sidecar`: parses options, binds the socket, and serves until SIGTERM or SIGINT.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use res_push_sidecar::{Config, SocketOptions};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;
use tracing_subscriber::EnvFilter;

/// See the `mimalloc` entry of Cargo.toml: allocation was the largest single cost per push.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Delivers VoIP pushes (APNs, FCM) on behalf of Asterisk's res_push module.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Unix socket res_push.so connects to.
    #[arg(
        long,
        env = "RES_PUSH_SIDECAR_SOCKET",
        default_value = "/run/res-push/sidecar.sock"
    )]
    socket: PathBuf,
    /// Permissions of the socket file, in octal.
    #[arg(long, env = "RES_PUSH_SIDECAR_SOCKET_MODE", default_value = "0660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Group to own the socket file (e.g. asterisk), so that Asterisk may connect.
    #[arg(long, env = "RES_PUSH_SIDECAR_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// Most connections served at once; more wait in the listen backlog.
    #[arg(
        long,
        env = "RES_PUSH_SIDECAR_MAX_CONNECTIONS",
        default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_connections: u32,
    /// Most pushes out to APNs/FCM at once; more wait, and one still waiting at its deadline
    /// is dropped (answered "expired") rather than sent late.
    #[arg(
        long,
        env = "RES_PUSH_SIDECAR_MAX_INFLIGHT",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_inflight: u32,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9464). Off by default.
    #[arg(long, env = "RES_PUSH_SIDECAR_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    /// Without it RUST_LOG is used, and without that, info.
    #[arg(long, env = "RES_PUSH_SIDECAR_LOG_LEVEL")]
    log_level: Option<String>,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!("{s:?} is not an octal file mode such as 0660")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Printed by hand: anyhow's Debug output would add a backtrace whenever RUST_BACKTRACE is set,
    // which is noise for an operator facing a configuration error.
    match serve(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("res-push-sidecar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let filter = match &args.log_level {
        Some(directives) => EnvFilter::try_new(directives)
            .with_context(|| format!("invalid --log-level {directives:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // journald and log files want plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // Handlers go in before the socket exists: whoever sees the socket may signal us at once,
    // and the default action would kill us without removing it.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let listener = res_push_sidecar::bind(&SocketOptions {
        path: args.socket,
        mode: args.socket_mode,
        group: args.socket_group,
    })
    .await?;

    let metrics = match args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen {addr}"))?,
        ),
        None => None,
    };
    let config = Config {
        max_connections: args.max_connections as usize,
        max_inflight: args.max_inflight as usize,
        ..Config::default()
    };
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => info!("SIGTERM received"),
            _ = sigint.recv() => info!("SIGINT received"),
        }
    };
    res_push_sidecar::run_with(listener, config, metrics, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert!(parse_mode("0968").is_err());
        assert!(parse_mode("17777").is_err());
        assert!(parse_mode("").is_err());
    }

    #[test]
    fn cli_defaults_and_overrides() {
        let args = Args::try_parse_from(["res-push-sidecar"]).expect("defaults parse");
        assert_eq!(args.socket_mode, 0o660);
        assert_eq!(args.max_connections, 16);
        assert_eq!(args.max_inflight, 256);
        assert_eq!(args.metrics_listen, None);
        let args = Args::try_parse_from([
            "res-push-sidecar",
            "--socket",
            "/tmp/x.sock",
            "--socket-mode",
            "0600",
            "--socket-group",
            "asterisk",
            "--max-connections",
            "4",
            "--max-inflight",
            "8",
            "--metrics-listen",
            "127.0.0.1:9464",
        ])
        .expect("options parse");
        assert_eq!(args.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(args.socket_mode, 0o600);
        assert_eq!(args.socket_group.as_deref(), Some("asterisk"));
        assert_eq!(args.max_connections, 4);
        assert_eq!(args.max_inflight, 8);
        assert_eq!(args.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(Args::try_parse_from(["res-push-sidecar", "--max-inflight", "0"]).is_err());
        assert!(Args::try_parse_from(["res-push-sidecar", "--max-connections", "0"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
