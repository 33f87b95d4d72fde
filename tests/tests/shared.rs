//! Bindings shared by several Asterisk nodes through sorcery's realtime wizard and a real
//! PostgreSQL (Debian's, started by the harness): a REGISTER on one node, a call on the other;
//! unbinding seen everywhere; restarts; the database going away and coming back. And the move
//! of bindings stored by earlier versions (astdb) into the sorcery object type.

use std::time::Duration;

use res_push_itests::postgres::Postgres;
use res_push_itests::push_env::{Mocks, node};
use res_push_itests::{
    Asterisk, Options, Register, Sidecar, binding_count, free_udp_port, status_field, wait_for,
};

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const TOKEN2: &str = "33fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const WAIT: Duration = Duration::from_secs(20);
const SCHEMA: &str = include_str!("../../conf/push_bindings.sql");
const CALLER: &str = include_str!("../sipp/caller.xml");
const PHONE: &str = include_str!("../sipp/phone.xml");

fn pn(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={token}")
}

/// Asterisk options of a node using `pg` through res_config_pgsql and the realtime wizard,
/// with the configuration lines the operator guide gives.
fn pg_node(pg: &Postgres, name: &str) -> Options {
    Options {
        system_name: Some(name.to_string()),
        modules_append: "\nload = res_config_pgsql.so\nload = res_sorcery_realtime.so\n".into(),
        extra_conf: vec![
            (
                "sorcery.conf".into(),
                "[res_push]\npush_binding = realtime,push_bindings\n".into(),
            ),
            (
                "extconfig.conf".into(),
                "[settings]\npush_bindings => pgsql,general,push_bindings\n".into(),
            ),
            ("res_pgsql.conf".into(), pg.res_pgsql_conf()),
        ],
        ..Options::default()
    }
}

/// A node reaching `pg` through res_odbc and res_config_odbc instead (psqlODBC, a DSN of the
/// test's own through `ODBCINI`).
fn odbc_node(pg: &Postgres, name: &str) -> Options {
    Options {
        system_name: Some(name.to_string()),
        modules_append:
            "\nload = res_odbc.so\nload = res_odbc_transaction.so\nload = res_config_odbc.so\nload = res_sorcery_realtime.so\n"
                .into(),
        extra_conf: vec![
            (
                "sorcery.conf".into(),
                "[res_push]\npush_binding = realtime,push_bindings\n".into(),
            ),
            (
                "extconfig.conf".into(),
                "[settings]\npush_bindings => odbc,asterisk,push_bindings\n".into(),
            ),
            (
                "res_odbc.conf".into(),
                "[asterisk]\nenabled => yes\ndsn => res-push-test\nusername => asterisk\npassword =>\npre-connect => yes\nmax_connections => 4\n".into(),
            ),
            ("odbc.ini".into(), pg.odbc_ini("res-push-test")),
        ],
        env: vec![("ODBCINI".into(), "@DIR@/etc/odbc.ini".into())],
        ..Options::default()
    }
}

/// Rows of the table (the health row aside): `aor|token|reg_server|contact_uri`.
fn rows(pg: &Postgres) -> String {
    pg.query(
        "SELECT aor || '|' || token || '|' || reg_server || '|' || contact_uri FROM push_bindings WHERE id <> 'res-push-health' ORDER BY aor, token",
    )
}

fn rows_until(pg: &Postgres, what: &str, pred: impl Fn(&str) -> bool) -> String {
    wait_for(WAIT, || {
        let r = rows(pg);
        pred(&r).then_some(r)
    })
    .unwrap_or_else(|| panic!("table never showed {what}:\n{}", rows(pg)))
}

fn listing_until(a: &Asterisk, aor: &str, pred: impl Fn(&str) -> bool) -> String {
    wait_for(WAIT, || {
        let l = a.cli(&format!("push show bindings {aor}"));
        pred(&l).then_some(l)
    })
    .unwrap_or_else(|| {
        panic!(
            "bindings of {aor} never as expected:\n{}",
            a.cli(&format!("push show bindings {aor}"))
        )
    })
}

fn apns_count(mocks: &Mocks, token: &str) -> usize {
    mocks
        .apns
        .requests()
        .into_iter()
        .filter(|r| r.device_token.as_deref() == Some(token))
        .count()
}

struct Deployment {
    mocks: Mocks,
    pg: Postgres,
    a: Asterisk,
    b: Asterisk,
    _sidecars: (Sidecar, Sidecar),
}

fn deployment(name: &str) -> Deployment {
    let pg = Postgres::start(name, SCHEMA);
    let mocks = Mocks::start(name);
    let (a, sa) = node(&mocks, &format!("{name}-a"), "", pg_node(&pg, "node-a"));
    let (b, sb) = node(&mocks, &format!("{name}-b"), "", pg_node(&pg, "node-b"));
    for n in [&a, &b] {
        let s = n.cli("push show status");
        assert_eq!(
            status_field(&s, "Binding store").as_deref(),
            Some("push_binding via realtime (shared)"),
            "{s}\n{}",
            n.log()
        );
    }
    Deployment {
        mocks,
        pg,
        a,
        b,
        _sidecars: (sa, sb),
    }
}

/// A call to alice on `n` while her phone sleeps: the push must reach the mock APNs, then the
/// phone wakes, registers on `n` and answers.
fn call_wakes_phone(d: &Deployment, n: &Asterisk) {
    let before = apns_count(&d.mocks, TOKEN);
    let caller = n.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    let pushed = wait_for(WAIT, || {
        (apns_count(&d.mocks, TOKEN) > before).then_some(())
    });
    assert!(pushed.is_some(), "no call push\n{}", n.log());
    let phone_port = free_udp_port();
    let phone = n.sipp("phone", PHONE, phone_port, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let mut wake = Register::new("alice", &pn(TOKEN));
    wake.contact_port = Some(phone_port);
    assert!(n.register(&wake).ok);
    let phone = phone.wait();
    let caller = caller.wait();
    assert!(phone.ok, "phone:\n{}", phone.trace);
    assert!(caller.ok, "caller:\n{}\n{}", caller.trace, n.log());
}

#[test]
fn two_nodes_share_bindings_through_postgresql() {
    let mut d = deployment("shared");

    // A REGISTER on A: the binding reaches the table, named after A.
    assert!(d.a.register(&Register::new("alice", &pn(TOKEN))).ok);
    rows_until(&d.pg, "alice from node-a", |r| {
        r.contains(&format!("alice|{TOKEN}|node-a|"))
    });
    // B, which never saw that REGISTER, lists it (looked up in the table).
    listing_until(&d.b, "alice", |l| l.contains("…1de8f0"));

    // Both nodes restart: nothing is lost.
    d.a.restart();
    d.b.restart();
    for n in [&d.a, &d.b] {
        let l = listing_until(n, "alice", |l| binding_count(l) == 1);
        assert!(l.contains("…1de8f0"), "{l}");
    }

    // A call on B pushes the device A registered; the phone wakes and registers on B, which
    // now looks after the binding.
    call_wakes_phone(&d, &d.b);
    rows_until(&d.pg, "alice from node-b", |r| {
        r.contains(&format!("alice|{TOKEN}|node-b|"))
    });
    let detail = d.a.cli("push show binding alice");
    assert!(detail.contains("Registered on   : node-b"), "{detail}");

    // The phone unbinds on A: B sees it and no longer pushes it.
    let unbind = ";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid=null";
    assert!(d.a.register(&Register::new("alice", unbind)).ok);
    rows_until(&d.pg, "no alice", |r| !r.contains("alice|"));
    // No wait: B's last read of alice (its call above) is older than binding_cache (1 s).
    let before = apns_count(&d.mocks, TOKEN);
    let caller =
        d.b.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    let caller = caller.wait();
    assert!(!caller.ok, "the call must not be answered");
    let log = wait_for(WAIT, || {
        let l = d.b.log();
        l.contains("mobile DIALSTATUS=").then_some(l)
    })
    .unwrap_or_default();
    assert!(
        log.contains("no longer stored (removed on another node)"),
        "{log}"
    );
    assert_eq!(
        apns_count(&d.mocks, TOKEN),
        before,
        "B pushed an unbound device"
    );
    listing_until(&d.b, "alice", |l| binding_count(l) == 0);
}

#[test]
fn database_outage_is_survived_and_writes_reach_it_when_back() {
    let mut d = deployment("outage");
    assert!(d.a.register(&Register::new("alice", &pn(TOKEN))).ok);
    rows_until(&d.pg, "alice", |r| r.contains("alice|"));

    let mut alice2 = Register::new("alice", &pn(TOKEN2));
    assert!(d.a.register(&alice2).ok);
    rows_until(&d.pg, "alice's second device", |r| {
        r.contains(&format!("alice|{TOKEN2}|"))
    });

    d.pg.stop();
    // REGISTERs go on: a new device, refreshed (each REGISTER answered 200), and alice's
    // second device unregistering.
    let bob = Register::new("bob", &pn(TOKEN2));
    for _ in 0..3 {
        let x = d.a.register(&bob);
        assert!(x.ok, "{}", x.trace);
    }
    alice2.expires = 0;
    assert!(d.a.register(&alice2).ok);
    let status = wait_for(WAIT, || {
        let s = d.a.cli("push show status");
        status_field(&s, "Store state")
            .is_some_and(|v| v.starts_with("UNREACHABLE"))
            .then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "status never showed the outage:\n{}",
            d.a.cli("push show status")
        )
    });
    assert_ne!(
        status_field(&status, "Writes pending").as_deref(),
        Some("0"),
        "{status}"
    );
    // A call still pushes, from memory.
    let before = apns_count(&d.mocks, TOKEN);
    let caller =
        d.a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    let pushed = wait_for(WAIT, || {
        (apns_count(&d.mocks, TOKEN) > before).then_some(())
    });
    assert!(
        pushed.is_some(),
        "no call push during the outage\n{}",
        d.a.log()
    );
    drop(caller);
    // Logged once, however many writes failed.
    std::thread::sleep(Duration::from_secs(5));
    let log = d.a.log();
    assert_eq!(
        log.matches("push binding store (realtime) unreachable")
            .count(),
        1,
        "{log}"
    );

    d.pg.start_again();
    let r = rows_until(&d.pg, "bob, registered during the outage", |r| {
        r.contains("bob|")
    });
    assert!(r.contains(&format!("alice|{TOKEN}|")), "{r}");
    let r = rows_until(&d.pg, "alice's second device gone", |r| {
        !r.contains(&format!("alice|{TOKEN2}|"))
    });
    assert!(r.contains("bob|"), "{r}");
    let s = wait_for(WAIT, || {
        let s = d.a.cli("push show status");
        status_field(&s, "Store state")
            .is_some_and(|v| v.starts_with("reachable"))
            .then_some(s)
    })
    .expect("reachable again");
    assert_eq!(
        status_field(&s, "Writes pending").as_deref(),
        Some("0"),
        "{s}"
    );
    assert!(d.a.log().contains("reachable again"));
    // B sees what A wrote while the database was away.
    listing_until(&d.b, "bob", |l| binding_count(l) == 1);

    // A node that starts while the database is away starts with nothing stored, and loads
    // the table as soon as it answers.
    d.pg.stop();
    d.b.restart();
    let s = d.b.cli("push show status");
    assert_eq!(
        status_field(&s, "Bindings in memory").as_deref(),
        Some("0"),
        "{s}"
    );
    d.pg.start_again();
    let loaded = wait_for(WAIT, || {
        let s = d.b.cli("push show status");
        (status_field(&s, "Bindings in memory").as_deref() == Some("2")).then_some(())
    });
    assert!(
        loaded.is_some(),
        "{}\n{}",
        d.b.cli("push show status"),
        d.b.log()
    );
    listing_until(&d.b, "alice", |l| l.contains("…1de8f0"));

    // A node restarted while the database is away keeps the REGISTERs it could not store:
    // kept in astdb as soon as the store refuses them (Asterisk does not unload modules on
    // `core stop`), in memory again at load, in the table once it is back.
    d.pg.stop();
    let bob2 = Register::new("bob", &pn(TOKEN));
    assert!(d.a.register(&bob2).ok);
    wait_for(WAIT, || {
        d.a.cli("database show res_push/binding")
            .contains("/res_push/binding/")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not kept locally:\n{}", d.a.cli("push show status")));
    d.a.restart();
    // In memory again (the rest of the table comes when the database answers).
    listing_until(&d.a, "bob", |l| l.contains("…1de8f0"));
    d.pg.start_again();
    rows_until(
        &d.pg,
        "bob's second device, registered before a restart during the outage",
        |r| r.contains(&format!("bob|{TOKEN}|")),
    );
    listing_until(&d.a, "bob", |l| binding_count(l) == 2);
    let gone = wait_for(WAIT, || {
        (!d.a
            .cli("database show res_push/binding")
            .contains("/res_push/binding/"))
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "{}",
        d.a.cli("database show res_push/binding")
    );
}

#[test]
fn pgsql_and_odbc_nodes_share_one_table() {
    let pg = Postgres::start("odbc", SCHEMA);
    let mocks = Mocks::start("odbc");
    let (a, _sa) = node(&mocks, "odbc-a", "", pg_node(&pg, "node-a"));
    let (b, _sb) = node(&mocks, "odbc-b", "", odbc_node(&pg, "node-b"));
    let s = b.cli("push show status");
    assert_eq!(
        status_field(&s, "Binding store").as_deref(),
        Some("push_binding via realtime (shared)"),
        "{s}\n{}",
        b.log()
    );
    // Written through res_config_pgsql, read through res_config_odbc, and the other way.
    assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
    rows_until(&pg, "alice", |r| {
        r.contains(&format!("alice|{TOKEN}|node-a|"))
    });
    listing_until(&b, "alice", |l| l.contains("…1de8f0"));
    assert!(b.register(&Register::new("bob", &pn(TOKEN2))).ok);
    rows_until(&pg, "bob", |r| r.contains(&format!("bob|{TOKEN2}|node-b|")));
    listing_until(&a, "bob", |l| binding_count(l) == 1);
    // Removed through ODBC, forgotten by the pgsql node.
    assert!(
        b.cli("push delete binding alice")
            .contains("1 push binding(s)")
    );
    rows_until(&pg, "no alice", |r| !r.contains("alice|"));
    listing_until(&a, "alice", |l| binding_count(l) == 0);
    assert!(
        a.log()
            .contains("no longer stored (removed on another node)")
    );
    // A token the provider reports dead on the pgsql node is gone for the ODBC node too.
    mocks
        .apns
        .script(TOKEN2, vec![res_push_mocks::Behavior::Unregistered]);
    listing_until(&a, "bob", |l| binding_count(l) == 1);
    let out = a.cli("push send bob");
    assert!(
        out.contains("Unregistered") || out.contains("invalid"),
        "{out}"
    );
    rows_until(&pg, "no bob", |r| !r.contains("bob|"));
    listing_until(&b, "bob", |l| binding_count(l) == 0);
}

#[test]
fn bindings_of_earlier_versions_move_from_astdb_to_the_store() {
    // An Asterisk whose astdb holds a binding as earlier versions stored it.
    let a = Asterisk::start(
        "legacy",
        Options {
            load_res_push: false,
            ..Options::default()
        },
    );
    let json = format!(
        r#"{{"id":"1d20c67e36","aor":"alice","provider":"apns","app_id":"TEAM.com.example.voip","token":"{TOKEN}","environment":null,"form":"rfc8599","contact_uri":"sip:alice@127.0.0.1:5999","user_agent":"Phone/1.0","instance":null,"ua_pnsreg":false,"created":1,"last_register":{now},"expires_at":{now},"failures":0}}"#,
        now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let put = a.cli(&format!(
        "database put res_push binding/1d20c67e36 \"{}\"",
        json.replace('"', "\\\"")
    ));
    assert!(put.contains("Updated database successfully"), "{put}");
    let out = a.cli("module load res_push.so");
    assert!(out.contains("Loaded"), "{out}\n{}", a.log());
    let l = listing_until(&a, "alice", |l| binding_count(l) == 1);
    assert!(l.contains(&TOKEN[TOKEN.len() - 6..]), "{l}");
    let db = a.cli("database show res_push");
    assert!(db.contains("/res_push/push_binding/1d20c67e36"), "{db}");
    assert!(!db.contains("/res_push/binding/"), "{db}");
    let s = a.cli("push show status");
    assert_eq!(
        status_field(&s, "Binding store").as_deref(),
        Some("push_binding via astdb (this node only)"),
        "{s}"
    );
}

#[test]
fn a_bad_sorcery_mapping_declines_the_load_with_a_reason() {
    let mut a = Asterisk::start(
        "badwiz",
        Options {
            extra_conf: vec![(
                "sorcery.conf".into(),
                "[res_push]\npush_binding = nosuchwizard,x\n".into(),
            )],
            ..Options::default()
        },
    );
    let log = a.log();
    assert!(
        log.contains("res_push not loaded: cannot open the sorcery object type push_binding"),
        "{log}"
    );
    assert!(a.cli("push show status").contains("No such command"));
    assert!(a.is_running());
}
