//! Write scaling: blob pushes and tagged manifest PUTs with 1, 2 and 4 berth nodes on one
//! PostgreSQL reached through a delay proxy of the bench's own (every byte toward the database
//! waits `DELAY`, every byte back waits `DELAY`: a round trip costs 2 × `DELAY` more, as a
//! database on another machine would), and one Garage bucket. Each node has `CLIENTS_PER_NODE`
//! clients of its own, each pushing into a repository of its own (pipelines of different
//! images), so a curve that stays flat as nodes are added shows a lock shared by the cluster.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Res, Server, berth_token, engines, push_whole, random, sha, start_berth_with};

/// Added to each direction of every connection to PostgreSQL.
pub(crate) const DELAY: Duration = Duration::from_micros(500);
const CLIENTS_PER_NODE: usize = 8;
const SECONDS: u64 = 5;

/// A TCP proxy on loopback that delays every chunk by `delay` in each direction, keeping order
/// and not limiting throughput (a chunk waits only for its own deadline). Threads per
/// connection: the proxied connections are a handful of pooled database connections.
pub(crate) struct DelayProxy {
    pub(crate) port: u16,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    pub(crate) fn start(upstream: u16, delay: Duration) -> Res<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                for (from, to) in [(&down, &up), (&up, &down)] {
                    if let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) {
                        pipe(from, to, delay);
                    }
                }
            }
        });
        Ok(DelayProxy { port, stop })
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to`, each chunk sent `delay` after it arrived.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0
                || tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok((due, bytes)) = rx.recv() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// One point of the curve.
pub(crate) struct Point {
    pub(crate) nodes: usize,
    pub(crate) blobs_s: f64,
    pub(crate) manifests_s: f64,
}

/// Runs the curve, each point on a database of its own.
pub(crate) async fn curve(
    pg: &engines::PgCluster,
    garage: &engines::Garage,
    tmp: &Path,
) -> Res<Vec<Point>> {
    let proxy = DelayProxy::start(pg.port, DELAY)?;
    let mut points = Vec::new();
    for nodes in [1usize, 2, 4] {
        let db = pg.create_database(&format!("writes{nodes}"));
        let url = db.replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port));
        let mut env = vec![
            ("BERTH_DATABASE_URL".to_owned(), url),
            (
                "BERTH_SECRET_KEY".to_owned(),
                "bench-secret-key-that-seals-the-signing-keys".to_owned(),
            ),
        ];
        env.extend(garage.env(&format!("writes{nodes}")));
        let mut servers = Vec::new();
        for n in 0..nodes {
            servers.push(start_berth_with(&tmp.join(format!("writes{nodes}-{n}")), &env).await?);
        }
        let repos: Vec<String> = (0..nodes * CLIENTS_PER_NODE)
            .map(|i| format!("bench/w{i}"))
            .collect();
        let names: Vec<&str> = repos.iter().map(String::as_str).collect();
        let auth = berth_token(&servers[0], &names).await?;
        let c = reqwest::Client::new();
        // Each repository's config blob, for its manifests.
        let mut configs = Vec::new();
        for (i, repo) in repos.iter().enumerate() {
            let cfg = format!("{{\"writes\":{i}}}").into_bytes();
            let d = sha(&cfg);
            push_whole(&servers[0].base, Some(&auth), &c, repo, cfg.clone(), &d).await?;
            configs.push((d, cfg.len()));
        }
        let blobs = run(&servers, &repos, &auth, &configs, false).await?;
        let manifests = run(&servers, &repos, &auth, &configs, true).await?;
        eprintln!(
            "writes, {nodes} node(s): {blobs:.0} blob pushes/s, {manifests:.0} manifest PUTs/s"
        );
        points.push(Point {
            nodes,
            blobs_s: blobs,
            manifests_s: manifests,
        });
    }
    Ok(points)
}

/// `CLIENTS_PER_NODE` clients per node for `SECONDS`: 1 KiB blob pushes (POST + PUT), or tagged
/// manifest PUTs; completed operations per second.
async fn run(
    servers: &[Server],
    repos: &[String],
    auth: &str,
    configs: &[(String, usize)],
    manifests: bool,
) -> Res<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for (i, repo) in repos.iter().enumerate() {
        let base = servers[i % servers.len()].base.clone();
        let (repo, auth, done) = (repo.clone(), auth.to_owned(), done.clone());
        let (cd, clen) = configs[i].clone();
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut k = 0u64;
            while Instant::now() < until {
                k += 1;
                if manifests {
                    let m = json!({
                        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": clen},
                        "layers": [], "annotations": {"k": format!("{i}-{k}")}
                    })
                    .to_string();
                    let d = sha(m.as_bytes());
                    let r = c
                        .put(format!("{base}/v2/{repo}/manifests/t{k}"))
                        .header("authorization", &auth)
                        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                        .body(m)
                        .send()
                        .await?;
                    super::expect(&r, 201, "manifest put")?;
                    super::expect_digest(&r, &d, "manifest put")?;
                } else {
                    let data = random(1024, (i as u64) << 32 | k);
                    let d = sha(&data);
                    push_whole(&base, Some(&auth), &c, &repo, data, &d).await?;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), super::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
