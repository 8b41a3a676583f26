//! Real engines for the scale-out tests: a PostgreSQL cluster of the test's own (initdb into a
//! temporary directory, started on a free loopback port, stopped and started at will), and the
//! database every test server gets when the suite runs against PostgreSQL
//! (`BERTH_TEST_DATABASE_URL`, a cluster that `scripts/test.sh` started).
//!
//! `initdb` and `postgres` refuse to run as root: as root they run as the `postgres` user that
//! Debian's package creates (`runuser`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The directory of PostgreSQL's server programs (Debian keeps them out of `PATH`).
pub fn pg_bin(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    match versions.last() {
        Some(v) => v.join("bin").join(program),
        None => PathBuf::from(program),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs a PostgreSQL server program, as the `postgres` user when we are root.
fn pg_command(program: &str) -> Command {
    let bin = pg_bin(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL cluster of one test: its own directory, port and lifetime.
pub struct PgCluster {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    pub port: u16,
    running: bool,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let tmp = tempfile::Builder::new().prefix("berth-pg").tempdir().unwrap();
        let dir = tmp.path().join("data");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(tmp.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the cluster directory");
        }
        let out = pg_command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&dir)
            .output()
            .expect("initdb (apt-get install postgresql)");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut c = PgCluster {
            _tmp: tmp,
            dir,
            port: free_port(),
            running: false,
        };
        c.resume();
        c
    }

    /// The URL of database `db` for berth.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database; its URL.
    pub fn create_database(&self, name: &str) -> String {
        create_database(&self.url("postgres"), name)
    }

    /// Stops the server at once (`immediate`: no checkpoint, as a crash would).
    pub fn stop(&mut self) {
        let out = pg_command("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = false;
    }

    /// Starts the server again on the same port.
    pub fn resume(&mut self) {
        let log = self.dir.parent().unwrap().join("postgres.log");
        let out = pg_command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-l"])
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
                self.port,
                self.dir.parent().unwrap().display()
            ))
            .arg("-D")
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
        wait_for_port(self.port);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = pg_command("pg_ctl")
                .args(["stop", "-m", "immediate", "-D"])
                .arg(&self.dir)
                .output();
        }
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates database `name` through the admin URL `admin` (psql); the new database's URL.
pub fn create_database(admin: &str, name: &str) -> String {
    let out = Command::new("psql")
        .arg(admin)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "CREATE DATABASE {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

/// Runs SQL through psql against `url`; its output (unaligned, no headers).
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-At", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// When the suite runs against PostgreSQL (`BERTH_TEST_DATABASE_URL` names a cluster's admin
/// database), a fresh database for a server whose data directory is `data_dir`.
pub fn suite_database(data_dir: &Path) -> Option<String> {
    let admin = std::env::var("BERTH_TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())?;
    let mut seed = data_dir.as_os_str().as_encoded_bytes().to_vec();
    seed.extend(std::process::id().to_le_bytes());
    let name = format!("berth_{}", &super::sha256(&seed)["sha256:".len()..][..16]);
    Some(create_database(&admin, &name))
}
