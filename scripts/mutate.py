#!/usr/bin/env python3
"""Breaks one rule at a time and checks that the suite notices.

Each mutation (scripts/mutations/*.json: id, rule, file, old, new, test) is a text replacement
in a scratch copy of the tree (a git worktree of HEAD, so the working tree is never touched),
applied alone; the named tests run against the mutated build; "caught" means they failed.

    python3 scripts/mutate.py                 # every mutation
    python3 scripts/mutate.py M3 M17          # some
    MUTATE_TARGET=/path python3 scripts/mutate.py   # reuse a build directory between runs
    MUTATE_TREE=/path python3 scripts/mutate.py     # reuse a scratch worktree (moved to HEAD)
    bash scripts/with-engines.sh python3 scripts/mutate.py SB1   # a rule of the scaled-out stores

Prints one line per mutation (id, caught/MISSED, the test, the first failing assertion) and
exits 1 when any was missed. The scratch worktree is removed at the end.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True).stdout.strip()
mutations = []
for f in sorted(glob.glob(os.path.join(root, "scripts/mutations/*.json"))):
    mutations += json.load(open(f))
only = sys.argv[1:]
scratch = tempfile.mkdtemp(prefix="berth-mutate-")
head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
tree = os.environ.get("MUTATE_TREE")
own_tree = tree is None
if own_tree:
    tree = os.path.join(scratch, "tree")
    subprocess.run(["git", "-C", root, "worktree", "add", "-q", "--detach", tree, head], check=True)
else:
    # A run that was interrupted may have left a mutation behind: start clean.
    subprocess.run(["git", "-C", tree, "checkout", "-q", "--", "."], check=True)
    subprocess.run(["git", "-C", tree, "checkout", "-q", "--detach", head], check=True)
# The npm packages the tests run (not in git): the scratch tree uses the working tree's.
for d in ("tests/console", "tests/oidc"):
    src, dst = os.path.join(root, d, "node_modules"), os.path.join(tree, d, "node_modules")
    if os.path.isdir(src) and not os.path.exists(dst):
        os.symlink(src, dst)
env = dict(os.environ, CARGO_TARGET_DIR=os.environ.get("MUTATE_TARGET", os.path.join(scratch, "target")))
# The engines scripts/with-engines.sh names are for "scaled" mutations only: the others run on
# SQLite and files, as the suite's first run.
engines = {k: env.pop(k) for k in ("BERTH_TEST_DATABASE_URL", "BERTH_TEST_S3_ENDPOINT") if k in env}
missed = 0
try:
    for m in mutations:
        if only and m["id"] not in only:
            continue
        path = os.path.join(tree, m["file"])
        text = open(path).read()
        if text.count(m["old"]) != 1:
            print(f'{m["id"]}\tSTALE\t{m["file"]}: the text to break is not there exactly once', flush=True)
            missed += 1
            continue
        # "pass": "scaled": the test runs on PostgreSQL and S3, as the suite's second run
        # (engines from scripts/with-engines.sh).
        run_env = env
        if m.get("pass") == "scaled":
            if len(engines) != 2:
                print(f'{m["id"]}\tNEEDS-ENGINES\trun under scripts/with-engines.sh', flush=True)
                missed += 1
                continue
            run_env = dict(env, BERTH_TEST_PASS="scaled", **engines)
        open(path, "w").write(text.replace(m["old"], m["new"]))
        try:
            r = subprocess.run(["cargo", "nextest", "run", "--no-fail-fast", "-E", f'test(/{m["test"]}/)'],
                               cwd=tree, env=run_env, capture_output=True, text=True)
            out = r.stdout + r.stderr
            if "could not compile" in out:
                verdict, why = "BUILD-ERROR", ""
            elif r.returncode != 0 and "FAIL [" in out:
                verdict = "caught"
                why = next((l.strip() for l in out.splitlines() if "panicked at" in l), "")
            else:
                verdict, why = "MISSED", ""
                missed += 1
            print(f'{m["id"]}\t{verdict}\t{m["test"]}\t{why}', flush=True)
        finally:
            open(path, "w").write(text)
finally:
    if own_tree:
        subprocess.run(["git", "-C", root, "worktree", "remove", "--force", tree])
sys.exit(1 if missed else 0)
