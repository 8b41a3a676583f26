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
