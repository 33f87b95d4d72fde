//! A PostgreSQL server of the test's own: Debian's `postgresql` in the sid chroot (where the
//! Asterisk under test runs), a fresh cluster (`initdb`) in a temporary directory, run as the
//! unprivileged `postgres` user on a free TCP port of 127.0.0.1, in a mount namespace that dies
//! with it. `Drop` stops it and removes the cluster.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{chroot, free_tcp_port, wait_for};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The database and role the tests use (trust authentication on loopback).
pub const DATABASE: &str = "asterisk";

/// A running (or stopped) server.
#[derive(Debug)]
pub struct Postgres {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The cluster's directory inside the chroot.
    pub dir: String,
    root: PathBuf,
    bin: String,
    child: Option<Child>,
}

fn postgres_bin(root: &std::path::Path) -> String {
    let base = root.join("usr/lib/postgresql");
    let mut versions: Vec<String> = fs::read_dir(&base)
        .unwrap_or_else(|e| {
            panic!(
                "no PostgreSQL in {} ({e}): run asterisk-headers/prepare.sh",
                base.display()
            )
        })
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|v| {
            root.join(format!("usr/lib/postgresql/{v}/bin/postgres"))
                .exists()
        })
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    let v = versions.pop().expect("a PostgreSQL server in the chroot");
    format!("/usr/lib/postgresql/{v}/bin")
}

impl Postgres {
    /// Creates a cluster with database and superuser `asterisk`, starts it and runs `schema`.
    pub fn start(name: &str, schema: &str) -> Postgres {
        let root = chroot();
        let bin = postgres_bin(&root);
        let dir = format!(
            "/tmp/res-push-tests/pg-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let host = root.join(dir.trim_start_matches('/'));
        let _ = fs::remove_dir_all(&host);
        fs::create_dir_all(host.join("data")).expect("cluster dir");
        let run = |args: &[&str]| {
            Command::new("chroot")
                .arg(&root)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("run in chroot")
        };
        let out = run(&["chown", "-R", "postgres:postgres", &dir]);
        assert!(out.status.success(), "chown: {:?}", out);
        let out = Command::new("chroot")
            .args(["--userspec=postgres:postgres"])
            .arg(&root)
            .args([
                &format!("{bin}/initdb"),
                "-D",
                &format!("{dir}/data"),
                "-U",
                DATABASE,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            port: free_tcp_port(),
            dir,
            root,
            bin,
            child: None,
        };
        pg.boot();
        let out = pg.psql_in("postgres", &format!("CREATE DATABASE {DATABASE}"));
        assert!(out.is_some(), "CREATE DATABASE failed\n{}", pg.log());
        let file = format!("{}/schema.sql", pg.dir);
        fs::write(pg.root.join(file.trim_start_matches('/')), schema).expect("schema file");
        let out = Command::new("chroot")
            .args(["--userspec=postgres:postgres"])
            .arg(&pg.root)
            .args([
                &format!("{}/psql", pg.client_bin()),
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                DATABASE,
                "-d",
                DATABASE,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-f",
                &file,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("psql -f");
        assert!(
            out.status.success(),
            "schema failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    fn client_bin(&self) -> String {
        // psql lives beside the server in Debian's versioned directory.
        self.bin.clone()
    }

    fn boot(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.root
                    .join(self.dir.trim_start_matches('/'))
                    .join("server.log"),
            )
            .expect("server log");
        let script = format!(
            "mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && exec chroot --userspec=postgres:postgres {r} {bin}/postgres -D {d}/data -p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            r = self.root.display(),
            bin = self.bin,
            d = self.dir,
            port = self.port,
        );
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(60), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited during startup ({status})\n{}", self.log());
            }
            self.psql_in("postgres", "SELECT 1")
                .filter(|o| o.trim() == "1")
        });
        assert!(up.is_some(), "postgres did not start\n{}", self.log());
    }

    /// Runs one SQL command in `db`; its rows as psql prints them unaligned (`|` between
    /// columns), or `None` when it failed (server down...).
    fn psql_in(&self, db: &str, sql: &str) -> Option<String> {
        let out = Command::new("timeout")
            .arg("20")
            .arg("chroot")
            .arg("--userspec=postgres:postgres")
            .arg(&self.root)
            .args([
                &format!("{}/psql", self.client_bin()),
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                DATABASE,
                "-d",
                db,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs one SQL command in the test database; panics (with the server log) if it fails.
    pub fn query(&self, sql: &str) -> String {
        self.psql_in(DATABASE, sql)
            .unwrap_or_else(|| panic!("query failed: {sql}\n{}", self.log()))
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(
            self.root
                .join(self.dir.trim_start_matches('/'))
                .join("server.log"),
        )
        .unwrap_or_default()
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The child is `unshare`, exec'd into sh, chroot and postgres: same PID.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        let gone = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
        if gone.is_none() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts it again on the same cluster and port.
    pub fn start_again(&mut self) {
        self.boot();
    }

    /// A unixODBC DSN named `dsn` for this server (psqlODBC), as an `odbc.ini` text.
    pub fn odbc_ini(&self, dsn: &str) -> String {
        format!(
            "[{dsn}]\nDriver = PostgreSQL Unicode\nServername = 127.0.0.1\nPort = {}\nDatabase = {DATABASE}\nUsername = {DATABASE}\nPassword =\n",
            self.port
        )
    }

    /// res_pgsql.conf for an Asterisk using this server.
    pub fn res_pgsql_conf(&self) -> String {
        format!(
            "[general]\ndbhost = 127.0.0.1\ndbport = {}\ndbname = {DATABASE}\ndbuser = {DATABASE}\ndbpass =\nrequirements = warn\n",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "===== PostgreSQL log =====\n{}\n===== end =====",
                self.log()
            );
        }
        let _ = fs::remove_dir_all(self.root.join(self.dir.trim_start_matches('/')));
    }
}
