//! Repository globs: `check_glob` bounds every pattern, and `glob_match` agrees with a simple
//! backtracking reference matcher (`*` within a path segment, a run of two or more stars across
//! segments) on small inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Lit(u8),
    Star,
    DStar,
}

fn tokens(glob: &[u8]) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::new();
    let mut i = 0;
    while i < glob.len() {
        if glob[i] == b'*' {
            let mut j = i;
            while j < glob.len() && glob[j] == b'*' {
                j += 1;
            }
            let t = if j - i >= 2 { Tok::DStar } else { Tok::Star };
            match out.last().copied() {
                Some(Tok::Star) if t == Tok::DStar => *out.last_mut().unwrap() = Tok::DStar,
                Some(Tok::Star | Tok::DStar) => {}
                _ => out.push(t),
            }
            i = j;
        } else {
            out.push(Tok::Lit(glob[i]));
            i += 1;
        }
    }
    out
}

fn reference(p: &[Tok], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(Tok::Lit(c)) => s.first() == Some(c) && reference(&p[1..], &s[1..]),
        Some(Tok::Star) => (0..=s.len())
            .take_while(|&k| k == 0 || s[k - 1] != b'/')
            .any(|k| reference(&p[1..], &s[k..])),
        Some(Tok::DStar) => (0..=s.len()).any(|k| reference(&p[1..], &s[k..])),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (glob, name) = (&data[..split], &data[split + 1..]);
    let (Ok(glob), Ok(name)) = (std::str::from_utf8(glob), std::str::from_utf8(name)) else {
        return;
    };
    let bounded = berth::policy::check_glob(glob).is_ok();
    let got = berth::policy::glob_match(glob, name);
    if bounded && glob.len() <= 12 && name.len() <= 24 {
        assert_eq!(
            got,
            reference(&tokens(glob.as_bytes()), name.as_bytes()),
            "{glob:?} against {name:?}"
        );
    }
});
