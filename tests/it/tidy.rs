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
        ("config", &["store", "blob", "auth"]),
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
        (
            "server",
            &["config", "content", "http", "state", "store", "types"],
        ),
    ];
    let mut checked = 0;
    for f in rust_files(&src()) {
        let top = top_module(&f);
        // `fuzzing` is, like `cli`, an edge: the fuzz targets' entry points, imported by nothing.
        if ["cli", "main", "lib", "fuzzing"].contains(&top.as_str()) {
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
    let store = std::fs::read_to_string(src().join("store/model.rs")).unwrap();
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

/// The module path of a source file: `src/http/api/mod.rs` → `["http", "api"]`, `src/lib.rs` → `[]`.
fn module_path(f: &Path) -> Vec<String> {
    let rel = f.strip_prefix(src()).unwrap().with_extension("");
    let mut segs: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
        segs.pop();
    }
    segs
}

/// Every path a use-tree names, with braces expanded: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand_use_tree(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim().trim_start_matches("::").trim();
    if let Some(inner) = tree.strip_prefix('{') {
        let inner = &inner[..inner.rfind('}').unwrap_or(inner.len())];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use_tree(prefix, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_use_tree(prefix, &inner[start..], out);
        return;
    }
    let end = tree
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(tree.len());
    let (name, rest) = tree.split_at(end);
    if name.is_empty() {
        out.push(prefix.to_vec());
        return;
    }
    let mut next = prefix.to_vec();
    next.push(name.to_owned());
    if rest.trim_start().starts_with("::") {
        expand_use_tree(&next, rest, out);
    } else {
        out.push(next);
    }
}

/// The module paths a file's code names through `crate::`, `super::` and `self::`.
fn named_paths(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for head in ["crate::", "super::", "self::"] {
        for (i, _) in code.match_indices(head) {
            let before = if i == 0 { b' ' } else { bytes[i - 1] };
            if before.is_ascii_alphanumeric() || before == b'_' || before == b':' || before == b'$'
            {
                continue;
            }
            // The path runs to the end of a use-tree or of the identifiers after the head.
            let mut rest = &code[i + head.len()..];
            let mut base: Vec<String> = match head {
                "crate::" => Vec::new(),
                "super::" => me[..me.len().saturating_sub(1)].to_vec(),
                _ => me.to_vec(),
            };
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            let mut depth = 0;
            let end = rest
                .char_indices()
                .find(|&(_, c)| match c {
                    '{' => {
                        depth += 1;
                        false
                    }
                    '}' if depth > 0 => {
                        depth -= 1;
                        false
                    }
                    c if depth > 0 => c == ';',
                    c => !(c.is_alphanumeric() || c == '_' || c == ':'),
                })
                .map_or(rest.len(), |(j, _)| j);
            expand_use_tree(&base, &rest[..end], &mut out);
        }
    }
    out
}

/// No circle between the files of the crate: a parent declares its children, so a child names
/// nothing of its parent's file; shared types live in a file of their own (`store/error.rs`,
/// `http/api/common.rs`, `http/console/session.rs` …). Paths are resolved to the deepest file
/// they reach, as the module tree lays files out.
#[test]
fn no_file_imports_in_a_circle() {
    use std::collections::{BTreeMap, BTreeSet};
    let files: BTreeMap<Vec<String>, PathBuf> = rust_files(&src())
        .into_iter()
        .filter(|f| !f.ends_with("main.rs"))
        .map(|f| (module_path(&f), f))
        .collect();
    let file_of = |path: &[String]| {
        (0..=path.len())
            .rev()
            .find_map(|n| files.get(&path[..n]).cloned())
    };
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (me, f) in &files {
        let code = code_of(f);
        let mut to = BTreeSet::new();
        // A parent reaches each child it declares.
        for line in code.lines() {
            let l = line.trim();
            if let Some(name) = l
                .strip_prefix("mod ")
                .or_else(|| l.strip_prefix("pub mod "))
                .or_else(|| l.strip_prefix("pub(crate) mod "))
                .or_else(|| l.strip_prefix("pub(super) mod "))
                .and_then(|r| r.strip_suffix(';'))
            {
                let mut child = me.clone();
                child.push(name.to_owned());
                to.extend(files.get(&child).cloned());
            }
        }
        // A path that stops at the crate root names a macro exported there (`crate::cli_print!`):
        // `lib.rs` declares the top-level modules and holds nothing else.
        for p in named_paths(&code, me) {
            to.extend(file_of(&p).filter(|t| t != f && t != &files[&Vec::new()]));
        }
        edges.insert(f.clone(), to);
    }
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 150,
        "too few imports found: the resolver is broken"
    );
    // A circle exists iff some file reaches itself.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(PathBuf, Vec<PathBuf>)> = edges[start]
            .iter()
            .map(|n| (n.clone(), vec![start.clone(), n.clone()]))
            .collect();
        while let Some((n, trail)) = stack.pop() {
            if &n == start {
                let names: Vec<String> = trail
                    .iter()
                    .map(|p| p.strip_prefix(src()).unwrap().display().to_string())
                    .collect();
                panic!("an import circle: {}", names.join(" → "));
            }
            if !seen.insert(n.clone()) {
                continue;
            }
            for m in edges.get(&n).into_iter().flatten() {
                let mut t = trail.clone();
                t.push(m.clone());
                stack.push((m.clone(), t));
            }
        }
    }
}
