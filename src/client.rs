//! A typed HTTP client of the management API and the token service, used by the CLI.
//! Credentials never appear in errors or in `--verbose` output.

use std::fmt;

use serde_json::Value;

/// How the client authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    /// Basic auth with a login user name and secret (`iamrefresh`, a robot accessId, `iamapikey`…).
    Basic(String, String),
    /// A session access token.
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic(user, _) => write!(f, "Basic({user}, [redacted])"),
            Auth::Bearer(_) => f.write_str("Bearer([redacted])"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{message}")]
    Status {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach {url}: {cause}")]
    Transport { url: String, cause: String },
    #[error("{0}")]
    Setup(String),
}

pub struct Client {
    base: String,
    auth: Auth,
    http: reqwest::Client,
    verbose: bool,
}

/// TLS settings for reaching a server.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// PEM of a CA to trust besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
}

impl Client {
    pub fn new(base: &str, auth: Auth, tls: &Tls, verbose: bool) -> Result<Client, ClientError> {
        let mut b =
            reqwest::Client::builder().user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &tls.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| ClientError::Setup(format!("invalid CA certificate: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        if tls.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            auth,
            http,
            verbose,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `/api/v1{path}`; returns the JSON answer (`Null` for 204).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        self.call(
            method,
            &format!("{}/api/v1{path}", self.base),
            body,
            headers,
        )
        .await
    }

    pub async fn call(
        &self,
        method: &str,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let method: reqwest::Method = method
            .parse()
            .map_err(|_| ClientError::Setup(format!("bad method {method}")))?;
        if self.verbose {
            // The request line only: never headers, so never a credential.
            crate::cli_eprint(&format!("> {method} {url}"));
        }
        let mut req = self.http.request(method, url);
        match &self.auth {
            Auth::Basic(u, p) => req = req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req = req.bearer_auth(t),
            Auth::None => {}
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            let cause = root_cause(&e);
            // rustls reading a plain-HTTP answer: say so in words.
            let cause = if url.starts_with("https://")
                && (cause.contains("InvalidContentType") || cause.contains("corrupt message"))
            {
                format!(
                    "the server answers plain HTTP, not HTTPS: use {}",
                    url.replacen("https://", "http://", 1)
                        .split("/api/")
                        .next()
                        .unwrap_or_default()
                )
            } else {
                cause
            };
            ClientError::Transport {
                url: url.to_owned(),
                cause,
            }
        })?;
        let status = resp.status().as_u16();
        if self.verbose {
            crate::cli_eprint(&format!("< {status}"));
        }
        let text = resp.text().await.map_err(|e| ClientError::Transport {
            url: url.to_owned(),
            cause: root_cause(&e),
        })?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            // The management API's error, the OCI spec's, or OAuth's (RFC 6749 §5.2, which the
            // device sign-in's polls answer: `{"error": "authorization_pending"}`).
            let (code, message) = match (&value["error"], &value["errors"][0]) {
                (Value::Object(e), _) | (_, Value::Object(e)) => (
                    e["code"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or(""),
                ),
                (Value::String(code), _) => (
                    code.as_str(),
                    value["error_description"]
                        .as_str()
                        .or_else(|| value["message"].as_str())
                        .unwrap_or(""),
                ),
                _ => ("", ""),
            };
            let message = if message.is_empty() {
                format!("the server answered {status}")
            } else {
                message.to_owned()
            };
            return Err(ClientError::Status {
                status,
                code: code.to_owned(),
                message,
            });
        }
        Ok(value)
    }
}

impl Client {
    /// Calls the registry at `/v2{path}` with a registry token for `scope`, got from `/token`
    /// with this client's credentials (a session access token goes as `iambearer`), as registry
    /// clients do.
    pub async fn registry(
        &self,
        method: &str,
        path: &str,
        scope: &str,
    ) -> Result<Value, ClientError> {
        let auth = match &self.auth {
            Auth::Bearer(t) => Auth::Basic("iambearer".into(), t.clone()),
            other => other.clone(),
        };
        let issuer = Client {
            base: self.base.clone(),
            auth,
            http: self.http.clone(),
            verbose: self.verbose,
        };
        let query = serde_urlencoded::to_string([("scope", scope)]).unwrap_or_default();
        let answer = issuer
            .call("GET", &format!("{}/token?{query}", self.base), None, &[])
            .await?;
        let token = answer["token"].as_str().unwrap_or_default().to_owned();
        let bearer = Client {
            base: self.base.clone(),
            auth: Auth::Bearer(token),
            http: self.http.clone(),
            verbose: self.verbose,
        };
        bearer
            .call(method, &format!("{}/v2{path}", self.base), None, &[])
            .await
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
