//! A short randomized smoke run of the fuzz targets' inputs on stable Rust,
//! inside the normal `cargo test`: the same entry points as `fuzz/` (the
//! harness is shared), fed the seeds and a few thousand seeded mutations of
//! them. A failure prints the seed and the input; rerun one seed with
//! `THAW_SMOKE_SEED=<n> cargo test --test fuzz_smoke`. The long runs are
//! `scripts/fuzz.sh` (cargo-fuzz, nightly).
//!
//! `THAW_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_smoke write_seed_corpus`
//! rewrites the seed corpus in `fuzz/seeds/` from the harness.
#[path = "../fuzz/harness.rs"]
mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};

/// SplitMix64: tiny, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Bytes and tokens that matter to the parsers: packet headers, lenenc
/// prefixes, SQL keywords and punctuation.
const DICT: &[&[u8]] = &[
    &[0x00],
    &[0xFB],
    &[0xFC],
    &[0xFD],
    &[0xFE],
    &[0xFF],
    &[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
    &[0xFF, 0xFF, 0xFF],
    b"#",
    b"'",
    b"\"",
    b"`",
    b"\\",
    b";",
    b"\0",
    b"=",
    b"(",
    b")",
    b"?",
    b"/*!",
    b"*/",
    b"-- ",
    b" FOR UPDATE",
    b" LOCK IN SHARE MODE",
    b" SKIP LOCKED",
    b"UPDATE users SET ",
    b"SELECT * FROM users WHERE id = ",
    b" WHERE id = 8",
    b"frozen_balance",
    b"balance",
    b"1e308",
    b"-99999999999999999999999999999999999999999999999999999999999999999.5",
    b"0x1F",
    b"NULL",
    b"||",
    b"\n  - ",
    b": ",
    b"[",
    b"]",
    b"{",
    b"}",
    b"&a ",
    b"*a",
    b"!!",
    b"tables:\n",
    b"table: ",
    b"invariants:",
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.byte();
            }
            2 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.byte());
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below(8.min(v.len() - i));
                v.drain(i..i + n);
            }
            4 => {
                let i = rng.below(v.len() + 1);
                let d = DICT[rng.below(DICT.len())];
                v.splice(i..i, d.iter().copied());
            }
            5 if !v.is_empty() => {
                // Duplicate a chunk (repetition, deep nesting).
                let i = rng.below(v.len());
                let n = 1 + rng.below(16.min(v.len() - i));
                let chunk: Vec<u8> = v[i..i + n].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            6 if !other.is_empty() => {
                // Splice in a piece of another seed.
                let i = rng.below(other.len());
                let n = 1 + rng.below(32.min(other.len() - i));
                let at = rng.below(v.len() + 1);
                v.splice(at..at, other[i..i + n].iter().copied());
            }
            _ => v.truncate(rng.below(v.len() + 1)),
        }
    }
    v
}

/// Run `f` over every seed, then `n` mutations of random seeds. A panic
/// names the case's seed and the input.
fn smoke(name: &str, seeds: &[Vec<u8>], n: u64, f: impl Fn(&[u8])) {
    let base = std::env::var("THAW_SMOKE_SEED").ok().and_then(|s| s.parse::<u64>().ok());
    let run = |input: &[u8], case: &str| {
        if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
            panic!("{name}: panic on {case}; input (escaped): \"{}\"", input.escape_ascii());
        }
    };
    if base.is_none() {
        for (i, s) in seeds.iter().enumerate() {
            run(s, &format!("seed input {i}"));
        }
    }
    let cases = match base {
        Some(b) => b..b + 1,
        None => 0..n,
    };
    for case in cases {
        let mut rng = Rng(case ^ 0x7468_6177); // "thaw"
        let seed = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let mut input = mutate(&mut rng, seed, other);
        // Sometimes stack mutations.
        while rng.below(4) == 0 {
            input = mutate(&mut rng, &input, other);
        }
        run(&input, &format!("THAW_SMOKE_SEED={case}"));
    }
}

#[test]
fn packets_smoke() {
    let mut seeds = harness::packet_seeds();
    // Every response seed's packets are packets too.
    for r in harness::response_seeds() {
        seeds.extend(harness::split_packets(&r[1..]).into_iter().map(<[u8]>::to_vec));
    }
    smoke("packets", &seeds, 20_000, harness::packets);
}

#[test]
fn response_smoke() {
    smoke("response", &harness::response_seeds(), 20_000, harness::response);
}

#[test]
fn response_big_rows_starting_with_fe() {
    // Rows of 16 MiB and more may start with 0xFE: too big for the mutator,
    // so one run of each shape here.
    use thaw::wire::response::Expect;
    let mut big = vec![0xFE; thaw::wire::conn::MAX_FRAME + 5];
    big[1] = 0;
    for expect in [Expect::Query, Expect::Execute, Expect::Fetch, Expect::FieldList, Expect::OnePacket] {
        for deprecate_eof in [false, true] {
            harness::feed_all(expect, deprecate_eof, &[&[1], b"c", &[0xFE, 0, 0, 2, 0], &big, &big, &[0xFE, 0, 0, 2, 0, 0, 0]]);
        }
    }
}

#[test]
fn plan_smoke() {
    let rules = harness::shipped_rules(env!("CARGO_MANIFEST_DIR"));
    smoke("plan", &harness::plan_seeds(), 2_500, |d| harness::plan_session(&rules, d));
}

#[test]
fn compressed_smoke() {
    smoke("compressed", &harness::compressed_seeds(), 3_000, harness::compressed);
}

#[test]
fn loaders_smoke() {
    let probe = harness::legacy_statements();
    smoke("loaders", &harness::loader_seeds(), 1_500, |d| harness::loaders(d, &probe));
}

/// The auth-response length of a HandshakeResponse41 is the client's to
/// choose (8-byte lenenc): it must not overflow (issue 10).
#[test]
fn client_chosen_auth_length_does_not_overflow() {
    let flags = thaw::wire::caps::PLUGIN_AUTH_LENENC | thaw::wire::caps::CONNECT_WITH_DB;
    for len in [[0xFF; 8], [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], [0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]] {
        let mut auth = vec![0xFE];
        auth.extend_from_slice(&len);
        harness::packets(&harness::client_response(flags, &auth));
    }
}

/// Writes `fuzz/seeds/<target>/` from the harness (only when asked).
#[test]
fn write_seed_corpus() {
    if std::env::var_os("THAW_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let sets = [
        ("packets", harness::packet_seeds()),
        ("response", harness::response_seeds()),
        ("plan", harness::plan_seeds()),
        ("loaders", harness::loader_seeds()),
        ("compressed", harness::compressed_seeds()),
    ];
    for (target, seeds) in sets {
        let dir = root.join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
        }
    }
}
