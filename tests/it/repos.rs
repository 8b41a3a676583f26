//! Repositories as people use them day to day: the repository view pages, filters and sorts its
//! tags and gives each image its size (per platform for an index); a repository can be deleted
//! whole by who may delete in it; the CLI's `tag list`, `repo get` and `repo delete`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A manifest of config `c` and `layers`, distinct by `n` (an annotation).
fn manifest(c: (&str, usize), layers: &[(&str, usize)], n: usize) -> String {
    let mut m: Value = serde_json::from_str(&image_manifest(c, layers)).unwrap();
    m["annotations"] = json!({ "n": n.to_string() });
    m.to_string()
}

async fn put(s: &Server, repo: &str, reference: &str, media_type: &str, body: &str) {
    let r = put_manifest(&client(), s, repo, reference, media_type, body).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

fn names(v: &Value) -> Vec<String> {
    v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_repository_view_pages_filters_sorts_and_sizes_images() {
    let s = Server::start();
    let admin = Api::admin(&s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    let c = client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let (layer, shared) = (random_bytes(3000, 1), random_bytes(5000, 2));
    let cd = push_blob(&c, &s, "acme/app", config).await;
    let ld = push_blob(&c, &s, "acme/app", &layer).await;
    let sd = push_blob(&c, &s, "acme/app", &shared).await;
    // 55 tags in one push burst, one more a second later.
    for i in 0..55 {
        let m = manifest((&cd, config.len()), &[(&ld, layer.len())], i);
        put(&s, "acme/app", &format!("a{i:02}"), OCI_MANIFEST, &m).await;
    }
    let m = manifest((&cd, config.len()), &[(&sd, shared.len())], 99);
    put(&s, "acme/app", "b_1", OCI_MANIFEST, &m).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The newest: an index of two platforms, sharing the config and one layer.
    let m1 = manifest(
        (&cd, config.len()),
        &[(&ld, layer.len()), (&sd, shared.len())],
        1,
    );
    let m2 = manifest((&cd, config.len()), &[(&sd, shared.len())], 2);
    let (d1, d2) = (sha256(m1.as_bytes()), sha256(m2.as_bytes()));
    put(&s, "acme/app", &d1, OCI_MANIFEST, &m1).await;
    put(&s, "acme/app", &d2, OCI_MANIFEST, &m2).await;
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d1, "size": m1.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": d2, "size": m2.len(), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    })
    .to_string();
    put(&s, "acme/app", "zz-multi", OCI_INDEX, &index).await;

    // Newest push first by default; 50 a page; where the page is.
    let first = admin
        .ok(
            "GET",
            "/orgs/acme/repositories/acme/app",
            None,
            StatusCode::OK,
        )
        .await;
    let tags = names(&first);
    assert_eq!(tags.len(), 50, "{tags:?}");
    assert_eq!(tags[0], "zz-multi", "the newest push comes first: {tags:?}");
    assert_eq!(
        (
            first["total"].clone(),
            first["pages"].clone(),
            first["next"].clone()
        ),
        (json!(57), json!(2), json!(2)),
        "{first}"
    );
    let second = admin
        .ok(
            "GET",
            "/orgs/acme/repositories/acme/app?page=2",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(second["next"], Value::Null);
    let mut all = tags.clone();
    all.extend(names(&second));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 57, "the pages together hold every tag once");
    // By name.
    let by_name = admin
        .ok(
            "GET",
            "/orgs/acme/repositories/acme/app?sort=name&n=3",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(names(&by_name), ["a00", "a01", "a02"]);
    assert_eq!(by_name["pages"], 19);
    // A filter is a case-insensitive part of the tag; LIKE's wildcards are plain characters.
    let filtered = admin
        .ok(
            "GET",
            "/orgs/acme/repositories/acme/app?q=A0&sort=name",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(filtered["total"], 10, "{filtered}");
    assert!(names(&filtered).iter().all(|t| t.starts_with("a0")));
    for (q, want) in [
        ("_", json!(["b_1"])),
        ("%25", json!([])),
        ("a_1", json!([])),
    ] {
        let v = admin
            .ok(
                "GET",
                &format!("/orgs/acme/repositories/acme/app?q={q}"),
                None,
                StatusCode::OK,
            )
            .await;
        assert_eq!(json!(names(&v)), want, "q={q}");
    }
    let (status, v) = admin
        .get("/orgs/acme/repositories/acme/app?sort=size")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pushed, name"),
        "{v}"
    );

    // An image's size is its manifest, config and layers; an index's, everything once, and
    // each platform its own image.
    let a00 = manifest((&cd, config.len()), &[(&ld, layer.len())], 0);
    let t = by_name["tags"][0].clone();
    assert_eq!(
        t["size"],
        json!(a00.len() + config.len() + layer.len()),
        "{t}"
    );
    let multi = first["tags"][0].clone();
    let one = m1.len() + config.len() + layer.len() + shared.len();
    let two = m2.len() + config.len() + shared.len();
    assert_eq!(
        multi["size"],
        json!(index.len() + m1.len() + m2.len() + config.len() + layer.len() + shared.len()),
        "{multi}"
    );
    assert_eq!(
        multi["platforms"],
        json!([
            {"platform": "linux/amd64", "digest": d1, "size": one},
            {"platform": "linux/arm64/v8", "digest": d2, "size": two},
        ])
    );

    // The repository list pages, filters and sorts too.
    let c2 = push_blob(&c, &s, "acme/other", config).await;
    let m = manifest((&c2, config.len()), &[], 7);
    put(&s, "acme/other", "v1", OCI_MANIFEST, &m).await;
    let repos = admin
        .ok(
            "GET",
            "/orgs/acme/repositories?sort=size",
            None,
            StatusCode::OK,
        )
        .await;
    let order: Vec<&str> = repos["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["acme/app", "acme/other"], "largest first");
    let repos = admin
        .ok("GET", "/orgs/acme/repositories?q=OTH", None, StatusCode::OK)
        .await;
    assert_eq!(repos["total"], 1, "{repos}");
    assert_eq!(repos["repositories"][0]["name"], "acme/other");
    // Its size counts its manifest too, as the tag's size and the namespace's storage do.
    assert_eq!(
        repos["repositories"][0]["size"],
        json!(m.len() + config.len()),
        "{repos}"
    );
}

#[tokio::test]
async fn a_repository_is_deleted_whole_by_who_may_delete_in_it() {
    let s = Server::start();
    let admin = Api::admin(&s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    let (_, m) = push_image(&client(), &s, "acme/app", "v1", 3).await;
    push_image(&client(), &s, "acme/app", "v2", 4).await;
    // The same layer in another repository outlives the deletion.
    let shared: Value = serde_json::from_str(&m).unwrap();
    let layer = shared["layers"][0]["digest"].as_str().unwrap().to_owned();
    let r = client()
        .post(s.url(&format!(
            "/v2/acme/keep/blobs/uploads/?mount={layer}&from=acme/app"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let reader = robot_with_token(&admin, "acme", "reader", "Reader", json!({})).await;
    let (id, secret) = reader.split_once(':').unwrap();
    let reader = Api::basic(&s, id, secret);
    user_session(&s, "bob", "bob-password-1").await;
    let (status, v) = admin
        .put("/orgs/acme/members/bob", json!({"role": "member"}))
        .await;
    assert!(status.is_success(), "{v}");
    let bob = Api::basic(&s, "bob", "bob-password-1");
    if bob.get("/invitations").await.1["invitations"]
        .as_array()
        .is_some_and(|i| !i.is_empty())
    {
        bob.ok(
            "POST",
            "/orgs/acme/invitations/accept",
            None,
            StatusCode::OK,
        )
        .await;
    }

    // A member who may not pull it: the answer of a repository that does not exist.
    let (status, v) = bob.delete("/orgs/acme/repositories/acme/app").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    // A reader sees it and is refused, with what was missing.
    let (status, v) = reader.delete("/orgs/acme/repositories/acme/app").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs delete"),
        "{v}"
    );
    // Nothing was lost.
    let r = client()
        .get(s.url("/v2/acme/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    admin
        .ok(
            "DELETE",
            "/orgs/acme/repositories/acme/app",
            None,
            StatusCode::NO_CONTENT,
        )
        .await;
    let r = client()
        .get(s.url("/v2/acme/app/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    let (status, _) = admin.get("/orgs/acme/repositories/acme/app").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin.delete("/orgs/acme/repositories/acme/app").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a second delete finds nothing"
    );
    let r = client()
        .get(s.url(&format!("/v2/acme/keep/blobs/{layer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the other repository's layer stays"
    );
    // The owner's audit says who deleted what.
    let audit = admin
        .ok(
            "GET",
            "/orgs/acme/audit?action=repository.delete",
            None,
            StatusCode::OK,
        )
        .await;
    let e = &audit["events"][0];
    assert_eq!(e["actor"], "user:admin", "{audit}");
    assert_eq!(e["target"], "repository/acme/app (2 tags)", "{audit}");
}

#[tokio::test]
async fn the_owners_audit_names_what_each_registry_token_granted() {
    let s = Server::start();
    let admin = Api::admin(&s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    push_image(&client(), &s, "acme/app", "v1", 5).await;
    // Asking is not getting: an outsider's and an anonymous caller's requests for acme's
    // repositories write nothing into acme's audit (else anyone could flood it).
    user_session(&s, "mallory", "mallory-password-1").await;
    for c in [
        basic_client("mallory", "mallory-password-1"),
        anonymous_client(),
    ] {
        for _ in 0..3 {
            let r = c
                .get(s.url("/token?service=berth&scope=repository:acme/app:pull"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success() || r.status() == StatusCode::UNAUTHORIZED);
        }
    }
    let reader = robot_with_token(&admin, "acme", "ci", "Reader", json!({})).await;
    let (id, secret) = reader.split_once(':').unwrap();
    let r = basic_client(id, secret)
        .get(s.url("/token?service=berth&scope=repository:acme/app:pull,push"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = admin
            .ok(
                "GET",
                "/orgs/acme/audit?action=token.issue",
                None,
                StatusCode::OK,
            )
            .await;
        if let Some(e) = v["events"].as_array().unwrap().first() {
            assert_eq!(
                v["events"].as_array().unwrap().len(),
                1,
                "only the robot's: {v}"
            );
            assert_eq!(e["actor"], "robot:acme/ci", "{v}");
            // Asked for pull and push, granted what the Reader role holds.
            assert_eq!(e["detail"], "granted repository:acme/app:pull", "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no token.issue row in acme's audit: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_page_of_tags_costs_the_page_whatever_the_repository_holds() {
    let mut s = Server::start_embedded();
    let admin = Api::admin(&s);
    admin
        .ok(
            "POST",
            "/orgs",
            Some(json!({"name": "acme"})),
            StatusCode::CREATED,
        )
        .await;
    // One image of 300 layers, then 20,000 more tags of it (written straight into the database:
    // pushing them would take minutes), each older than the last.
    let c = client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cd = push_blob(&c, &s, "acme/big", config).await;
    let mut layers = Vec::new();
    for i in 0..300u64 {
        let bytes = format!("layer {i}").into_bytes();
        layers.push((push_blob(&c, &s, "acme/big", &bytes).await, bytes.len()));
    }
    let refs: Vec<(&str, usize)> = layers.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    put(
        &s,
        "acme/big",
        "v1",
        OCI_MANIFEST,
        &manifest((&cd, config.len()), &refs, 0),
    )
    .await;
    s.terminate();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             rid, d, at = c.execute(\"SELECT t.repo_id, t.digest, t.updated_at FROM tags t WHERE t.name = 'v1'\").fetchone()\n\
             c.executemany('INSERT INTO tags (repo_id, name, digest, updated_at) VALUES (?, ?, ?, ?)', \
               [(rid, 'bulk-%05d' % i, d, at - 1 - i) for i in range(20000)])\n\
             c.commit()\n",
        )
        .arg(s.data_dir.join("berth.db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.restart();
    let admin = Api::admin(&s);
    for query in [
        "",
        "?page=200",
        "?page=100000000000",
        "?page=18446744073709551615",
        "?q=BULK-1&page=3",
        "?sort=name&page=399",
    ] {
        let start = std::time::Instant::now();
        let v = admin
            .ok(
                "GET",
                &format!("/orgs/acme/repositories/acme/big{query}"),
                None,
                StatusCode::OK,
            )
            .await;
        let took = start.elapsed();
        assert!(took < Duration::from_secs(1), "{query}: {took:?}");
        assert_eq!(
            v["total"],
            if query.contains("q=") { 10_000 } else { 20_001 },
            "{query}"
        );
        let shown = v["tags"].as_array().unwrap().len();
        assert_eq!(
            shown,
            if query.contains("000") || query.contains("615") {
                0
            } else {
                50
            },
            "{query}"
        );
    }
    // The newest first: v1, then the bulk tags in the order they were made.
    let v = admin
        .ok(
            "GET",
            "/orgs/acme/repositories/acme/big?n=3",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(names(&v), ["v1", "bulk-00000", "bulk-00001"]);
    assert_eq!(
        v["tags"][0]["size"],
        json!(
            manifest((&cd, config.len()), &refs, 0).len()
                + config.len()
                + layers.iter().map(|l| l.1).sum::<usize>()
        )
    );
    // A filter longer than any name is refused, not sent to the database.
    let (status, v) = admin
        .get(&format!(
            "/orgs/acme/repositories/acme/big?q={}",
            "a".repeat(60_000)
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = admin
        .get(&format!("/orgs/acme/repositories?q={}", "a".repeat(300)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}
