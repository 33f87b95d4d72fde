//! res_push.so in a real Asterisk 22: load, unload, reload, and the sidecar link surviving a
//! dead sidecar.

use std::fs;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use res_push_core::identity::{self, Identity, RECORD_LEN};
use res_push_itests::{
    Asterisk, Options, Sidecar, module_path, module_running, status_field, wait_for,
};

const LINK_WAIT: Duration = Duration::from_secs(15);

fn link_state(a: &Asterisk) -> Option<String> {
    status_field(&a.cli("push show status"), "Sidecar link")
}

fn wait_link(a: &Asterisk, want: &str) {
    let got = wait_for(LINK_WAIT, || {
        (link_state(a).as_deref() == Some(want)).then_some(())
    });
    assert!(
        got.is_some(),
        "link never became {want}; status:\n{}",
        a.cli("push show status")
    );
}

fn res_push_threads(a: &Asterisk) -> Vec<String> {
    a.thread_names()
        .into_iter()
        .filter(|n| n.starts_with("res_push"))
        .collect()
}

#[test]
fn loads_at_startup_connects_and_pings() {
    // The sidecar starts first: the module must find it on its first attempt.
    let a = Asterisk::start("startup", Options::default());
    let sidecar = Sidecar::start(&a.socket_host_path());
    assert!(module_running(&a), "{}", a.cli("module show like res_push"));
    wait_link(&a, "connected");

    let status = a.cli("push show status");
    assert_eq!(
        status_field(&status, "Module version").as_deref(),
        Some(env!("CARGO_PKG_VERSION")),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "Protocol version").as_deref(),
        Some("1"),
        "{status}"
    );
    // The identity it was built for and the one it runs in (they match, or it would not run).
    let built = status_field(&status, "Built for").unwrap_or_default();
    let running = status_field(&status, "Running in").unwrap_or_default();
    assert!(
        built.starts_with("Asterisk 22.") && built.contains(", pjproject 2."),
        "{status}"
    );
    assert!(running.starts_with("Asterisk 22."), "{status}");
    assert_eq!(
        built.rsplit_once(", ").map(|(_, pj)| pj),
        running.rsplit_once(", ").map(|(_, pj)| pj),
        "{status}"
    );
    assert!(
        status_field(&status, "Connected since").is_some_and(|s| s.contains("ago")),
        "{status}"
    );
    assert_eq!(
        status_field(&status, "Queue depth").as_deref(),
        Some("0/1024"),
        "{status}"
    );

    let pong = a.cli("push ping");
    assert!(pong.starts_with("Pong from sidecar in "), "{pong}");
    let status = a.cli("push show status");
    let completed: u64 = status_field(&status, "Jobs completed")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(completed >= 1, "{status}");
    assert!(
        sidecar.log().contains("res-push-test"),
        "the sidecar should log the node name:\n{}",
        sidecar.log()
    );
}

#[test]
fn unload_load_reload_repeatedly_leave_nothing_behind() {
    let a = Asterisk::start("cycles", Options::default());
    let _sidecar = Sidecar::start(&a.socket_host_path());
    wait_link(&a, "connected");
    assert!(
        a.maps_contain("res_push.so"),
        "the maps check must see the loaded library"
    );
    assert!(
        !res_push_threads(&a).is_empty(),
        "link thread expected: {:?}",
        a.thread_names()
    );

    // Our own threads are checked by name each round. The total is compared between later
    // rounds (Asterisk starts some of its threads lazily on first use): a leak grows with
    // every cycle.
    let mut after_round = Vec::new();
    for round in 0..5 {
        let out = a.cli("module unload res_push.so");
        assert!(out.contains("Unloaded res_push.so"), "round {round}: {out}");
        assert!(!module_running(&a), "round {round}");
        assert_eq!(
            res_push_threads(&a),
            Vec::<String>::new(),
            "round {round}: threads left behind"
        );
        assert!(
            !a.maps_contain("res_push.so"),
            "round {round}: library still mapped after unload"
        );
        assert!(
            a.cli("push show status").contains("No such command"),
            "round {round}: CLI left registered"
        );

        let out = a.cli("module load res_push.so");
        assert!(out.contains("Loaded res_push.so"), "round {round}: {out}");
        assert!(module_running(&a), "round {round}");
        wait_link(&a, "connected");

        let out = a.cli("module reload res_push");
        assert!(!out.contains("fail"), "round {round}: {out}");
        assert!(module_running(&a), "round {round}");
        after_round.push(a.thread_names().len());
    }
    let log = a.log();
    assert!(!log.contains("could not be completely unloaded"), "{log}");
    assert!(!log.contains("panic"), "{log}");
    // ±1 is the console thread serving the CLI command itself, which comes and goes.
    assert!(
        after_round[4] <= after_round[1] + 1,
        "thread count grows with load/unload cycles: {after_round:?} {:?}",
        a.thread_names()
    );
    assert!(a.cli("push ping").starts_with("Pong"));
}

#[test]
fn dead_sidecar_is_survived_and_reconnected_without_restart() {
    let mut a = Asterisk::start("sidecar-death", Options::default());
    let sidecar = Sidecar::start(&a.socket_host_path());
    wait_link(&a, "connected");

    sidecar.crash();
    wait_link(&a, "disconnected");
    assert!(a.is_running());
    assert!(a.cli("core show version").contains("Asterisk 22"));
    let status = a.cli("push show status");
    assert!(
        status_field(&status, "Last error").is_some_and(|e| e != "-"),
        "{status}"
    );
    // A job while the sidecar is down fails at once instead of waiting out its deadline.
    let ping = a.cli("push ping");
    assert!(ping.contains("not connected"), "{ping}");

    let _sidecar = Sidecar::start(&a.socket_host_path());
    wait_link(&a, "connected");
    assert!(a.cli("push ping").starts_with("Pong"));
    let status = a.cli("push show status");
    assert_eq!(
        status_field(&status, "Link connects").as_deref(),
        Some("2"),
        "{status}"
    );
    assert!(a.is_running());
}

#[test]
fn starts_without_sidecar_and_connects_when_it_appears() {
    let a = Asterisk::start("no-sidecar", Options::default());
    assert!(module_running(&a));
    wait_link(&a, "disconnected");
    let status = a.cli("push show status");
    assert!(
        status_field(&status, "Last error").is_some_and(|e| e.contains("connect")),
        "{status}"
    );
    let _sidecar = Sidecar::start(&a.socket_host_path());
    wait_link(&a, "connected");
}

#[test]
fn garbage_from_the_socket_is_logged_and_the_link_recovers() {
    let a = Asterisk::start("garbage", Options::default());
    // A fake sidecar that answers the handshake with nonsense.
    let listener = UnixListener::bind(a.socket_host_path()).expect("bind fake sidecar");
    let (mut conn, _) = listener.accept().expect("module connects");
    std::io::Write::write_all(&mut conn, b"\x00\x00\x00\x05hello").expect("write garbage");
    wait_link(&a, "disconnected");
    drop(conn);
    drop(listener);
    fs::remove_file(a.socket_host_path()).expect("remove fake socket");
    let log = wait_for(LINK_WAIT, || {
        let l = a.log();
        l.contains("handshake: malformed frame").then_some(l)
    });
    assert!(
        log.is_some(),
        "expected a logged handshake error:\n{}",
        a.log()
    );

    let _sidecar = Sidecar::start(&a.socket_host_path());
    wait_link(&a, "connected");
    assert!(a.cli("push ping").starts_with("Pong"));
}

#[test]
fn reload_switches_to_a_new_socket() {
    let a = Asterisk::start("reload-socket", Options::default());
    let _first = Sidecar::start(&a.socket_host_path());
    wait_link(&a, "connected");

    let second_host = a.host_dir.join("run/second.sock");
    let _second = Sidecar::start(&second_host);
    let conf = fs::read_to_string(a.etc("push.conf"))
        .unwrap()
        .replace("sidecar.sock", "second.sock");
    fs::write(a.etc("push.conf"), conf).unwrap();
    a.cli("module reload res_push");
    let switched = wait_for(LINK_WAIT, || {
        let s = a.cli("push show status");
        (status_field(&s, "Sidecar socket").is_some_and(|p| p.ends_with("second.sock"))
            && status_field(&s, "Sidecar link").as_deref() == Some("connected"))
        .then_some(())
    });
    assert!(switched.is_some(), "{}", a.cli("push show status"));
    assert!(a.cli("push ping").starts_with("Pong"));
}

#[test]
fn invalid_config_is_refused_and_asterisk_keeps_running() {
    let mut a = Asterisk::start(
        "bad-config",
        Options {
            load_res_push: false,
            push_conf: Some("[general]\nqueue_size = lots\n".into()),
            ..Options::default()
        },
    );
    let out = a.cli("module load res_push.so");
    assert!(!module_running(&a), "{out}");
    let log = a.log();
    assert!(
        log.contains("queue_size = 'lots': not a whole number"),
        "{log}"
    );
    assert!(a.is_running());

    // Reload with a broken file keeps the running configuration.
    fs::write(
        a.etc("push.conf"),
        format!("[general]\nsidecar_socket = {}/run/sidecar.sock\n", a.dir),
    )
    .unwrap();
    let out = a.cli("module load res_push.so");
    assert!(out.contains("Loaded res_push.so"), "{out}");
    fs::write(a.etc("push.conf"), "[general]\nreconnect_min_ms = -3\n").unwrap();
    a.cli("module reload res_push");
    let log = wait_for(LINK_WAIT, || {
        let l = a.log();
        l.contains("not reloaded, keeping the running configuration")
            .then_some(l)
    });
    assert!(log.is_some(), "{}", a.log());
    assert!(module_running(&a));
    let status = a.cli("push show status");
    assert!(
        status_field(&status, "Sidecar socket").is_some_and(|p| p.ends_with("run/sidecar.sock")),
        "{status}"
    );
}

/// Installs `bytes` as the test's res_push.so: a new file renamed into place, so that a library
/// Asterisk may still have mapped is never rewritten under it.
fn install_library(a: &Asterisk, bytes: &[u8]) {
    let dest = a.host_dir.join("modules/res_push.so");
    let tmp = a.host_dir.join("modules/.res_push.so.new");
    fs::write(&tmp, bytes).expect("write module");
    fs::rename(&tmp, &dest).expect("install module");
}

#[test]
fn a_module_built_for_another_asterisk_or_pjproject_declines_to_load() {
    let mut a = Asterisk::start(
        "identity",
        Options {
            load_res_push: false,
            ..Options::default()
        },
    );
    let lib = fs::read(module_path()).expect("read res_push.so");
    let at = identity::find(&lib).expect("exactly one identity record in res_push.so");
    let built = identity::decode(&lib[at..]).expect("a readable record");
    let version = a.cli("core show version");
    assert!(
        version.starts_with(&format!(
            "Asterisk {}",
            identity::asterisk_release(&built.asterisk).unwrap_or_default()
        )),
        "the module under test is built for {built}, the chroot runs {version}"
    );

    // The same library, its record altered as if built against another Asterisk, then another
    // pjproject: each is refused at load with one line naming both, and Asterisk runs on.
    let cases = [
        (
            Identity {
                asterisk: "21.0.0".into(),
                pjproject: built.pjproject.clone(),
            },
            "(Asterisk differs)",
        ),
        (
            Identity {
                asterisk: built.asterisk.clone(),
                pjproject: "2.10".into(),
            },
            "(pjproject differs)",
        ),
    ];
    for (altered, differs) in cases {
        let mut patched = lib.clone();
        patched[at..at + RECORD_LEN].copy_from_slice(&identity::encode(&altered).expect("encode"));
        install_library(&a, &patched);
        let out = a.cli("module load res_push.so");
        assert!(!module_running(&a), "{altered}: {out}");
        let wanted = format!("res_push not loaded: built for {altered} but running in Asterisk ");
        let line = wait_for(LINK_WAIT, || {
            a.log()
                .lines()
                .find(|l| l.contains(&wanted) && l.contains(differs))
                .map(str::to_string)
        });
        let line = line.unwrap_or_else(|| panic!("no refusal for {altered}:\n{}", a.log()));
        eprintln!("refused as expected: {line}");
        assert!(
            line.contains(&format!(", pjproject {}", built.pjproject))
                && line.contains("declining to load"),
            "{line}"
        );
        assert!(a.is_running());
        assert!(
            a.cli("core show version").starts_with("Asterisk 22"),
            "Asterisk must keep running"
        );
        assert!(a.cli("push show status").contains("No such command"));
    }

    // The genuine library then loads into the same Asterisk.
    install_library(&a, &lib);
    let out = a.cli("module load res_push.so");
    assert!(out.contains("Loaded res_push.so"), "{out}");
    assert!(module_running(&a));
    let status = a.cli("push show status");
    assert_eq!(
        status_field(&status, "Built for"),
        Some(built.to_string()),
        "{status}"
    );
}
