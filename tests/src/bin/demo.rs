//! `tests/demo.sh`: a real Asterisk 22 with res_push.so, then res-push-sidecar, and what an
//! operator sees at each step. `--keep` leaves both running until Ctrl-C.

use std::time::{Duration, Instant};

use res_push_itests::{Asterisk, Options, Sidecar, status_field, wait_for};

fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    let t0 = Instant::now();
    let step = |what: &str| println!("\n[{:>6.2}s] {what}", t0.elapsed().as_secs_f64());

    step("starting Asterisk 22 (Debian sid chroot) with res_push.so in modules.conf");
    let a = Asterisk::start("demo", Options::default());
    print!("{}", a.cli("core show version"));
    print!("{}", a.cli("module show like res_push"));

    step("no sidecar yet: Asterisk runs, the module keeps retrying");
    let down = wait_for(Duration::from_secs(10), || {
        let s = a.cli("push show status");
        (status_field(&s, "Sidecar link").as_deref() == Some("disconnected")).then_some(s)
    });
    print!("{}", down.unwrap_or_else(|| a.cli("push show status")));

    step("starting res-push-sidecar");
    let sidecar = Sidecar::start(&a.socket_host_path());
    let up = wait_for(Duration::from_secs(10), || {
        let s = a.cli("push show status");
        (status_field(&s, "Sidecar link").as_deref() == Some("connected")).then_some(s)
    });
    step("push show status");
    match up {
        Some(s) => print!("{s}"),
        None => {
            print!("{}", a.cli("push show status"));
            eprintln!(
                "the module did not connect to the sidecar:\n{}",
                sidecar.log()
            );
            std::process::exit(1);
        }
    }
    step("push ping (a no-op job through the queue, the socket and the sidecar)");
    print!("{}", a.cli("push ping"));

    if keep {
        step(&format!(
            "running; try: chroot {} asterisk -C {}/etc/asterisk.conf -r   (Ctrl-C stops everything)",
            res_push_itests::chroot().display(),
            a.dir
        ));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    step("stopping");
}
