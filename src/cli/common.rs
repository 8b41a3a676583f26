//! What the command files share: the organization of a command, the columns of a few tables,
//! reporting a change, writing a secret, rotating a credential, and reading a secret from the
//! terminal; docker's config file. It imports none of the command files, so there is no circle in
//! `cli/`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::context;
use super::errors::Usage;
use super::output::Format;

/// The organization: `--org`, else the context's.
pub(super) fn org_of(flag: Option<&str>, ctx_org: Option<String>) -> anyhow::Result<String> {
    flag.map(str::to_owned)
        .or(ctx_org)
        .ok_or_else(|| Usage("no organization: pass --org ORG or log in with -a ORG".into()).into())
}

pub(super) const ROBOT_COLUMNS: [(&str, &str); 3] = [
    ("NAME", "name"),
    ("DESCRIPTION", "description"),
    ("CREATED", "created"),
];

pub(super) const TOKEN_COLUMNS: [(&str, &str); 7] = [
    ("NAME", "name"),
    ("CREATED", "created"),
    ("EXPIRES", "expires"),
    ("LAST USED", "lastUsedAt"),
    ("FROM", "lastUsedFrom"),
    ("STATUS", "status"),
    ("ID", "id"),
];

pub(super) const TRUST_COLUMNS: [(&str, &str); 6] = [
    ("NAME", "name"),
    ("ISSUER", "issuer"),
    ("SUBJECT", "subject"),
    ("AUDIENCE", "audience"),
    ("CLAIMS", "claims"),
    ("LAST USED", "lastUsed"),
];

/// A role or binding as JSON or YAML is the document `apply -f` takes back; as a table, as is.
pub(super) fn exportable(format: Format, v: Value) -> Value {
    match format {
        Format::Table => v,
        Format::Json | Format::Yaml => crate::kube::rbac_manifest(&v),
    }
}

/// Says on stderr that a robot without bindings can do nothing yet, and how to change that.
pub(super) fn warn_unbound(robot: &str) {
    eprintln!(
        "warning: robot {robot:?} has no bindings yet, so its tokens can do nothing; give it a role:\n  berth binding create {robot} --role Reader --robot {robot} [--namespace NAMESPACE]"
    );
}

/// Whether any binding of `org` names `robot` as its subject.
pub(super) async fn robot_is_bound(
    c: &crate::client::Client,
    org: &str,
    robot: &str,
) -> anyhow::Result<bool> {
    let v = c
        .api("GET", &format!("/orgs/{org}/bindings"), None, &[])
        .await?;
    let subject = format!("robot/{robot}");
    Ok(v["bindings"]
        .as_array()
        .is_some_and(|l| l.iter().any(|b| b["subject"] == subject.as_str())))
}

/// Lists credentials: "last used" flattened into its time and client address for the table.
pub(super) fn credentials(mut v: Value, field: &str) -> Value {
    if let Some(list) = v[field].as_array_mut() {
        for c in list {
            c["lastUsedAt"] = c["lastUsed"]["at"].clone();
            c["lastUsedFrom"] = c["lastUsed"]["address"].clone();
        }
    }
    v
}

/// Reports a finished change on stderr.
pub(super) fn done(
    result: Result<Value, crate::client::ClientError>,
    message: &str,
) -> anyhow::Result<()> {
    result?;
    crate::cli_eprint(message);
    Ok(())
}

/// Rotates robot token `name` of `org/robot`; the new token file (`{"accessId", "token"}`).
pub(super) async fn rotate_robot_token(
    c: &crate::client::Client,
    org: &str,
    robot: &str,
    name: &str,
    overlap: &str,
) -> anyhow::Result<Value> {
    let v = rotate(
        c,
        &format!("/orgs/{org}/robots/{robot}/tokens/{name}/rotate"),
        &[],
        overlap,
        &format!("token {name:?} of robot {robot:?}"),
    )
    .await?;
    Ok(json!({ "accessId": v["accessId"], "token": v["token"] }))
}

/// Rotates the credential at `path` (`…/rotate`) and says on stderr until when the old secret
/// of `what` works; the answer carries the new secret.
pub(super) async fn rotate(
    c: &crate::client::Client,
    path: &str,
    headers: &[(&str, &str)],
    overlap: &str,
    what: &str,
) -> anyhow::Result<Value> {
    let v = c
        .api("POST", path, Some(&json!({ "overlap": overlap })), headers)
        .await?;
    match v["previousValidUntil"].as_str() {
        Some(until) => crate::cli_eprint(&format!(
            "rotated {what}: the old secret works until {until}"
        )),
        None => crate::cli_eprint(&format!("rotated {what}: the old secret no longer works")),
    }
    Ok(v)
}

/// Writes a secret file (0600), or prints it for `-` or no file.
pub(super) fn emit_secret(output: Option<&str>, value: &Value, what: &str) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    match output {
        Some("-") | None => crate::cli_print(text.trim_end()),
        Some(path) => {
            context::write_private(&PathBuf::from(path), text.as_bytes())?;
            crate::cli_eprint(&format!("{what} written to {path}"));
        }
    }
    Ok(())
}

/// Before a new secret is made: refuses an `--output` file that exists (it may hold the only
/// copy of another secret) unless `force`, so that nothing is made that could not be written.
/// A rotation rewrites its own file and does not ask.
pub(super) fn refuse_existing(output: Option<&str>, force: bool) -> anyhow::Result<()> {
    match output {
        Some(path) if path != "-" && !force && std::path::Path::new(path).exists() => Err(Usage(format!(
            "{path} exists (it may hold the only copy of another secret); choose another file, or give --force to replace it"
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Reads a secret: from stdin when asked to, else from the terminal without echo.
pub(super) fn read_secret(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading standard input")?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Usage(format!(
            "no terminal to ask for the {prompt}; use --password-stdin"
        ))
        .into());
    }
    rpassword::prompt_password(format!("{prompt}: ")).context("reading the password")
}

/// A new password: from standard input, or typed twice at the terminal (a typo in a password
/// nobody can see would lock its owner out).
pub(super) fn read_new_password(prompt: &str, from_stdin: bool) -> anyhow::Result<String> {
    let first = read_secret(prompt, from_stdin)?;
    if !from_stdin {
        let again = read_secret(&format!("{prompt} again"), false)?;
        if again != first {
            return Err(Usage("the two passwords differ; nothing was changed".into()).into());
        }
    }
    Ok(first)
}

/// (user name, password) from a token file, by the secret's kind.
pub(super) fn login_of(file: &Path) -> anyhow::Result<(String, String)> {
    let text = if file == Path::new("-") {
        use std::io::Read as _;
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("reading the token file from standard input")?;
        t
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    match (s("accessId"), s("token"), s("apikey")) {
        (Some(id), Some(token), _) => Ok((id, token)),
        (None, _, Some(key)) => Ok(("iamapikey".into(), key)),
        (None, Some(token), None) => Ok(("token".into(), token)),
        _ => Err(Usage(format!(
            "{} holds no robot token, API key or registry token",
            file.display()
        ))
        .into()),
    }
}

pub(super) fn docker_config_path(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; give --file PATH")?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

/// Writes `auths[host] = user:secret` into the docker config (`file`, else the default).
pub(super) fn write_auth(
    file: Option<&Path>,
    host: &str,
    user: &str,
    secret: &str,
) -> anyhow::Result<PathBuf> {
    merge_entry(file, &crate::kube::docker_config(host, user, secret))
}

/// Merges `entry`'s `auths` and `credHelpers` into the docker config, atomically.
pub(super) fn merge_entry(file: Option<&Path>, entry: &Value) -> anyhow::Result<PathBuf> {
    let path = docker_config_path(file)?;
    let mut doc: Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if !doc.is_object() {
        return Err(Usage(format!("{} is not a JSON object", path.display())).into());
    }
    for key in ["auths", "credHelpers"] {
        if let Some(Value::Object(new)) = entry.get(key) {
            let slot = doc
                .as_object_mut()
                .map(|m| m.entry(key).or_insert_with(|| json!({})));
            if let Some(Value::Object(existing)) = slot {
                for (k, v) in new {
                    existing.insert(k.clone(), v.clone());
                }
            }
        }
    }
    // Some clients (oras) read `auths` and fail when it is missing, even beside credHelpers.
    if let Some(m) = doc.as_object_mut() {
        m.entry("auths").or_insert_with(|| json!({}));
    }
    context::write_private(
        &path,
        (serde_json::to_string_pretty(&doc)? + "\n").as_bytes(),
    )?;
    Ok(path)
}
