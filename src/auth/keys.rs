//! Token signing keys: a CA that berth generates at first start, and ES256 signing keys whose
//! certificates it issues. Tokens carry the signer's certificate in `x5c`, so any verifier that
//! trusts the CA (CNCF Distribution's `rootcertbundle`) accepts them; `/.well-known/jwks.json`
//! publishes the public keys.
//!
//! Layout under `<data dir>/keys/`: `ca.key`, `ca.pem`, and per signing key
//! `signing-<created>-<kid>.key` / `.pem`. The newest signing key signs; every key present
//! verifies. `rotate` adds a key and removes keys superseded longer ago than the longest token
//! lifetime, so old tokens verify until they expire.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject as _;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("keys: {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("keys: {0}")]
    Crypto(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> KeyError {
    let context = context.into();
    move |source| KeyError::Io { context, source }
}

fn crypto(e: impl std::fmt::Display) -> KeyError {
    KeyError::Crypto(e.to_string())
}

/// One signing key, ready to sign or verify.
pub struct SigningKey {
    pub kid: String,
    pub created: i64,
    pub encoding: jsonwebtoken::EncodingKey,
    pub decoding: jsonwebtoken::DecodingKey,
    /// base64 (standard) DER of the signer certificate, for `x5c`.
    pub cert_b64: String,
    /// JWK coordinates (base64url).
    pub x: String,
    pub y: String,
}

/// The loaded key set; cheap to clone, reloadable in place.
#[derive(Clone)]
pub struct Keys {
    home: Home,
    inner: Arc<RwLock<Loaded>>,
}

/// Where the keys live.
#[derive(Clone)]
enum Home {
    /// `<data dir>/keys/`: the embedded default, one node.
    Dir(PathBuf),
    /// The metadata store, private keys sealed with the secret key: every node shares them.
    Store(crate::store::MetadataStore, Arc<Sealer>),
    /// Operator-provided (key, chain) files, used instead of the generated CA and keys.
    External(PathBuf, PathBuf),
}

struct Loaded {
    signing: Vec<Arc<SigningKey>>,
    ca_pem: String,
    /// The kids loaded, to skip re-parsing when nothing changed.
    kids: Vec<String>,
}

/// A stored key: `(created, kid, private key PEM, certificate PEM)`.
type Entry = (i64, String, String, String);

/// AES-256-GCM with a key derived (HKDF-SHA256) from the operator's secret: seals the private
/// keys kept in the metadata store, bound to their kid, so a database dump alone signs nothing.
pub struct Sealer {
    key: ring::aead::LessSafeKey,
}

impl Sealer {
    /// The secret must be at least 32 characters (e.g. `openssl rand -base64 32`).
    /// The sealer of a single node: its secret in `sealing.key` of the data directory (0600),
    /// made from the OS's random source the first time.
    pub fn in_dir(data_dir: &Path) -> Result<Sealer, KeyError> {
        let path = data_dir.join("sealing.key");
        match std::fs::read_to_string(&path) {
            Ok(s) => Sealer::new(&s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = [0u8; 32];
                rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut b)
                    .map_err(|e| KeyError::Crypto(format!("random: {e}")))?;
                let secret = hex::encode(b);
                let tmp = data_dir.join(format!("sealing.key.{}", uuid::Uuid::new_v4()));
                let write = || -> std::io::Result<()> {
                    use std::io::Write as _;
                    use std::os::unix::fs::OpenOptionsExt as _;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&tmp)?;
                    f.write_all(secret.as_bytes())?;
                    f.sync_all()?;
                    // Another process may have made one meanwhile: theirs stays.
                    std::fs::hard_link(&tmp, &path).or_else(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })?;
                    std::fs::remove_file(&tmp)?;
                    std::fs::File::open(data_dir)?.sync_all()
                };
                write().map_err(|e| KeyError::Crypto(format!("{}: {e}", path.display())))?;
                Sealer::new(
                    &std::fs::read_to_string(&path)
                        .map_err(|e| KeyError::Crypto(format!("{}: {e}", path.display())))?,
                )
            }
            Err(e) => Err(KeyError::Crypto(format!("{}: {e}", path.display()))),
        }
    }

    pub fn new(secret: &str) -> Result<Sealer, KeyError> {
        let secret = secret.trim();
        if secret.len() < 32 {
            return Err(KeyError::Crypto(
                "the secret key must be at least 32 characters (e.g. `openssl rand -base64 32`)"
                    .into(),
            ));
        }
        struct Len;
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"berth token keys v1");
        let mut bytes = [0u8; 32];
        salt.extract(secret.as_bytes())
            .expand(&[b"aes-256-gcm"], Len)
            .and_then(|okm| okm.fill(&mut bytes))
            .map_err(|_| KeyError::Crypto("deriving the sealing key".into()))?;
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &bytes)
            .map_err(|_| KeyError::Crypto("the sealing key".into()))?;
        Ok(Sealer {
            key: ring::aead::LessSafeKey::new(key),
        })
    }

    /// Seals `plain`, bound to `kid` (what it is: a key id, `sso-refresh:<family>`, …).
    pub fn seal(&self, kid: &str, plain: &str) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; 12];
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut nonce)
            .map_err(|e| KeyError::Crypto(format!("random: {e}")))?;
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(kid.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Crypto("sealing a key".into()))?;
        let mut out = nonce.to_vec();
        out.extend(buf);
        Ok(out)
    }

    /// Opens what `seal` made for the same `kid`.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<String, KeyError> {
        let wrong = || {
            KeyError::Crypto(format!(
                "cannot open key {kid}: wrong secret key (--secret-key-file / BERTH_SECRET_KEY) or damaged row"
            ))
        };
        if sealed.len() < 12 {
            return Err(wrong());
        }
        let (nonce, rest) = sealed.split_at(12);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, ring::aead::Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }
}

fn store_err(e: crate::store::Error) -> KeyError {
    KeyError::Crypto(format!("token keys in the metadata store: {e}"))
}

/// The CA's id in the key table.
const CA_KID: &str = "ca";

impl Home {
    /// The CA's (private key PEM, certificate PEM), if made.
    fn ca(&self) -> Result<Option<(String, String)>, KeyError> {
        match self {
            Home::Dir(dir) => {
                if !dir.join("ca.key").exists() {
                    return Ok(None);
                }
                let key =
                    std::fs::read_to_string(dir.join("ca.key")).map_err(io("reading ca.key"))?;
                let cert =
                    std::fs::read_to_string(dir.join("ca.pem")).map_err(io("reading ca.pem"))?;
                Ok(Some((key, cert)))
            }
            Home::Store(meta, sealer) => {
                let row = meta.read(|r| r.token_key(CA_KID)).map_err(store_err)?;
                row.map(|(_, cert, sealed)| Ok((sealer.open(CA_KID, &sealed)?, cert)))
                    .transpose()
            }
            Home::External(..) => Ok(None),
        }
    }

    /// Stores the CA unless one exists (nodes starting together: the first one wins).
    fn put_ca(&self, key_pem: &str, cert_pem: &str) -> Result<(), KeyError> {
        match self {
            Home::Dir(dir) => {
                write_private(&dir.join("ca.key"), key_pem)?;
                write_private(&dir.join("ca.pem"), cert_pem)
            }
            Home::Store(meta, sealer) => {
                let sealed = sealer.seal(CA_KID, key_pem)?;
                meta.write(|w| w.insert_token_key(CA_KID, "ca", now(), cert_pem, &sealed))
                    .map_err(store_err)
            }
            Home::External(..) => Ok(()),
        }
    }

    /// The signing keys, oldest first.
    fn signing(&self) -> Result<Vec<Entry>, KeyError> {
        match self {
            Home::Dir(dir) => {
                let mut out = Vec::new();
                for (created, kid, base) in signing_files(dir)? {
                    let key = std::fs::read_to_string(base.with_extension("key"))
                        .map_err(io(format!("reading {}", base.display())))?;
                    let cert = std::fs::read_to_string(base.with_extension("pem"))
                        .map_err(io(format!("reading {}", base.display())))?;
                    out.push((created, kid, key, cert));
                }
                Ok(out)
            }
            Home::Store(meta, sealer) => {
                let rows = meta.read(|r| r.signing_keys()).map_err(store_err)?;
                rows.into_iter()
                    .map(|(created, kid, cert, sealed)| {
                        Ok((created, kid.clone(), sealer.open(&kid, &sealed)?, cert))
                    })
                    .collect()
            }
            Home::External(..) => Ok(Vec::new()),
        }
    }

    /// `(created, kid)` of the signing keys, oldest first, without opening them.
    fn signing_ids(&self) -> Result<Vec<(i64, String)>, KeyError> {
        match self {
            Home::Dir(dir) => Ok(signing_files(dir)?
                .into_iter()
                .map(|(c, k, _)| (c, k))
                .collect()),
            Home::Store(meta, _) => Ok(meta
                .read(|r| r.signing_keys())
                .map_err(store_err)?
                .into_iter()
                .map(|(c, k, _, _)| (c, k))
                .collect()),
            Home::External(..) => Ok(Vec::new()),
        }
    }

    fn put_signing(
        &self,
        created: i64,
        kid: &str,
        key_pem: &str,
        cert_pem: &str,
    ) -> Result<(), KeyError> {
        match self {
            Home::Dir(dir) => {
                let base = dir.join(format!("signing-{created}-{kid}"));
                write_private(&base.with_extension("pem"), cert_pem)?;
                write_private(&base.with_extension("key"), key_pem)
            }
            Home::Store(meta, sealer) => {
                let sealed = sealer.seal(kid, key_pem)?;
                meta.write(|w| w.insert_token_key(kid, "signing", created, cert_pem, &sealed))
                    .map_err(store_err)
            }
            Home::External(..) => Ok(()),
        }
    }

    fn remove_signing(&self, created: i64, kid: &str) -> Result<(), KeyError> {
        match self {
            Home::Dir(dir) => {
                let base = dir.join(format!("signing-{created}-{kid}"));
                let _ = std::fs::remove_file(base.with_extension("key"));
                let _ = std::fs::remove_file(base.with_extension("pem"));
                Ok(())
            }
            Home::Store(meta, _) => meta
                .write(|w| w.delete_token_key(kid))
                .map(drop)
                .map_err(store_err),
            Home::External(..) => Ok(()),
        }
    }
}

/// `(created, kid, path without extension)` of each signing key file in `dir`, oldest first.
fn signing_files(dir: &Path) -> Result<Vec<(i64, String, PathBuf)>, KeyError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))? {
        let path = e.map_err(io("listing keys"))?.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".key"))
        else {
            continue;
        };
        let Some(rest) = stem.strip_prefix("signing-") else {
            continue;
        };
        let Some((created, kid)) = rest.split_once('-') else {
            continue;
        };
        let Ok(created) = created.parse() else {
            continue;
        };
        out.push((created, kid.to_owned(), dir.join(stem)));
    }
    out.sort();
    Ok(out)
}

fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    // A new file of its own, never one found there (a link planted to redirect the write, or
    // a leftover with looser permissions): what is there goes, and creation fails if it comes
    // back.
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(&tmp)
        .map_err(io(format!("writing {}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))
}

fn now() -> i64 {
    crate::store::now()
}

fn ca_params() -> Result<CertificateParams, KeyError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
    p.distinguished_name
        .push(DnType::CommonName, "berth token CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2099, 12, 31);
    Ok(p)
}

impl Keys {
    fn empty(home: Home) -> Keys {
        Keys {
            home,
            inner: Arc::new(RwLock::new(Loaded {
                signing: Vec::new(),
                ca_pem: String::new(),
                kids: Vec::new(),
            })),
        }
    }

    /// Loads the keys under `data_dir/keys`, creating the CA and a first signing key if absent.
    pub fn open(data_dir: &Path) -> Result<Keys, KeyError> {
        let dir = data_dir.join("keys");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Keys::init(Home::Dir(dir))
    }

    /// Loads the keys kept in the metadata store (shared by every node), their private keys
    /// sealed with `secret`; creates the CA and a first signing key if absent.
    pub fn in_store(meta: crate::store::MetadataStore, secret: &str) -> Result<Keys, KeyError> {
        Keys::init(Home::Store(meta, Arc::new(Sealer::new(secret)?)))
    }

    /// Copies the CA and signing keys of `data_dir/keys` into the metadata store, sealed with
    /// `secret` (`berth migrate`); keys already there stay. Returns how many signing keys the
    /// directory held.
    pub fn copy_into_store(
        data_dir: &Path,
        meta: &crate::store::MetadataStore,
        secret: &str,
    ) -> Result<usize, KeyError> {
        if !data_dir.join("keys").is_dir() {
            return Ok(0);
        }
        let from = Home::Dir(data_dir.join("keys"));
        let to = Home::Store(meta.clone(), Arc::new(Sealer::new(secret)?));
        if let Some((key, cert)) = from.ca()? {
            to.put_ca(&key, &cert)?;
        }
        let signing = from.signing()?;
        for (created, kid, key, cert) in &signing {
            to.put_signing(*created, kid, key, cert)?;
        }
        Ok(signing.len())
    }

    fn init(home: Home) -> Result<Keys, KeyError> {
        if home.ca()?.is_none() {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
            let cert = ca_params()?.self_signed(&key).map_err(crypto)?;
            home.put_ca(&key.serialize_pem(), &cert.pem())?;
        }
        let keys = Keys::empty(home);
        if keys.home.signing_ids()?.is_empty() {
            keys.add_signing_key()?;
        }
        keys.reload()?;
        Ok(keys)
    }

    /// Uses an operator-provided signing key and certificate chain (signer first, CA last). The
    /// files are re-read by `reload`, so replacing them rotates the key.
    pub fn external(key: &Path, chain: &Path) -> Result<Keys, KeyError> {
        let keys = Keys::empty(Home::External(key.to_owned(), chain.to_owned()));
        keys.reload()?;
        Ok(keys)
    }

    /// Generates a signing key and its certificate from the CA.
    fn add_signing_key(&self) -> Result<String, KeyError> {
        let Some((ca_key_pem, _)) = self.home.ca()? else {
            return Err(KeyError::Crypto("no token CA".into()));
        };
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(crypto)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(crypto)?;
        let kid = kid_of(key.public_key_raw());
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
        p.distinguished_name
            .push(DnType::CommonName, format!("berth token signer {kid}"));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let cert = p.signed_by(&key, &issuer).map_err(crypto)?;
        // Strictly increasing creation stamps keep "newest" well defined within one second.
        let created = self
            .home
            .signing_ids()?
            .last()
            .map_or(now(), |(c, _)| (*c + 1).max(now()));
        self.home
            .put_signing(created, &kid, &key.serialize_pem(), &cert.pem())?;
        Ok(kid)
    }

    /// Adds a new signing key and removes keys superseded more than `keep` ago. Returns the new kid.
    pub fn rotate(&self, keep: Duration) -> Result<String, KeyError> {
        let kid = self.add_signing_key()?;
        let ids = self.home.signing_ids()?;
        let keep = i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
        for pair in ids.windows(2) {
            let (old, next) = (&pair[0], &pair[1]);
            if next.0.saturating_add(keep) < now() {
                self.home.remove_signing(old.0, &old.1)?;
            }
        }
        self.reload()?;
        Ok(kid)
    }

    /// Re-reads the keys (a running server picks up `berth keys rotate` this way, every second).
    pub fn reload(&self) -> Result<(), KeyError> {
        if let Home::External(key, chain) = &self.home {
            let key_pem =
                std::fs::read_to_string(key).map_err(io(format!("reading {}", key.display())))?;
            let chain_pem = std::fs::read_to_string(chain)
                .map_err(io(format!("reading {}", chain.display())))?;
            let certs: Vec<_> =
                rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(crypto)?;
            let (Some(leaf), Some(root)) = (certs.first(), certs.last()) else {
                return Err(KeyError::Crypto(format!(
                    "{} holds no certificate",
                    chain.display()
                )));
            };
            let ca_pem = pem_of(root.as_ref());
            let signing = vec![Arc::new(signing_key(&key_pem, leaf.as_ref(), 0)?)];
            *self
                .inner
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Loaded {
                signing,
                ca_pem,
                kids: Vec::new(),
            };
            return Ok(());
        }
        let ids: Vec<String> = self
            .home
            .signing_ids()?
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        if ids
            == self
                .inner
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .kids
        {
            return Ok(());
        }
        let mut signing = Vec::new();
        for (created, kid, key_pem, cert_pem) in self.home.signing()? {
            let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .map_err(crypto)?;
            let mut key = signing_key(&key_pem, der.as_ref(), created)?;
            key.kid = kid;
            signing.push(Arc::new(key));
        }
        if signing.is_empty() {
            return Err(KeyError::Crypto("no signing key".into()));
        }
        let Some((_, ca_pem)) = self.home.ca()? else {
            return Err(KeyError::Crypto("no token CA".into()));
        };
        let kids = signing.iter().map(|k| k.kid.clone()).collect();
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Loaded {
            signing,
            ca_pem,
            kids,
        };
        Ok(())
    }

    /// The key that signs new tokens (the newest).
    pub fn current(&self) -> Option<Arc<SigningKey>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .signing
            .last()
            .cloned()
    }

    pub fn by_kid(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .signing
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
    }

    pub fn ca_pem(&self) -> String {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ca_pem
            .clone()
    }

    /// The public keys as a JWK set.
    pub fn jwks(&self) -> serde_json::Value {
        let loaded = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys: Vec<_> = loaded
            .signing
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                    "kid": k.kid, "x": k.x, "y": k.y, "x5c": [k.cert_b64],
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// A signing key from its PEM private key and its certificate (DER).
fn signing_key(key_pem: &str, cert_der: &[u8], created: i64) -> Result<SigningKey, KeyError> {
    let key = KeyPair::from_pem(key_pem).map_err(crypto)?;
    let raw = key.public_key_raw();
    if raw.len() != 65 {
        return Err(KeyError::Crypto(
            "the token signing key must be ECDSA P-256".into(),
        ));
    }
    let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (x, y) = (b64u(&raw[1..33]), b64u(&raw[33..65]));
    Ok(SigningKey {
        kid: kid_of(raw),
        created,
        encoding: jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der()),
        decoding: jsonwebtoken::DecodingKey::from_ec_components(&x, &y).map_err(crypto)?,
        cert_b64: base64::engine::general_purpose::STANDARD.encode(cert_der),
        x,
        y,
    })
}

fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The RFC 7638 JWK thumbprint of a P-256 public key (uncompressed point), base64url, cut to 22
/// characters (128 bits) to keep headers short.
fn kid_of(raw: &[u8]) -> String {
    use sha2::Digest as _;
    let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (x, y) = if raw.len() == 65 {
        (b64u(&raw[1..33]), b64u(&raw[33..65]))
    } else {
        (b64u(raw), String::new())
    };
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let mut kid = b64u(&sha2::Sha256::digest(canonical.as_bytes()));
    kid.truncate(22);
    kid
}
