//! API fuzzing: schemathesis (PyPI) against `/api/v1/openapi.json`, authenticated as an org
//! Manager and as a Reader (each with an API key, so that its own logouts and session deletions
//! end nothing it runs on). Every check: no server error, no answer the document does not
//! describe (status, content type, body schema, headers), no schema-valid request refused, no
//! schema-violating request accepted, and no request slower than 1 s. Stateful links of the
//! document are followed. Example counts are bounded to fit the suite.
//!
//! The operations a failed login counts against (login, refresh, logout, setting a password) run
//! apart: 30 failures a minute from one address are answered 429 by design, which would fail
//! every other operation's check. `ignored_auth` (invalid credentials must be refused) is left
//! to the authorization matrix for the same reason.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// The operations whose failures spend the address's failed-login budget.
const LOGINISH: &str = "^/api/v1/(auth/(login|refresh|logout)|users/[^/]+/password)$";

fn schemathesis(s: &Server, config: &std::path::Path, key: &str, extra: &[&str]) -> (bool, String) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("iamapikey:{key}"));
    let out = Command::new("st")
        // Its cache (`.schemathesis/`) goes beside the configuration, not into the tree.
        .current_dir(config.parent().unwrap())
        .arg("--config-file")
        .arg(config)
        .args(["run", &s.url("/api/v1/openapi.json"), "--url", &s.base])
        .args(["-H", &format!("Authorization: Basic {auth}")])
        .args(["--checks", "all", "--exclude-checks", "ignored_auth"])
        .args(["--max-examples", "12", "--max-response-time", "1"])
        .args([
            "--continue-on-failure",
            "--suppress-health-check",
            "filter_too_much",
        ])
        .args(["--no-color", "--seed", "1"])
        .args(extra)
        .output()
        .expect("schemathesis (`st`; pip install schemathesis)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The summary of a run, for the test's output.
fn summary(text: &str) -> &str {
    text.find("= SUMMARY =").map_or(text, |i| &text[i..])
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_error_and_no_answer_outside_the_document() {
    let s = Server::start();
    let admin = Api::admin(&s);
    let c = client();
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    push_image(&c, &s, "acme/demo", "v1", 1).await;
    push_image(&c, &s, "acme/demo", "latest", 2).await;
    push_image(&c, &s, "acme/tools/cli", "1.0", 3).await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots",
            Some(json!({"name": "bot1"})),
            StatusCode::CREATED,
        )
        .await;
    admin
        .ok(
            "POST",
            "/orgs/acme/robots/bot1/tokens",
            Some(json!({"name": "t1", "expiresIn": "30d"})),
            StatusCode::CREATED,
        )
        .await;
    // Names a fuzzer will not guess, so that it cannot delete the bindings it runs on.
    let mut keys = Vec::new();
    for (user, role, binding) in [
        ("mgr", "Manager", "mgr-q7w2"),
        ("rdr", "Reader", "rdr-k4p9"),
    ] {
        let password = format!("{user}-password-0123");
        user_session(&s, user, &password).await;
        admin
            .ok(
                "PUT",
                &format!("/orgs/acme/members/{user}"),
                Some(json!({"role": "member"})),
                StatusCode::OK,
            )
            .await;
        admin
            .ok(
                "PUT",
                &format!("/orgs/acme/bindings/{binding}"),
                Some(json!({"role": role, "subject": format!("user/{user}")})),
                StatusCode::CREATED,
            )
            .await;
        let key = Api::basic(&s, user, &password)
            .ok(
                "POST",
                "/apikeys",
                Some(json!({"name": "stkey-q8z3v1x"})),
                StatusCode::CREATED,
            )
            .await;
        keys.push((role, key["apikey"].as_str().unwrap().to_owned()));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("st.toml");
    std::fs::write(
        &config,
        r#"[dictionaries.orgs]
values = ["acme"]
[dictionaries.repos]
values = ["acme/demo", "acme/tools/cli", "acme/nothing"]
[dictionaries.robots]
values = ["bot1"]
[parameters]
"path.org" = { dictionary = "orgs", probability = 0.5 }
"path.repository" = { dictionary = "repos", probability = 0.6 }
"path.robot" = { dictionary = "robots", probability = 0.5 }
"header.Organization" = { dictionary = "orgs", probability = 0.7 }
"#,
    )
    .unwrap();

    for (role, key) in &keys {
        let (ok, text) = schemathesis(&s, &config, key, &["--exclude-path-regex", LOGINISH]);
        eprintln!("schemathesis as {role}:\n{}", summary(&text));
        assert!(ok, "schemathesis as {role} found failures:\n{text}");
    }
    let (role, key) = &keys[0];
    let (ok, text) = schemathesis(
        &s,
        &config,
        key,
        &[
            "--include-path-regex",
            LOGINISH,
            "--phases",
            "examples,coverage,fuzzing",
        ],
    );
    eprintln!(
        "schemathesis as {role}, login operations:\n{}",
        summary(&text)
    );
    assert!(
        ok,
        "schemathesis (login operations) found failures:\n{text}"
    );
}
