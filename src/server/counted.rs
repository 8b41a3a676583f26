//! What a connection wrote of answers' bodies, as admission counts it
//! (`admission::Traffic::written`): on HTTP/2 the payloads of the DATA frames it wrote, on
//! HTTP/1 every byte. Read above TLS, where the frames are.
//!
//! Pings, window updates, settings, heads and resets are frames too, and a client can make the
//! server write them at will: counted as progress, they paid off bodies handed to streams whose
//! window let a byte through (helper-34). A DATA frame's payload is an answer's body that left.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::admission::Traffic;

/// The connection preface an HTTP/2 client opens with (RFC 9113 §3.4), before any byte of
/// the server's; an HTTP/1 request cannot begin with it.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An HTTP/2 frame's head: a 24-bit payload length, a type, flags and a stream.
const FRAME_HEAD: usize = 9;
const DATA: u8 = 0;

/// Which protocol the stream speaks, as far as its first bytes read tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// This many bytes of the preface read so far (none yet: nothing written either).
    Opening(usize),
    Http1,
    Http2,
}

/// Counts the bytes of answers' bodies among what a connection writes.
#[derive(Debug)]
pub(super) struct BodyBytes {
    protocol: Protocol,
    /// The frame being written: its head's bytes so far, or what is left of its payload.
    head: [u8; FRAME_HEAD],
    have: usize,
    left: usize,
    data: bool,
}

impl Default for BodyBytes {
    fn default() -> BodyBytes {
        BodyBytes {
            protocol: Protocol::Opening(0),
            head: [0; FRAME_HEAD],
            have: 0,
            left: 0,
            data: false,
        }
    }
}

impl BodyBytes {
    /// The connection read `bytes` (its protocol is told by the first).
    pub(super) fn read(&mut self, bytes: &[u8]) {
        if let Protocol::Opening(seen) = self.protocol {
            let n = bytes.len().min(PREFACE.len() - seen);
            self.protocol = if bytes[..n] != PREFACE[seen..seen + n] {
                Protocol::Http1
            } else if seen + n == PREFACE.len() {
                Protocol::Http2
            } else {
                Protocol::Opening(seen + n)
            };
        }
    }

    /// The connection wrote `bytes`: how many of them are answers' bodies.
    pub(super) fn wrote(&mut self, mut bytes: &[u8]) -> u64 {
        if self.protocol != Protocol::Http2 {
            // (HTTP/1, or a write before any byte read, which neither protocol makes.)
            return bytes.len() as u64;
        }
        let mut body = 0;
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                if self.data {
                    body += n as u64;
                }
                self.left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEAD - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == FRAME_HEAD {
                let [a, b, c, kind, ..] = self.head;
                self.left = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                self.data = kind == DATA;
                self.have = 0;
            }
        }
        body
    }
}

/// A connection's stream (above TLS) that counts the answers' bodies it writes.
pub(super) struct Counted<S> {
    inner: S,
    bodies: BodyBytes,
    traffic: Arc<Traffic>,
}

impl<S> Counted<S> {
    pub(super) fn new(inner: S, traffic: Arc<Traffic>) -> Counted<S> {
        Counted {
            inner,
            bodies: BodyBytes::default(),
            traffic,
        }
    }

    fn wrote<'a>(&mut self, n: usize, bufs: impl IntoIterator<Item = &'a [u8]>) {
        let mut left = n;
        let mut body = 0;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let k = buf.len().min(left);
            body += self.bodies.wrote(&buf[..k]);
            left -= k;
        }
        if body > 0 {
            self.traffic.written(body);
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && let Protocol::Opening(_) = self.bodies.protocol
        {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                self.bodies.read(read);
            }
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.wrote(n, [buf]);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.wrote(n, bufs.iter().map(|b| &b[..]));
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn on_http2_only_data_frames_payloads_are_bodies_however_the_writes_split_them() {
        let mut written = Vec::new();
        written.extend(frame(4, &[0; 18])); // SETTINGS
        written.extend(frame(1, &[7; 40])); // HEADERS
        written.extend(frame(0, &[1; 70_000])); // DATA
        written.extend(frame(6, &[0; 8])); // a PING's answer
        written.extend(frame(0, &[])); // an empty DATA that ends a stream
        written.extend(frame(8, &[0; 4])); // WINDOW_UPDATE
        written.extend(frame(0, &[2; 5])); // DATA
        for split in [1, 2, 9, 10, 4096, written.len()] {
            let mut b = BodyBytes::default();
            b.read(&PREFACE[..3]);
            b.read(&PREFACE[3..]);
            let body: u64 = written.chunks(split).map(|c| b.wrote(c)).sum();
            assert_eq!(body, 70_005, "writes of {split}");
        }
    }

    #[test]
    fn on_http1_every_byte_written_counts_and_a_preface_must_be_whole() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        for first in [&b"GET / HTTP/1.1\r\n"[..], b"PRI * HTTP/1.1\r\n", b"P"] {
            let mut b = BodyBytes::default();
            b.read(first);
            if first == b"P" {
                b.read(b"UT /v2/ HTTP/1.1\r\n");
            }
            assert_eq!(b.protocol, Protocol::Http1);
            assert_eq!(b.wrote(answer), answer.len() as u64);
        }
    }
}
