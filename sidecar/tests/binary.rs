//! Runs the built `res-push-sidecar` binary the way a service manager would.

use std::{
    io::Read,
    os::unix::net::UnixStream,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use res_push_proto::{
    ClientFrame, Job, Outcome, PROTOCOL_VERSION, ServerFrame, read_frame, write_frame,
};

const PATIENCE: Duration = Duration::from_secs(20);

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_serves_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/sidecar.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_res-push-sidecar"))
        .arg("--socket")
        .arg(&path)
        .args(["--log-level", "info"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the sidecar");

    wait_until("the socket", || path.exists());
    let mut stream = UnixStream::connect(&path).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write_frame(
        &mut stream,
        &ClientFrame::Hello {
            min_version: 1,
            max_version: PROTOCOL_VERSION,
            client: "res_push-test".into(),
            client_version: "0".into(),
            node: "pbx".into(),
        },
    )
    .expect("send hello");
    match read_frame(&mut stream).expect("welcome") {
        ServerFrame::Welcome { version, .. } => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("unexpected {other:?}"),
    }
    write_frame(
        &mut stream,
        &ClientFrame::Submit {
            id: 1,
            deadline_ms: 5_000,
            job: Job::Ping,
        },
    )
    .expect("send ping");
    assert_eq!(
        read_frame::<_, ServerFrame>(&mut stream).expect("pong"),
        ServerFrame::Outcome {
            id: 1,
            outcome: Outcome::Pong
        }
    );

    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    let mut status = None;
    wait_until("the sidecar to exit", || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    let status = status.expect("exited");
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("read log");

    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(!path.exists(), "socket left behind; log:\n{log}");
    assert!(log.contains("shutting down"), "log:\n{log}");
}

#[test]
fn binary_refuses_a_socket_another_sidecar_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sidecar.sock");
    let _holder = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let output = Command::new(env!("CARGO_BIN_EXE_res-push-sidecar"))
        .arg("--socket")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run the sidecar");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("another sidecar is already listening on"),
        "{stderr}"
    );
    assert!(path.exists(), "the other sidecar's socket was removed");
}
