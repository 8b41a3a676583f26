//! Tidy checks of the source tree: every module says what it owns, the layers stay apart, and
//! ARCHITECTURE.md names every module.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    for f in rust_files(&src()) {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} must start with a //! line saying what it owns",
            f.display()
        );
    }
}

#[test]
fn layers_stay_apart() {
    for f in rust_files(&src()) {
        let rel = f
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        let lower = ["content/", "store/", "blob/"]
            .iter()
            .any(|p| rel.starts_with(p));
        if lower {
            assert!(
                !text.contains("crate::http"),
                "{rel}: the content and storage layers must not use crate::http"
            );
            assert!(
                !text.contains("axum"),
                "{rel}: the content and storage layers must not use HTTP types"
            );
        }
        if !rel.starts_with("store/") {
            assert!(!text.contains("rusqlite"), "{rel}: SQL stays inside store/");
        }
        if !rel.starts_with("cli/") && rel != "main.rs" {
            assert!(
                !text.contains("anyhow"),
                "{rel}: anyhow belongs to the binary's edge (cli/, main.rs)"
            );
        }
    }
}

#[test]
fn architecture_md_names_every_module() {
    let arch =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    for f in rust_files(&src()) {
        let rel = f
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let module = rel.trim_end_matches(".rs").trim_end_matches("/mod");
        if module == "main" || module == "lib" {
            continue;
        }
        assert!(
            arch.contains(&format!("`{module}`")),
            "ARCHITECTURE.md does not mention `{module}`"
        );
    }
}

/// The source of `f` up to its unit tests (which may reach anywhere).
fn code_of(f: &Path) -> String {
    let text = std::fs::read_to_string(f).unwrap();
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The top-level module a file belongs to (`http/api/mod.rs` → `http`, `kube/config.rs` → `kube`).
fn top_module(f: &Path) -> String {
    let rel = f
        .strip_prefix(src())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    rel.split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_owned()
}

/// The berth modules a file names through `crate::` paths.
fn crate_imports(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let name: String = text[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The layer rules of ARCHITECTURE.md ("Layers"): each top-level module may import only the
/// modules listed for it (the crate root's `cli_print`/`cli_eprint` aside); `cli` may import
/// anything and nothing imports `cli`.
#[test]
fn the_layer_rules_hold() {
    let allowed: &[(&str, &[&str])] = &[
        ("types", &[]),
        ("kube", &[]),
        ("policy", &["types"]),
        ("metrics", &[]),
        ("telemetry", &[]),
        ("store", &["types"]),
        ("blob", &["store", "types"]),
        ("content", &["store", "blob", "types"]),
        ("iam", &["policy", "store", "types"]),
        ("auth", &["iam", "policy", "store", "types"]),
        ("config", &["store", "blob"]),
        ("client", &[]),
        (
            "state",
            &[
                "auth", "blob", "config", "content", "iam", "metrics", "store",
            ],
        ),
        (
            "http",
            &[
                "auth", "blob", "config", "content", "iam", "kube", "metrics", "policy", "state",
                "store", "types",
            ],
        ),
        ("server", &["config", "content", "http", "state", "store"]),
    ];
    let mut checked = 0;
    for f in rust_files(&src()) {
        let top = top_module(&f);
        if ["cli", "main", "lib"].contains(&top.as_str()) {
            continue;
        }
        let Some((_, ok)) = allowed.iter().find(|(m, _)| *m == top) else {
            panic!(
                "{top}: a new top-level module needs its row in the layer rules here and in ARCHITECTURE.md"
            );
        };
        for m in crate_imports(&code_of(&f)) {
            if m == top || m == "cli_print" || m == "cli_eprint" {
                continue;
            }
            assert!(
                ok.contains(&m.as_str()),
                "{}: `{top}` may not import `{m}` (layer rules in ARCHITECTURE.md)",
                f.display()
            );
        }
        checked += 1;
    }
    assert!(checked > 50, "only {checked} files checked");
}

/// No circle between the files of `cli/`: the command files share `common` and `errors`, which
/// import none of them; only `mod.rs` (the dispatch) imports every command file.
#[test]
fn cli_files_import_no_circle() {
    let dir = src().join("cli");
    let names: Vec<String> = rust_files(&dir)
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "mod")
        .collect();
    let mut edges: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for n in &names {
        let text = code_of(&dir.join(format!("{n}.rs")));
        let deps: Vec<String> = names
            .iter()
            .filter(|m| {
                *m != n
                    && (text.contains(&format!("super::{m}::"))
                        || text.contains(&format!("super::{m};")))
            })
            .cloned()
            .collect();
        edges.insert(n.clone(), deps);
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &str,
        edges: &std::collections::BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) {
        if done.contains(n) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == n) {
            panic!("import circle in cli/: {} -> {n}", path[i..].join(" -> "));
        }
        path.push(n.to_owned());
        for d in &edges[n] {
            visit(d, edges, path, done);
        }
        path.pop();
        done.insert(n.to_owned());
    }
    let mut done = Default::default();
    for n in &names {
        visit(n, &edges, &mut Vec::new(), &mut done);
    }
    // The shared files import no command file.
    for shared in ["common", "errors", "context", "output"] {
        let deps = &edges[shared];
        assert!(
            deps.iter()
                .all(|d| ["context", "output", "errors"].contains(&d.as_str())),
            "cli/{shared}.rs imports {deps:?}"
        );
    }
    assert!(
        !src().join("cli/manage.rs").exists(),
        "one file per command group"
    );
}

/// Handlers speak the domain, not the schema: no file under `http` or `auth` names a row type of
/// `store` (`iam::model` and `content` turn rows into the types they take).
#[test]
fn http_and_auth_take_no_store_rows() {
    let store = std::fs::read_to_string(src().join("store/mod.rs")).unwrap();
    let rows: Vec<&str> = store
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub struct "))
        .filter_map(|l| l.split(|c: char| !c.is_alphanumeric() && c != '_').next())
        .filter(|n| n.ends_with("Row"))
        .collect();
    assert!(
        rows.contains(&"CredentialRow") && rows.contains(&"TrustRow") && rows.len() >= 8,
        "the row types of store were not found: {rows:?}"
    );
    let mut checked = 0;
    for dir in ["http", "auth"] {
        for f in rust_files(&src().join(dir)) {
            let code = code_of(&f);
            let words: std::collections::BTreeSet<&str> = code
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .collect();
            for r in &rows {
                assert!(
                    !words.contains(r),
                    "{}: names `store::{r}`; take the `iam` or `content` type instead",
                    f.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} files checked");
}
