//! CLI commands.

use std::time::{Duration, Instant};

use res_push_proto::{Job, Outcome as JobOutcome};

use crate::ast::cli::{Outcome, Output, Spec};
use crate::ast::sync;
use crate::ffi::rp_cli_command;
use crate::module::{self, VERSION};

const SPECS: &[Spec] = &[
    Spec {
        index: rp_cli_command::RP_CLI_SHOW_STATUS,
        words: c"push show status",
        usage: c"Usage: push show status\n       Shows the res_push version, the sidecar link (state, protocol, since when),\n       the job queue and counters.\n",
    },
    Spec {
        index: rp_cli_command::RP_CLI_PING,
        words: c"push ping",
        usage: c"Usage: push ping\n       Sends a no-op job through the queue and the sidecar and prints the round trip.\n",
    },
];

/// The spec of a shim index.
pub fn spec(index: i32) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.index as i32 == index)
}

/// Runs command `index` with the words Asterisk matched (`args[0]` is `push`).
pub fn exec(index: i32, out: Output, args: &[String]) -> Outcome {
    let Some(spec) = spec(index) else {
        return Outcome::Failure;
    };
    let expected = spec.words.to_bytes().split(|b| *b == b' ').count();
    if args.len() != expected {
        return Outcome::ShowUsage;
    }
    let Some(running) = module::running() else {
        out.write("res_push is not running\n");
        return Outcome::Failure;
    };
    match spec.index {
        rp_cli_command::RP_CLI_SHOW_STATUS => {
            out.write(&running.link.status(VERSION).render());
            Outcome::Success
        }
        rp_cli_command::RP_CLI_PING => ping(&running, out),
        _ => Outcome::Failure,
    }
}

fn ping(running: &module::Running, out: Output) -> Outcome {
    const BUDGET: Duration = Duration::from_secs(3);
    let (filler, slot) = sync::slot();
    let started = Instant::now();
    if let Err(e) = running
        .link
        .submit(Job::Ping, Some(BUDGET), Box::new(move |r| filler.fill(r)))
    {
        out.write(&format!("Ping not sent: {e}\n"));
        return Outcome::Failure;
    }
    // Operators expect the answer on screen; the link answers every accepted job, at the
    // latest at its deadline, so this wait is bounded.
    match slot.wait(BUDGET + Duration::from_secs(2)) {
        Some(Ok(JobOutcome::Pong)) => {
            out.write(&format!(
                "Pong from sidecar in {:.1} ms\n",
                started.elapsed().as_secs_f64() * 1000.0
            ));
            Outcome::Success
        }
        Some(Ok(other)) => {
            out.write(&format!("Unexpected answer from sidecar: {other:?}\n"));
            Outcome::Failure
        }
        Some(Err(e)) => {
            out.write(&format!("Ping failed: {e}\n"));
            Outcome::Failure
        }
        None => {
            out.write("Ping got no answer\n");
            Outcome::Failure
        }
    }
}
