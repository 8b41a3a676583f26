//! The runner's own HTTP/1.1 client and the `sendfile` server that measures the loopback bound.
//!
//! The load phases need a client far cheaper than the servers it measures (on two cores it shares
//! the CPU with them), so this one writes a request prepared once, parses only the status line
//! and the two headers it checks, and skips bodies without copying them anywhere. Anything it
//! does not understand (no `Content-Length`, a closed connection) is an error, never a number.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::{Res, fail};

/// A request prepared once and sent many times.
#[derive(Clone)]
pub(crate) struct Request {
    pub(crate) addr: SocketAddr,
    pub(crate) bytes: Vec<u8>,
    pub(crate) head: bool,
}

impl Request {
    /// `GET` (or `HEAD`) of `url` (`http://host:port/path`) with extra header lines.
    pub(crate) fn new(url: &str, head: bool, headers: &[(&str, &str)]) -> Res<Request> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http URL: {url}"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr: SocketAddr = host.parse()?;
        let mut bytes = format!(
            "{} {} HTTP/1.1\r\nhost: {host}\r\n",
            if head { "HEAD" } else { "GET" },
            if path.is_empty() { "/" } else { path }
        );
        for (k, v) in headers {
            bytes.push_str(&format!("{k}: {v}\r\n"));
        }
        bytes.push_str("\r\n");
        Ok(Request {
            addr,
            bytes: bytes.into_bytes(),
            head,
        })
    }
}

/// A response head: the status and `Content-Length`, and whether a wanted header line matched.
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) len: u64,
    pub(crate) matched: bool,
}

/// One keep-alive connection.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl Conn {
    pub(crate) async fn connect(addr: SocketAddr) -> Res<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            scratch: vec![0; 64 * 1024],
        })
    }

    /// Sends `req` and reads the response head. `want` is a header line (lower case, e.g.
    /// `docker-content-digest: sha256:…`) whose presence is reported in `Head::matched`.
    pub(crate) async fn send(&mut self, req: &Request, want: Option<&[u8]>) -> Res<Head> {
        self.stream.write_all(&req.bytes).await?;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = parse_head(&self.buf[..end + 2], want)?;
                self.buf.drain(..end + 4);
                return Ok(head);
            }
            if self.buf.len() > 64 * 1024 {
                return fail("response head larger than 64 KiB".into());
            }
            let n = self.stream.read(&mut self.scratch).await?;
            if n == 0 {
                return fail("connection closed before the response head".into());
            }
            self.buf.extend_from_slice(&self.scratch[..n]);
        }
    }

    /// Reads and drops a body of `len` bytes.
    pub(crate) async fn skip(&mut self, len: u64) -> Res<()> {
        let from_buf = (len as usize).min(self.buf.len());
        self.buf.drain(..from_buf);
        let mut left = len - from_buf as u64;
        while left > 0 {
            let want = (left as usize).min(self.scratch.len());
            let n = self.stream.read(&mut self.scratch[..want]).await?;
            if n == 0 {
                return fail(format!("connection closed with {left} body bytes missing"));
            }
            left -= n as u64;
        }
        Ok(())
    }

    /// Reads a body of `expected.len()` bytes, comparing it byte for byte with `expected` as it
    /// arrives (through one reused buffer, so the client stays cache-warm and cheap).
    pub(crate) async fn read_compare(&mut self, expected: &[u8]) -> Res<()> {
        let from_buf = expected.len().min(self.buf.len());
        if self.buf[..from_buf] != expected[..from_buf] {
            return fail("body differs from what was pushed".into());
        }
        self.buf.drain(..from_buf);
        let mut off = from_buf;
        let mut chunk = vec![0u8; 1024 * 1024];
        while off < expected.len() {
            let want = (expected.len() - off).min(chunk.len());
            let n = self.stream.read(&mut chunk[..want]).await?;
            if n == 0 {
                return fail(format!(
                    "connection closed with {} body bytes missing",
                    expected.len() - off
                ));
            }
            if chunk[..n] != expected[off..off + n] {
                return fail(format!("body differs from what was pushed at byte {off}"));
            }
            off += n;
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `line` after `prefix`, compared without regard to ASCII case (header names are
/// case-insensitive) and without allocating: this runs for every header of every response.
fn strip_prefix_ignore_case<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = line.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

fn parse_head(head: &[u8], want: Option<&[u8]>) -> Res<Head> {
    let status = head
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .ok_or("malformed status line")?;
    let mut len = None;
    let mut matched = want.is_none();
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(v) = strip_prefix_ignore_case(line, b"content-length:") {
            len = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if strip_prefix_ignore_case(line, b"transfer-encoding:").is_some() {
            return fail("chunked responses are not understood by the load generator".into());
        }
        if want.is_some_and(|w| line.eq_ignore_ascii_case(w)) {
            matched = true;
        }
    }
    Ok(Head {
        status,
        len: len.ok_or("response without Content-Length")?,
        matched,
    })
}

/// Fetches `req` on a fresh connection and checks the answer: `status`, the header line `want`,
/// a body identical to `expected`. Returns MB/s from sending the request to the last byte.
pub(crate) async fn fetch(req: &Request, want: Option<&[u8]>, expected: &[u8]) -> Res<f64> {
    let mut c = Conn::connect(req.addr).await?;
    let t = Instant::now();
    let head = c.send(req, want).await?;
    if head.status != 200 || head.len != expected.len() as u64 || !head.matched {
        return fail(format!(
            "fetch: status {} with {} bytes, expected header {} (want 200 with {})",
            head.status,
            head.len,
            if head.matched { "present" } else { "missing" },
            expected.len()
        ));
    }
    c.read_compare(expected).await?;
    Ok(expected.len() as f64 / 1e6 / t.elapsed().as_secs_f64())
}

/// Serves `path` with `sendfile(2)` to each of `times` connections (one request each): the
/// loopback bound for pulls. Runs on its own thread; the kernel copies page cache to socket.
pub(crate) fn sendfile_server(
    path: PathBuf,
    times: usize,
) -> Res<(SocketAddr, std::thread::JoinHandle<Res<()>>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let handle = std::thread::spawn(move || -> Res<()> {
        for _ in 0..times {
            let (mut sock, _) = listener.accept()?;
            let mut head = Vec::new();
            let mut b = [0u8; 4096];
            while find(&head, b"\r\n\r\n").is_none() {
                let n = sock.read(&mut b)?;
                if n == 0 {
                    return fail("client closed before its request".into());
                }
                head.extend_from_slice(&b[..n]);
            }
            let file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            sock.write_all(
                format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\ncontent-type: application/octet-stream\r\n\r\n")
                    .as_bytes(),
            )?;
            let mut offset = 0u64;
            while offset < len {
                let count = usize::try_from(len - offset)?;
                let n = rustix::fs::sendfile(&sock, &file, Some(&mut offset), count)?;
                if n == 0 {
                    return fail("sendfile wrote nothing".into());
                }
            }
        }
        Ok(())
    });
    Ok((addr, handle))
}

/// Latencies and counts of one load phase.
pub(crate) struct Load {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) client_cpu: f64,
}

/// `conns` connections each sending `req` back to back for `dur`. Every answer must have
/// `status` and, if given, the header line `want`; anything else aborts the run.
pub(crate) async fn load(
    req: Request,
    want: Option<Vec<u8>>,
    conns: usize,
    dur: Duration,
    status: u16,
) -> Res<Load> {
    let cpu0 = crate::cpu_secs(std::process::id());
    let start = Instant::now();
    let stop = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (req, want) = (req.clone(), want.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(req.addr).await?;
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            loop {
                let t = Instant::now();
                if t >= stop {
                    return Ok::<_, crate::Error>(lat);
                }
                let head = c.send(&req, want.as_deref()).await?;
                if head.status != status || !head.matched {
                    return fail(format!(
                        "load: status {} (want {status}), expected header {}",
                        head.status,
                        if head.matched { "present" } else { "missing" }
                    ));
                }
                if !req.head {
                    c.skip(head.len).await?;
                }
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    Ok(Load {
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        client_cpu: crate::cpu_secs(std::process::id()) - cpu0,
    })
}
