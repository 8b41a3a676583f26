//! The one-time view of a new secret. A form that creates or rotates a secret answers with a
//! redirect (POST → 303 → GET), so reloading the page never mints again; the secret rides along
//! in a cookie sealed (AES-256-GCM) under a key derived from the session's own secret, so it is
//! readable only with that session, on whichever node the GET lands. The page that shows it
//! clears the cookie: a second look (a reload, the back button) finds nothing, and says so.
//!
//! The cookie is `HttpOnly`, `SameSite=Strict`, limited to `/ui/orgs`, `Secure` under TLS, and has
//! no `Max-Age`, so the browser keeps it in memory only.

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde_json::Value;
use sha2::Digest as _;

use super::session::{Session, cookie};

const COOKIE: &str = "berth_once";

fn key(s: &Session) -> Option<LessSafeKey> {
    let mut h = sha2::Sha256::new();
    h.update(b"berth console one-time view\0");
    h.update(s.refresh.as_bytes());
    UnboundKey::new(&AES_256_GCM, &h.finalize())
        .ok()
        .map(LessSafeKey::new)
}

fn attributes(s: &Session) -> &'static str {
    if s.state().web.tls {
        "; Path=/ui/orgs; HttpOnly; SameSite=Strict; Secure"
    } else {
        "; Path=/ui/orgs; HttpOnly; SameSite=Strict"
    }
}

/// `Set-Cookie` carrying `v`, sealed for this session.
pub(super) fn seal(s: &Session, v: &Value) -> Option<HeaderValue> {
    let key = key(s)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).ok()?;
    let mut data = serde_json::to_vec(v).ok()?;
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(COOKIE),
        &mut data,
    )
    .ok()?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&data);
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed);
    HeaderValue::from_str(&format!("{COOKIE}={text}{}", attributes(s))).ok()
}

/// What the cookie holds, if it was sealed for this session.
pub(super) fn open(s: &Session, headers: &HeaderMap) -> Option<Value> {
    let text = cookie(headers, COOKIE)?;
    let mut sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let data = sealed.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&sealed).ok()?;
    let mut data = data;
    let plain = key(s)?
        .open_in_place(nonce, Aad::from(COOKIE), &mut data)
        .ok()?;
    serde_json::from_slice(plain).ok()
}

/// `Set-Cookie` that removes it.
pub(super) fn clear(s: &Session) -> HeaderValue {
    HeaderValue::from_str(&format!("{COOKIE}={}; Max-Age=0", attributes(s)))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}
