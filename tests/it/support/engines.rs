//! Real engines for the scale-out tests and the benchmarks (`bench/runner.rs` includes this
//! file): a PostgreSQL cluster of the caller's own (initdb into a temporary directory, started
//! on a free loopback port, stopped and started at will) and a single-node Garage with a bucket.
//!
//! `initdb` and `postgres` refuse to run as root: as root they run as the `postgres` user that
//! Debian's package creates (`runuser`).

use std::path::PathBuf;
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

pub fn free_port() -> u16 {
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
        let tmp = tempfile::Builder::new()
            .prefix("berth-pg")
            .tempdir()
            .unwrap();
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
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
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
    assert!(listens(port), "nothing listens on {port}");
}

/// Whether something listens on `port` within 30 s.
fn listens(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
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

/// The access key every test Garage knows (imported with `garage key import`).
pub const GARAGE_KEY_ID: &str = "GK0123456789abcdef01234567";
pub const GARAGE_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A single-node Garage of one test (replication factor 1, on loopback), with bucket `berth`.
pub struct Garage {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    rpc_port: u16,
    pub s3_port: u16,
    child: Option<std::process::Child>,
}

impl Garage {
    /// Starts one, again on fresh ports if it does not answer (a port found free may be taken
    /// before Garage binds it, e.g. as the local port of another test's connection: its RPC
    /// then never answers).
    pub fn start() -> Garage {
        for attempt in 1..=3 {
            let mut g = Garage::configured();
            if let Err(e) = g.try_resume().and_then(|()| g.try_cli(&["status"], 15)) {
                eprintln!("garage, attempt {attempt}: {e}\n{}", g.log());
                g.stop();
                continue;
            }
            g.set_up();
            return g;
        }
        panic!("garage did not start in 3 attempts (its logs above)");
    }

    fn configured() -> Garage {
        let tmp = tempfile::Builder::new()
            .prefix("berth-garage")
            .tempdir()
            .unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = tmp.path().join("garage.toml");
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{dir}/meta\"\ndata_dir = \"{dir}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                dir = tmp.path().display()
            ),
        )
        .unwrap();
        Garage {
            _tmp: tmp,
            config,
            rpc_port: rpc,
            s3_port: s3,
            child: None,
        }
    }

    /// Its layout (one node), the tests' key and bucket `berth`.
    fn set_up(&self) {
        let status = self.cli(&["status"]);
        let node = status
            .lines()
            .find(|l| l.contains(&format!("127.0.0.1:{}", self.rpc_port)))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_owned();
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        self.cli(&["layout", "apply", "--version", "1"]);
        self.cli(&[
            "key",
            "import",
            "--yes",
            GARAGE_KEY_ID,
            GARAGE_SECRET,
            "-n",
            "berth",
        ]);
        self.cli(&["bucket", "create", "berth"]);
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", "berth", "--key", "berth",
        ]);
    }

    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args, 30)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    /// Runs `garage args` until it succeeds, for up to `secs` seconds.
    fn try_cli(&self, args: &[&str], secs: u64) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = Command::new("garage")
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()
                .expect("garage (cargo install garage --locked)");
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "garage {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of its log.
    fn log(&self) -> String {
        let log =
            std::fs::read_to_string(self.config.with_file_name("garage.log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The environment of a berth node storing blobs under `prefix` of the bucket.
    pub fn env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            ("BERTH_STORAGE".into(), format!("s3://berth/{prefix}")),
            ("BERTH_S3_ENDPOINT".into(), self.endpoint()),
            ("BERTH_S3_REGION".into(), "garage".into()),
            ("BERTH_S3_PATH_STYLE".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), GARAGE_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), GARAGE_SECRET.into()),
        ]
    }

    /// Kills the server at once, as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again), on the same ports and data.
    pub fn resume(&mut self) {
        self.try_resume()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    fn try_resume(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.config.with_file_name("garage.log")).unwrap();
        self.child = Some(
            Command::new("garage")
                .arg("-c")
                .arg(&self.config)
                .arg("server")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("garage (cargo install garage --locked)"),
        );
        match listens(self.s3_port) {
            true => Ok(()),
            false => Err(format!("nothing listens on {}", self.s3_port)),
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
