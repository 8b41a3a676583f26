//! A TCP proxy of the tests' own, on loopback, between berth and an engine (PostgreSQL, Garage),
//! that can pass traffic, stall it (bytes are held, connections stay open), cut every connection
//! (at once, mid-request), or, for an HTTP engine, answer every new request itself with an
//! error status (S3's `500 InternalError` or `503 SlowDown`) and close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Nothing is forwarded either way; connections stay open.
    Stall,
    /// Every open connection is closed now, and each new one at once.
    Cut,
    /// Each new connection's request is answered with this HTTP status and an S3 error body.
    Http(u16),
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    /// Connections open to the engine right now.
    open: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    /// A proxy in front of `upstream`, passing traffic, on a runtime and thread of its own.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let (fault, watch) = watch::channel(Fault::Pass);
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            return;
                        };
                        tokio::spawn(serve(client, upstream, watch.clone(), counter.clone()));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
            runtime.shutdown_background();
        });
        FaultProxy {
            addr: rx.recv().unwrap(),
            fault,
            open,
            stop: Some(stop),
        }
    }

    pub fn set(&self, f: Fault) {
        self.fault.send_replace(f);
    }

    /// Connections open from the proxy to the engine.
    pub fn open_upstream(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.set(Fault::Cut);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
    open: Arc<AtomicUsize>,
) {
    let now = *fault.borrow_and_update();
    match now {
        Fault::Cut => return,
        Fault::Http(status) => {
            // Read the request head (whatever fits), answer, close.
            let mut buf = vec![0u8; 16 * 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.read(&mut buf))
                .await;
            let (reason, code) = if status == 503 {
                ("Service Unavailable", "SlowDown")
            } else {
                ("Internal Server Error", "InternalError")
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>fault proxy</Message></Error>"
            );
            let resp = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(resp.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
        Fault::Pass | Fault::Stall => {}
    }
    let Ok(mut engine) = TcpStream::connect(upstream).await else {
        return;
    };
    open.fetch_add(1, Ordering::SeqCst);
    let (mut cr, mut cw) = client.split();
    let (mut er, mut ew) = engine.split();
    let mut a = vec![0u8; 64 * 1024];
    let mut b = vec![0u8; 64 * 1024];
    let mut cut = false;
    loop {
        let current = *fault.borrow_and_update();
        match current {
            Fault::Cut | Fault::Http(_) => {
                cut = true;
                break;
            }
            Fault::Stall => {
                // Hold everything until the fault changes.
                if fault.changed().await.is_err() {
                    break;
                }
                continue;
            }
            Fault::Pass => {}
        }
        tokio::select! {
            changed = fault.changed() => if changed.is_err() { break },
            n = cr.read(&mut a) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => if ew.write_all(&a[..n]).await.is_err() { break },
            },
            n = er.read(&mut b) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => if cw.write_all(&b[..n]).await.is_err() { break },
            },
        }
    }
    // A cut closes both sides with a reset, as a dropped network path does.
    // (A zero linger resets at once; it never blocks, which is what the deprecation warns of.)
    #[allow(deprecated)]
    if cut {
        let _ = client.set_linger(Some(std::time::Duration::ZERO));
        let _ = engine.set_linger(Some(std::time::Duration::ZERO));
    }
    drop(client);
    drop(engine);
    open.fetch_sub(1, Ordering::SeqCst);
}
