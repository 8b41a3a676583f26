//! Configuration: `ServeArgs` and the TOML file (`raw.rs`) resolve into one validated `Config`.
//!
//! Precedence, resolved in `Config::load`: flags > `BERTH_*` environment variables > the TOML
//! file > defaults. `docs/config.md` is generated from the flag definitions by
//! `reference_markdown` and checked by a test.

pub mod env;
mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::{FileConfig, ServeArgs};

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub upload_ttl: Duration,
    pub gc_interval: Option<Duration>,
    pub gc_grace: Duration,
    pub gc_untagged: bool,
    pub public_url: Option<String>,
    pub token_service: String,
    pub token_issuer: String,
    pub token_ttl: Duration,
    pub registry_token_ttl: Duration,
    /// How recent a session's sign-in must be to create a credential that never expires.
    pub fresh_sign_in: Duration,
    pub workload_token_max_lifetime: Duration,
    /// Whether trusts may name issuers on loopback, private or link-local addresses.
    pub allow_private_issuers: bool,
    /// Operator-provided signing key and chain; `None`: berth's own CA in the data directory.
    pub token_signer: Option<TlsFiles>,
    pub max_connections: usize,
    /// Memory for upload bytes in flight, shared by the node's uploads (`content::UploadMemory`).
    pub upload_memory: u64,
    /// Memory for answers' blob bytes not yet written, shared by the node's pulls.
    pub download_memory: u64,
    /// Connections served at once from one client address (`server::Admission`); `None`: a
    /// quarter of the connections the node serves (`max_connections` as the server lowers it).
    pub max_connections_per_address: Option<usize>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// PostgreSQL for the metadata; `None`: SQLite in `data_dir`.
    pub database: Option<crate::store::PgOptions>,
    /// The secret that seals the signing keys kept in the database (`BERTH_SECRET_KEY` or the
    /// file of `--secret-key-file`).
    pub secret_key: Option<String>,
    /// An S3 bucket for the blobs; `None`: files in `data_dir`.
    pub storage: Option<crate::blob::S3Options>,
    pub log: String,
    /// Who may sign in with a local password.
    pub local_login: crate::auth::oidc::LocalLogin,
    /// The OpenID providers people sign in with.
    pub oidc: Vec<crate::auth::oidc::ProviderConfig>,
    /// How often a single sign-on session's groups are read again (at most 15m).
    pub sso_refresh_interval: Duration,
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Resolves flags (and their environment variables) over the file over the defaults.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::resolve(args.over(file))
    }

    fn resolve(raw: FileConfig) -> Result<Config, ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid { key, message };
        let oidc = providers(&raw)?;
        let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:5000");
        let listen = listen.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen:?} is not an address like 127.0.0.1:5000"),
            )
        })?;
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "tls_cert",
                    "tls_cert and tls_key must be given together".into(),
                ));
            }
        };
        let duration = |key: &'static str, v: Option<String>, default: &str| {
            parse_duration(v.as_deref().unwrap_or(default)).map_err(|m| invalid(key, m))
        };
        let gc_interval = match raw.gc_interval.as_deref() {
            None | Some("off") => None,
            Some(v) => Some(parse_duration(v).map_err(|m| invalid("gc_interval", m))?)
                .filter(|d| !d.is_zero()),
        };
        if !oidc.is_empty() && raw.public_url.is_none() {
            return Err(invalid(
                "public_url",
                "single sign-on needs --public-url: the address the provider sends people back to is fixed by the configuration, never taken from a request".into(),
            ));
        }
        let sso_refresh_interval = duration(
            "sso_refresh_interval",
            raw.sso_refresh_interval.clone(),
            "5m",
        )?;
        if sso_refresh_interval.is_zero() || sso_refresh_interval > crate::auth::oidc::GROUPS_BOUND
        {
            return Err(invalid(
                "sso_refresh_interval",
                "must be more than 0s and at most 15m".into(),
            ));
        }
        Ok(Config {
            local_login: match raw.local_login.as_deref() {
                None => crate::auth::oidc::LocalLogin::All,
                Some(v) => v.parse().map_err(|m| invalid("local_login", m))?,
            },
            oidc,
            sso_refresh_interval,
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./berth-data")),
            listen,
            tls,
            upload_ttl: duration("upload_ttl", raw.upload_ttl, "24h")?,
            gc_interval,
            gc_grace: duration("gc_grace", raw.gc_grace, "1h")?,
            gc_untagged: raw.gc_untagged.unwrap_or(false),
            public_url: match raw.public_url {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    Some(u.trim_end_matches('/').to_owned())
                }
                Some(u) => {
                    return Err(invalid(
                        "public_url",
                        format!("{u:?} must start with http:// or https://"),
                    ));
                }
                None => None,
            },
            token_service: raw.token_service.unwrap_or_else(|| "berth".to_owned()),
            token_issuer: raw.token_issuer.unwrap_or_else(|| "berth".to_owned()),
            token_ttl: duration("token_ttl", raw.token_ttl, "5m").and_then(|d| {
                if d.as_secs() >= 60 {
                    Ok(d)
                } else {
                    Err(invalid("token_ttl", "must be at least 60s".into()))
                }
            })?,
            registry_token_ttl: duration("registry_token_ttl", raw.registry_token_ttl, "30d")?,
            fresh_sign_in: duration("fresh_sign_in", raw.fresh_sign_in, "15m")?,
            allow_private_issuers: raw.allow_private_issuers.unwrap_or(false),
            workload_token_max_lifetime: duration(
                "workload_token_max_lifetime",
                raw.workload_token_max_lifetime,
                "24h",
            )?,
            max_connections: match raw.max_connections {
                Some(0) => return Err(invalid("max_connections", "must be at least 1".into())),
                n => n.unwrap_or(1024),
            },
            upload_memory: match parse_size(raw.upload_memory.as_deref().unwrap_or("256MiB"))
                .map_err(|m| invalid("upload_memory", m))?
            {
                n if n < 1 << 20 => {
                    return Err(invalid("upload_memory", "must be at least 1MiB".into()));
                }
                n => n,
            },
            download_memory: match parse_size(raw.download_memory.as_deref().unwrap_or("256MiB"))
                .map_err(|m| invalid("download_memory", m))?
            {
                n if n < 1 << 20 => {
                    return Err(invalid("download_memory", "must be at least 1MiB".into()));
                }
                n => n,
            },
            max_connections_per_address: match raw.max_connections_per_address {
                Some(0) => {
                    return Err(invalid(
                        "max_connections_per_address",
                        "must be at least 1".into(),
                    ));
                }
                n => n,
            },
            header_read_timeout: nonzero(duration(
                "header_read_timeout",
                raw.header_read_timeout,
                "30s",
            )?)
            .ok_or_else(|| invalid("header_read_timeout", "must be more than 0s".into()))?,
            idle_timeout: nonzero(duration("idle_timeout", raw.idle_timeout, "60s")?)
                .ok_or_else(|| invalid("idle_timeout", "must be more than 0s".into()))?,
            token_signer: match (raw.token_key, raw.token_cert_chain) {
                (Some(key), Some(cert)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "token_key",
                        "token_key and token_cert_chain must be given together".into(),
                    ));
                }
            },
            database: match raw.database {
                None => None,
                Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    Some(crate::store::PgOptions {
                        url,
                        pool_size: match raw.database_pool_size {
                            Some(0) => {
                                return Err(invalid(
                                    "database_pool_size",
                                    "must be at least 1".into(),
                                ));
                            }
                            n => n.unwrap_or(16),
                        },
                        statement_timeout: nonzero(duration(
                            "database_timeout",
                            raw.database_timeout,
                            "10s",
                        )?)
                        .ok_or_else(|| {
                            invalid("database_timeout", "must be more than 0s".into())
                        })?,
                    })
                }
                Some(_) => {
                    return Err(invalid(
                        "database",
                        "must be a URL like postgres://USER:PASS@HOST:PORT/DB".into(),
                    ));
                }
            },
            secret_key: match raw.secret_key_file {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| {
                            invalid("secret_key_file", format!("{}: {e}", path.display()))
                        })?
                        .trim()
                        .to_owned(),
                ),
                None => std::env::var(env::BERTH_SECRET_KEY)
                    .ok()
                    .filter(|v| !v.trim().is_empty()),
            },
            storage: match raw.storage {
                None => None,
                Some(url) if url.starts_with("s3://") && url.len() > "s3://".len() => {
                    Some(crate::blob::S3Options {
                        url,
                        endpoint: match raw.s3_endpoint {
                            Some(e) if e.starts_with("http://") || e.starts_with("https://") => {
                                Some(e.trim_end_matches('/').to_owned())
                            }
                            Some(e) => {
                                return Err(invalid(
                                    "s3_endpoint",
                                    format!("{e:?} must start with http:// or https://"),
                                ));
                            }
                            None => None,
                        },
                        region: raw.s3_region,
                        path_style: raw.s3_path_style.unwrap_or(false),
                        timeout: nonzero(duration("s3_timeout", raw.s3_timeout, "120s")?)
                            .ok_or_else(|| invalid("s3_timeout", "must be more than 0s".into()))?,
                    })
                }
                Some(u) => {
                    return Err(invalid(
                        "storage",
                        format!("{u:?} must be a URL like s3://BUCKET or s3://BUCKET/PREFIX"),
                    ));
                }
            },
            log: raw.log.unwrap_or_else(|| "info".to_owned()),
        })
    }
}

/// The OpenID providers: the `--oidc-*` flags' one (when `--oidc-issuer` is given), then the
/// file's `[[oidc]]` tables; names must differ.
fn providers(raw: &FileConfig) -> Result<Vec<crate::auth::oidc::ProviderConfig>, ConfigError> {
    let invalid = |key, message: String| ConfigError::Invalid { key, message };
    let mut tables = Vec::new();
    if let Some(issuer) = &raw.oidc_issuer {
        tables.push(raw::OidcFile {
            name: raw.oidc_name.clone(),
            display_name: raw.oidc_display_name.clone(),
            issuer: issuer.clone(),
            client_id: raw
                .oidc_client_id
                .clone()
                .ok_or_else(|| invalid("oidc_client_id", "is needed with --oidc-issuer".into()))?,
            client_secret_file: raw.oidc_client_secret_file.clone().ok_or_else(|| {
                invalid(
                    "oidc_client_secret_file",
                    "is needed with --oidc-issuer".into(),
                )
            })?,
            scopes: raw.oidc_scopes.clone(),
            username_claim: raw.oidc_username_claim.clone(),
            groups_claim: raw.oidc_groups_claim.clone(),
            admin_group: raw.oidc_admin_group.clone(),
            groups_prefix: raw.oidc_groups_prefix.clone(),
        });
    }
    tables.extend(raw.oidc.iter().cloned());
    let several = tables.len() > 1;
    let mut out: Vec<crate::auth::oidc::ProviderConfig> = Vec::new();
    for t in tables {
        let name = t.name.unwrap_or_else(|| "sso".into());
        let b = name.as_bytes();
        if b.is_empty()
            || b.len() > 32
            || !b
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return Err(invalid(
                "oidc_name",
                format!("{name:?}: use 1-32 lowercase letters, digits or '-'"),
            ));
        }
        if out.iter().any(|p| p.name == name) {
            return Err(invalid(
                "oidc_name",
                format!("two providers are named {name:?}"),
            ));
        }
        let secret = std::fs::read_to_string(&t.client_secret_file)
            .map_err(|e| {
                invalid(
                    "oidc_client_secret_file",
                    format!("{}: {e}", t.client_secret_file.display()),
                )
            })?
            .trim()
            .to_owned();
        if secret.is_empty() {
            return Err(invalid(
                "oidc_client_secret_file",
                format!("{} is empty", t.client_secret_file.display()),
            ));
        }
        let scopes: Vec<String> = t
            .scopes
            .as_deref()
            .unwrap_or("openid profile email groups offline_access")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !scopes.iter().any(|s| s == "openid") {
            return Err(invalid("oidc_scopes", "must include openid".into()));
        }
        out.push(crate::auth::oidc::ProviderConfig {
            display_name: t.display_name.unwrap_or_else(|| name.clone()),
            issuer: t.issuer,
            client_id: t.client_id,
            client_secret: secret,
            scopes,
            username_claim: t
                .username_claim
                .unwrap_or_else(|| "preferred_username".into()),
            groups_claim: t.groups_claim.unwrap_or_else(|| "groups".into()),
            admin_group: t.admin_group,
            // With several providers, one's `dev` is not another's.
            groups_prefix: t.groups_prefix.unwrap_or_else(|| {
                if several {
                    format!("{name}:")
                } else {
                    String::new()
                }
            }),
            name,
        });
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Parses a size in bytes: `1048576`, `512KiB`, `256MiB`, `2GiB` (one number, one binary unit).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || format!("{s:?} is not a size like 64MiB, 1GiB or 1048576");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mul: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `90d`, `24h`, `30m`, `10s`, `500ms` (one number, one unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 15m, 24h, 90d, 52w or 1y"))?;
    let secs = |mul: u64| {
        n.checked_mul(mul)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        "y" => secs(365 * 86_400),
        _ => Err(format!(
            "{s:?} is not a duration like 30s, 15m, 24h, 90d, 52w or 1y"
        )),
    }
}

/// The configuration reference, generated from the `serve` flags (written to `docs/config.md`).
pub fn reference_markdown() -> String {
    use clap::CommandFactory as _;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }
    let cmd = Wrapper::command();
    let mut out = String::from(
        "# Server configuration\n\n\
         <!-- Generated from src/config/raw.rs by `cargo test`; do not edit. -->\n\n\
         `berth serve [CONFIG.toml]` reads each setting from, in order of precedence:\n\
         its command-line flag, its environment variable, its key in the TOML file, its default.\n\n\
         | flag | environment | TOML key | meaning |\n|---|---|---|---|\n",
    );
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let env = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        out.push_str(&format!(
            "| `--{long}` | `{env}` | `{}` | {} |\n",
            long.replace('-', "_"),
            help.replace('|', "\\|")
        ));
    }
    out.push_str(
        "\nDurations are a whole number and a unit: `500ms`, `30s`, `15m`, `24h`, `90d`.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("10MB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn precedence_flag_over_file_over_default() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:7000\"\nupload_ttl = \"2h\"\ndata_dir = \"/srv/x\"",
        )
        .unwrap();
        let args = ServeArgs {
            listen: Some("127.0.0.1:8000".into()),
            ..ServeArgs::default()
        };
        let c = Config::resolve(args.over(file)).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(c.upload_ttl, Duration::from_secs(7200));
        assert_eq!(c.data_dir, PathBuf::from("/srv/x"));
        assert_eq!(c.gc_grace, Duration::from_secs(3600));
        assert!(c.gc_interval.is_none());
    }

    #[test]
    fn invalid_values_are_named() {
        let e = Config::resolve(FileConfig {
            gc_grace: Some("soon".into()),
            ..FileConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid gc_grace: \"soon\" is not a duration like 30s, 15m, 24h, 90d, 52w or 1y"
        );
        let e = Config::resolve(FileConfig {
            tls_key: Some("k".into()),
            ..FileConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid tls_cert: tls_cert and tls_key must be given together"
        );
        let e = Config::resolve(FileConfig {
            max_connections_per_address: Some(0),
            ..FileConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid max_connections_per_address: must be at least 1"
        );
        let c = Config::resolve(FileConfig {
            max_connections: Some(64),
            ..FileConfig::default()
        })
        .unwrap();
        // A quarter of what the server serves, once it has lowered the cap (`server`).
        assert_eq!(c.max_connections_per_address, None);
        assert!(
            toml::from_str::<FileConfig>("lisen = \"x\"")
                .unwrap_err()
                .to_string()
                .contains("unknown field `lisen`")
        );
    }

    #[test]
    fn identity_providers_come_from_flags_and_oidc_tables() {
        let dir = tempfile_dir();
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let toml_text = format!(
            "public_url = \"https://reg.example\"\nlocal_login = \"admins\"\n\
             [[oidc]]\nname = \"entra\"\nissuer = \"https://login.microsoftonline.com/t/v2.0\"\n\
             client_id = \"c1\"\nclient_secret_file = \"{0}\"\ngroups_claim = \"roles\"\n\
             [[oidc]]\nname = \"dex\"\nissuer = \"https://dex.example/\"\nclient_id = \"c2\"\n\
             client_secret_file = \"{0}\"\nscopes = \"openid profile groups offline_access\"\n",
            secret.display()
        );
        let file: FileConfig = toml::from_str(&toml_text).unwrap();
        let args = ServeArgs {
            oidc_issuer: Some("https://kc.example/realms/corp".into()),
            oidc_name: Some("keycloak".into()),
            oidc_client_id: Some("berth".into()),
            oidc_client_secret_file: Some(secret.clone()),
            oidc_admin_group: Some("registry-admins".into()),
            ..ServeArgs::default()
        };
        let c = Config::resolve(args.over(file)).unwrap();
        let names: Vec<&str> = c.oidc.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["keycloak", "entra", "dex"]);
        assert_eq!(
            c.oidc[0].client_secret, "s3cret",
            "read from the file, trimmed"
        );
        assert_eq!(c.oidc[0].admin_group.as_deref(), Some("registry-admins"));
        assert_eq!(
            c.oidc[0].scopes.join(" "),
            "openid profile email groups offline_access"
        );
        assert_eq!(c.oidc[1].groups_claim, "roles");
        assert_eq!(
            (
                c.oidc[0].groups_prefix.as_str(),
                c.oidc[2].groups_prefix.as_str()
            ),
            ("keycloak:", "dex:"),
            "several providers: each one's groups are its own"
        );
        assert_eq!(
            c.oidc[2].issuer, "https://dex.example/",
            "an issuer is kept exactly"
        );
        assert_eq!(c.local_login, crate::auth::oidc::LocalLogin::Admins);
        assert_eq!(c.sso_refresh_interval, Duration::from_secs(300));
        // A provider without --public-url, a second provider of the same name, a refresh
        // interval past the bound, scopes without openid: each refused by name.
        let no_url = ServeArgs {
            public_url: None,
            ..args.clone()
        };
        let e = Config::resolve(no_url.over(FileConfig::default())).unwrap_err();
        assert!(e.to_string().starts_with("invalid public_url"), "{e}");
        let with_url = |f: FileConfig| FileConfig {
            public_url: Some("https://reg.example".into()),
            ..f
        };
        let twice: FileConfig = toml::from_str(&format!(
            "[[oidc]]\nname = \"keycloak\"\nissuer = \"https://a\"\nclient_id = \"x\"\nclient_secret_file = \"{}\"\n",
            secret.display()
        ))
        .unwrap();
        let e = Config::resolve(args.over(with_url(twice))).unwrap_err();
        assert!(e.to_string().contains("two providers are named"), "{e}");
        let late = FileConfig {
            sso_refresh_interval: Some("16m".into()),
            ..with_url(FileConfig::default())
        };
        assert!(Config::resolve(args.over(late)).is_err());
        let no_openid = ServeArgs {
            oidc_scopes: Some("profile groups".into()),
            ..args.clone()
        };
        let e = Config::resolve(no_openid.over(with_url(FileConfig::default()))).unwrap_err();
        assert!(e.to_string().contains("must include openid"), "{e}");
        let bad = FileConfig {
            local_login: Some("nobody".into()),
            ..FileConfig::default()
        };
        assert!(
            Config::resolve(bad)
                .unwrap_err()
                .to_string()
                .starts_with("invalid local_login")
        );
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-config-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// `docs/config.md` is generated; this test rewrites it and fails when it was stale.
    #[test]
    fn docs_config_md_is_fresh() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md");
        let want = reference_markdown();
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
            panic!("docs/config.md was stale and has been regenerated; commit it");
        }
    }
}
