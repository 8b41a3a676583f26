//! The fuzz targets' corpora, replayed on stable Rust: every committed input of `fuzz/corpus/`
//! and every past finding of `fuzz/regressions/` goes through its target's body (the same
//! function libFuzzer drives, with its oracle), so a change that breaks a parser's rule fails
//! here without the nightly toolchain. Bounded runs of the fuzzers themselves: `scripts/fuzz.sh`.

#[path = "../../fuzz/src/lib.rs"]
#[allow(unreachable_pub, dead_code)]
mod targets;

use std::path::Path;

fn replay(dir: &Path) -> usize {
    let mut n = 0;
    for (name, body) in targets::TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {name} fails on {}",
                path.display()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn every_corpus_input_and_past_finding_passes_its_targets_oracle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = replay(&root.join("corpus"));
    let found = replay(&root.join("regressions"));
    // Every target has a seed corpus.
    for (name, _) in targets::TARGETS {
        let seeds = std::fs::read_dir(root.join("corpus").join(name))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(
            seeds > 0,
            "fuzz target {name} has no corpus in fuzz/corpus/{name}"
        );
    }
    assert!(corpus > 1000, "only {corpus} corpus inputs replayed");
    eprintln!("replayed {corpus} corpus inputs and {found} past findings");
}
