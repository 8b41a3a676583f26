//! The client configuration: a kubeconfig-shaped YAML file of servers, credentials and contexts
//! (server + credential + org), with a current context. Found at `--config FILE`, else
//! `BERTH_CONFIG`, else `~/.config/berth/config.yaml`; written atomically with mode 0600.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;

use crate::client::{Auth, Client, Tls};
pub(crate) use crate::kube::config::{
    ClientConfig, Context, Credential, NamedContext, RobotToken, Server, WorkloadCredential,
};

/// Where the configuration lives: `--config`, then `BERTH_CONFIG`, then the user's config dir.
pub(crate) fn path(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("BERTH_CONFIG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; give --config FILE")?;
    Ok(PathBuf::from(home).join(".config/berth/config.yaml"))
}

impl ClientConfig {
    /// Reads the file; a missing file is an empty configuration.
    pub(crate) fn load(path: &Path) -> anyhow::Result<ClientConfig> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                serde_norway::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file atomically (temp file, fsync, rename) with mode 0600.
    pub(crate) fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_norway::to_string(self)?;
        write_private(path, text.as_bytes())
    }

    /// The current context, its server and its credential.
    pub(crate) fn current(&self) -> anyhow::Result<(&NamedContext, &Server, &Credential)> {
        let name = self.current_context.as_deref().ok_or_else(|| {
            anyhow::Error::new(super::errors::Unauthenticated(
                "not logged in: run `berth login URL -a ORG`".into(),
            ))
        })?;
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("context {name:?} is not in the configuration"))?;
        let server = self
            .servers
            .iter()
            .find(|s| s.name == ctx.context.server)
            .with_context(|| {
                format!(
                    "server {:?} of context {name:?} is not in the configuration",
                    ctx.context.server
                )
            })?;
        let cred = self
            .credentials
            .iter()
            .find(|c| c.name == ctx.context.credential)
            .with_context(|| {
                format!(
                    "credential {:?} of context {name:?} is not in the configuration",
                    ctx.context.credential
                )
            })?;
        Ok((ctx, &server.server, &cred.credential))
    }
}

impl Credential {
    pub(crate) fn auth(&self) -> Auth {
        if let Some(t) = &self.refresh_token {
            Auth::Basic("iamrefresh".into(), t.clone())
        } else if let Some(r) = &self.robot_token {
            Auth::Basic(r.access_id.clone(), r.token.clone())
        } else if let Some(k) = &self.api_key {
            Auth::Basic("iamapikey".into(), k.clone())
        } else if let Some(t) = &self.registry_token {
            Auth::Basic("token".into(), t.clone())
        } else if let Some(w) = &self.workload {
            Auth::Basic(w.robot.clone(), w.token.clone())
        } else {
            Auth::None
        }
    }
}

impl Server {
    pub(crate) fn tls(&self) -> anyhow::Result<Tls> {
        let ca_pem = self
            .certificate_authority_data
            .as_deref()
            .map(|d| base64::engine::general_purpose::STANDARD.decode(d.trim()))
            .transpose()
            .context("certificate-authority-data is not base64")?;
        Ok(Tls {
            ca_pem,
            insecure: self.insecure_skip_tls_verify,
        })
    }
}

/// A client for the current context. A user session uses its cached access token while it is
/// fresh, and otherwise gets a new one with the refresh token (saving it in the file at `path`),
/// so the long-lived refresh token crosses the wire only once per access-token lifetime.
pub(crate) async fn client(path: &Path, verbose: bool) -> anyhow::Result<(Client, Option<String>)> {
    let mut cfg = ClientConfig::load(path)?;
    let (ctx, server, cred) = cfg.current()?;
    let (org, server, cred_name, cred) = (
        ctx.context.org.clone(),
        server.clone(),
        ctx.context.credential.clone(),
        cred.clone(),
    );
    let tls = server.tls()?;
    let Some(refresh) = &cred.refresh_token else {
        return Ok((Client::new(&server.url, cred.auth(), &tls, verbose)?, org));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    if let (Some(token), Some(exp)) = (&cred.access_token, cred.access_token_expires)
        && exp - 30 > now
    {
        return Ok((
            Client::new(&server.url, Auth::Bearer(token.clone()), &tls, verbose)?,
            org,
        ));
    }
    let refresher = Client::new(
        &server.url,
        Auth::Basic("iamrefresh".into(), refresh.clone()),
        &tls,
        verbose,
    )?;
    let v = refresher
        .api("POST", "/auth/access-token", None, &[])
        .await
        .map_err(|e| match e {
            crate::client::ClientError::Status { status: 401, .. } => {
                anyhow::Error::new(super::errors::Unauthenticated(
                    "the session has ended: run `berth login` again".into(),
                ))
            }
            e => e.into(),
        })?;
    let token = v["access_token"]
        .as_str()
        .context("the server sent no access token")?
        .to_owned();
    let expires = now + v["expires_in"].as_i64().unwrap_or(60);
    if let Some(c) = cfg.credentials.iter_mut().find(|c| c.name == cred_name) {
        c.credential.access_token = Some(token.clone());
        c.credential.access_token_expires = Some(expires);
    }
    cfg.save(path)?;
    Ok((
        Client::new(&server.url, Auth::Bearer(token), &tls, verbose)?,
        org,
    ))
}

/// Writes a file atomically with mode 0600 (it may hold secrets).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
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
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_private_file_is_written_through_no_planted_link_and_with_owner_only_bits() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(
            &victim,
            path.with_extension(format!("tmp{}", std::process::id())),
        )
        .unwrap();
        write_private(&path, b"secret").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
