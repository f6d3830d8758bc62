//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and
//! the stable smoke run in the normal test command (`tests/fuzz_smoke.rs`,
//! which includes this file with `#[path]`). Every function takes arbitrary
//! bytes and must never panic; the asserts are properties that hold for any
//! input.
#![allow(dead_code)]

use bytes::BytesMut;
use thaw::rules::{Captures, Plan, PlanContext, RuleSet};
use thaw::wire::caps;
use thaw::wire::compress::{self, Codec, Framing};
use thaw::wire::packets;
use thaw::wire::response::{Expect, Response};

/// The shipped billing rules, as text (a loader seed).
pub const BILLING_YAML: &str = include_str!("../rules/billing.yaml");

/// The legacy app's trace, one statement per item (comments dropped), as
/// `src/rules/tests.rs` splits it.
pub fn legacy_statements() -> Vec<String> {
    include_str!("../src/rules/testdata/legacy-app-trace.sql")
        .split(";\n")
        .map(|s| s.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join("\n"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The shipped `rules/` folder, loaded as `thaw run --rules rules/` loads it.
/// `repo` is the repository root.
pub fn shipped_rules(repo: &str) -> RuleSet {
    let rules = RuleSet::load(&std::path::Path::new(repo).join("rules")).expect("the shipped rules load");
    assert!(!rules.is_empty(), "the shipped rules are not empty");
    rules
}

// ------------------------------------------------------------------ packets

/// lenenc, OK, ERR and terminator parsers, and the two handshake patchers,
/// on the same bytes.
pub fn packets(data: &[u8]) {
    if let Some((v, used)) = packets::lenenc_int(data) {
        assert!((1..=9).contains(&used) && used <= data.len());
        let mut out = Vec::new();
        packets::put_lenenc_int(&mut out, v);
        // Non-minimal encodings parse too; re-encoding is minimal and reads back.
        assert!(out.len() <= used);
        assert_eq!(packets::lenenc_int(&out), Some((v, out.len())));
    }
    if let Some((s, used)) = packets::lenenc_str(data) {
        assert!(used <= data.len());
        if let Some(s) = s {
            assert!(s.len() <= used);
        }
    }
    for session_track in [false, true] {
        let _ = packets::parse_ok(data, session_track);
    }
    if let Some(e) = packets::parse_err(data) {
        assert!(e.message.len() < data.len());
    }
    for deprecate_eof in [false, true] {
        let _ = packets::terminator_status(data, deprecate_eof);
        let _ = packets::status_of(data, deprecate_eof);
    }
    let _ = packets::is_terminator(data);

    let mut g = data.to_vec();
    if caps::patch_greeting(&mut g).is_ok() {
        assert_eq!(g.len(), data.len(), "the greeting is patched in place");
    }
    let mut h = data.to_vec();
    if let Ok(hello) = caps::patch_client_response(&mut h) {
        assert_eq!(h.len(), data.len(), "the handshake response is patched in place");
        assert_eq!(hello.caps & caps::MASKED, 0);
    }
}

// ------------------------------------------------------------------ response

/// The packets of a response: each item is a 1-byte length then that many
/// bytes (a length byte of 0xFF takes a 2-byte little-endian length).
pub fn split_packets(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&n, rest)) = data.split_first() {
        let (len, rest) = if n == 0xFF {
            match rest {
                [a, b, tail @ ..] => (u16::from_le_bytes([*a, *b]) as usize, tail),
                _ => break,
            }
        } else {
            (n as usize, rest)
        };
        let len = len.min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

const EXPECTS: [Expect; 7] =
    [Expect::Query, Expect::Execute, Expect::Prepare, Expect::Fetch, Expect::FieldList, Expect::OnePacket, Expect::Statistics];

/// The first byte picks the command's response shape; the rest are packets
/// (see [`split_packets`]), fed to the state machine in both EOF modes.
pub fn response(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let expect = EXPECTS[sel as usize % EXPECTS.len()];
    let pk = split_packets(rest);
    for deprecate_eof in [false, true] {
        feed_all(expect, deprecate_eof, &pk);
    }
}

pub fn feed_all(expect: Expect, deprecate_eof: bool, pk: &[&[u8]]) {
    let mut r = Response::new(expect, deprecate_eof);
    for p in pk {
        let was_done = r.is_done();
        match r.feed(p) {
            Ok(step) => {
                assert!(!was_done, "a packet after the end was accepted");
                assert_eq!(step.done, r.is_done(), "Step::done agrees with is_done()");
            }
            Err(_) => {
                // A malformed packet ends the connection; nothing more is fed.
                return;
            }
        }
    }
}

// ------------------------------------------------------------------ planner

/// Values a capture takes when the input gives none: what the legacy app
/// reads, and a few awkward numbers.
const VALUES: [Option<&str>; 12] = [
    Some("8"),
    Some("bob"),
    Some("5000"),
    Some("616"),
    Some("2024-01-01 00:00:00"),
    None,
    Some("-0.5e3"),
    Some("99999999999999999999999999999999999999999999999999999999999999999"),
    Some(" 1"),
    Some("1232.00"),
    Some("-0"),
    Some(""),
];

/// A session's sequence of statements through the prefilter, the planner and
/// the statement classifier, against `rules`.
///
/// Byte 0 sets the connection's modes (NO_BACKSLASH_ESCAPES, ANSI_QUOTES, in
/// a transaction, SIMULTANEOUS_ASSIGNMENT known/on, a schema, folded names).
/// The rest is split at NUL bytes: each piece is a statement, except a piece
/// that starts with `=`, which gives the values (separated by 0x1F, 0x1E for
/// NULL) of the row the last unlocked read returned. An unlocked read with no
/// such piece gets values from a fixed pool, so rewrites of later writes see
/// a captured row.
pub fn plan_session(rules: &RuleSet, data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut captures = Captures::default();
    captures.fold_case = flags & 0x80 != 0;
    let mut pending: Pending = None;
    for (i, piece) in rest.split(|&b| b == 0).enumerate() {
        if let Some(values) = piece.strip_prefix(b"=") {
            if let Some((spec, names)) = pending.take() {
                let vals: Vec<Option<&[u8]>> = values.split(|&b| b == 0x1F).map(|v| (v != [0x1E]).then_some(v)).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                captures.record_row(&spec, &names, &vals);
            }
            continue;
        }
        if let Some((spec, names)) = pending.take() {
            let vals: Vec<Option<&[u8]>> =
                (0..names.len()).map(|c| VALUES[(flags as usize + i + c * 7) % VALUES.len()].map(str::as_bytes)).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            captures.record_row(&spec, &names, &vals);
        }
        pending = plan_one(rules, piece, flags, &mut captures);
    }
}

type Pending = Option<(thaw::rules::CaptureSpec, Vec<String>)>;

fn plan_one(rules: &RuleSet, sql: &[u8], flags: u8, captures: &mut Captures) -> Pending {
    let modes = Default::default();
    let class = thaw::sql::classify(sql, modes);
    let _ = thaw::sql::tx_control(sql);
    let text = String::from_utf8_lossy(sql);
    let _ = rules.is_candidate(&text);
    let _ = thaw::rules::fingerprint(&text);
    let ctx = PlanContext {
        no_backslash_escapes: flags & 0x01 != 0,
        ansi_quotes: flags & 0x02 != 0,
        in_transaction: flags & 0x04 != 0,
        simultaneous_assignment: match flags & 0x18 {
            0x00 => None,
            0x08 => Some(false),
            _ => Some(true),
        },
        captures,
        schema: (flags & 0x20 != 0).then_some("billing"),
    };
    let plan = rules.plan(&text, &ctx);
    let _ = thaw::rules::safety::window_gate(rules, &plan, &class, captures);
    match plan {
        Plan::Rewrite(rw) => {
            assert!(!rw.sql.is_empty());
            captures.apply(&rw.on_success);
            let spec = rw.capture?;
            let mut names = vec![spec.key_column.clone()];
            names.extend(spec.columns.iter().cloned());
            Some((spec, names))
        }
        Plan::Forward | Plan::Unhandled { .. } | Plan::Reject { .. } => None,
    }
}

/// The fuzz input format for one statement list: statements joined by NUL
/// after a flags byte, ready for [`plan_session`].
pub fn session_input(flags: u8, statements: &[&str]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(statements.join("\0").as_bytes());
    out
}

// ------------------------------------------------------------------ loaders

/// Rule files and the process config from the same text. A rule set that
/// loads is planned against the legacy statements, and checked.
pub fn loaders(data: &[u8], probe: &[String]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(rules) = RuleSet::from_yaml(&text, "fuzz.yaml") {
        let _ = thaw::rules::check(&rules);
        for t in rules.tables() {
            let _ = t.columns_referenced();
            let _ = rules.sample_guarded_update(&t.table);
        }
        let captures = Captures::default();
        let ctx = PlanContext {
            no_backslash_escapes: false,
            ansi_quotes: false,
            in_transaction: true,
            simultaneous_assignment: Some(false),
            captures: &captures,
            schema: None,
        };
        for s in probe {
            let _ = rules.plan(s, &ctx);
        }
    }
    if let Ok(cfg) = thaw::config::Config::parse(&text, "fuzz.yaml") {
        assert!(cfg.validate().is_ok(), "a parsed config is valid");
    }
}

// ------------------------------------------------------------------ compressed frames

/// Wire bytes from a peer on a compressed leg, hostile or not. The first
/// byte picks how much is inflated per call. Inflating never panics, never
/// hands out more than asked, and never more than the frames' headers state
/// (16 MiB at most per 7 header bytes); what inflated deflates again and
/// reads back the same.
pub fn compressed(data: &[u8]) {
    let Some((&pick, wire)) = data.split_first() else { return };
    let max = 1 + pick as usize * 97;
    let mut z = Codec::new(compress::DEFAULT_LEVEL, Framing::Pieces, None);
    z.raw.extend_from_slice(wire);
    let mut plain = BytesMut::new();
    let bound = (wire.len() / compress::HEADER + 1) * compress::MAX_PLAIN;
    while let Ok(n) = z.inflate(&mut plain, max) {
        if n == 0 {
            break;
        }
        assert!(n <= max, "{n} bytes handed out, {max} asked for");
        assert!(plain.len() <= bound, "more than the headers state");
        if plain.len() > 1 << 20 {
            return; // a bomb that keeps its word: bounded, and enough checked
        }
    }
    // Both ways of writing: whole runs, and pieces fed into an open frame.
    let mut w = Codec::new(1, Framing::Packets, None);
    w.deflate(&[&plain[..plain.len() / 3], &plain[plain.len() / 3..plain.len() / 2]]);
    w.feed(&[&plain[plain.len() / 2..]]);
    w.close();
    let mut r = Codec::new(1, Framing::Pieces, None);
    r.raw.extend_from_slice(&w.wire);
    let mut back = BytesMut::new();
    while r.inflate(&mut back, 1 << 16).expect("thaw's own frames inflate") > 0 {}
    assert!(back == plain, "deflate then inflate is the identity");
    assert!(!r.mid_frame());
}

// ------------------------------------------------------------------ seeds

/// Well-formed packets: OK (plain, 0xFE, with info), ERR (with and without a
/// SQLSTATE, a progress report), EOF, a MariaDB greeting, a handshake
/// response, lenenc integers of every width.
pub fn packet_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        vec![0x00, 0x01, 0x00, 0x03, 0x40, 0x00, 0x00],
        vec![0xFE, 0x00, 0xFC, 0x10, 0x27, 0x02, 0x00, 0x00, 0x00],
        vec![0xFE, 0x00, 0x00, 0x0A, 0x00],
        vec![0xFF, 0x10, 0x04, b'T', b'o', b'o'],
        vec![0xFF, 0xFF, 0xFF, 1, 1, 0, 0, 0, 5, b's', b't', b'a', b'g', b'e'],
        packets::build_err(1205, "HY000", "Lock wait timeout exceeded; try restarting transaction"),
        vec![0xFB],
        vec![0xFC, 0xFF, 0xFF],
        vec![0xFD, 1, 2, 3],
        vec![0xFE, 1, 2, 3, 4, 5, 6, 7, 8],
        vec![2, b'h', b'i'],
    ];
    let mut ok = vec![0x00, 0x01, 0x00, 0x03, 0x40, 0x00, 0x00];
    ok.extend_from_slice(b"Rows matched: 1  Changed: 1  Warnings: 0");
    out.push(ok);
    let mut ok_track = vec![0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00];
    ok_track.extend_from_slice(&[0x05, 0x00, 0x03, 0x00, 0x01, b'x']);
    out.push(ok_track);
    out.push(greeting(0xF7FF_FFFF & !caps::CLIENT_MYSQL, 0x3F));
    out.push(greeting(0xF7FF_FFFF, 0));
    out.push(client_response(caps::PLUGIN_AUTH_LENENC | caps::SECURE_CONNECTION | caps::CONNECT_WITH_DB, &[3, 1, 2, 3]));
    out.push(client_response(caps::SECURE_CONNECTION | caps::CONNECT_WITH_DB, &[3, 1, 2, 3]));
    out.push(client_response(caps::CONNECT_WITH_DB, b"pw\0"));
    out
}

pub fn greeting(caps: u32, ext: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"5.5.5-10.11.19-MariaDB\0");
    p.extend_from_slice(&42u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&ext.to_le_bytes());
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    p
}

/// A HandshakeResponse41 for user `root`, schema `billing`, with `auth` as
/// the auth response bytes (its length prefix included when the flags want one).
pub fn client_response(flags: u32, auth: &[u8]) -> Vec<u8> {
    let caps = flags | 0x0200; // CLIENT_PROTOCOL_41
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1, 45]);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"root\0");
    p.extend_from_slice(auth);
    p.extend_from_slice(b"billing\0mysql_native_password\0");
    p
}

/// Encode packets for [`response`] (after the selector byte).
pub fn frame(selector: u8, pk: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![selector];
    for p in pk {
        if p.len() < 0xFF {
            out.push(p.len() as u8);
        } else {
            out.push(0xFF);
            out.extend_from_slice(&(p.len().min(0xFFFF) as u16).to_le_bytes());
        }
        out.extend_from_slice(&p[..p.len().min(0xFFFF)]);
    }
    out
}

/// Responses of every shape, in the layout [`response`] reads: selector
/// (index into the `Expect` list) then packets.
pub fn response_seeds() -> Vec<Vec<u8>> {
    const EOF_MORE: &[u8] = &[0xFE, 0, 0, 0x0A, 0];
    const EOF_LAST: &[u8] = &[0xFE, 0, 0, 0x02, 0];
    const EOF_CURSOR: &[u8] = &[0xFE, 0, 0, 0x42, 0];
    const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];
    const FE_OK: &[u8] = &[0xFE, 0, 0, 0x02, 0, 0, 0];
    let err = packets::build_err(1317, "70100", "Query execution was interrupted");
    let progress: &[u8] = &[0xFF, 0xFF, 0xFF, 1, 1, 0, 0, 0, 5, b's', b't', b'a', b'g', b'e'];
    let prep = [0, 7, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0];
    vec![
        frame(0, &[&[1], b"coldef", EOF_LAST, b"\x01a", EOF_MORE, OK]),
        frame(0, &[&[2], b"c1", b"c2", &[0, 0, 1, 2], FE_OK]),
        frame(0, &[&[1], b"c", EOF_LAST, b"\x01a", &err]),
        frame(0, &[progress, b"\xFBdata.csv", &[0, 3, 0, 2, 0, 0, 0]]),
        frame(0, &[OK]),
        frame(0, &[&err]),
        frame(1, &[&[1], b"c", EOF_CURSOR]),
        frame(1, &[&[2], b"c1", b"c2", &[0, 0, 1, 2], &[0, 0, 3, 4], FE_OK]),
        frame(2, &[&prep, b"p", EOF_LAST, b"c1", b"c2", EOF_LAST]),
        frame(2, &[&prep, b"p", b"c1", b"c2"]),
        frame(2, &[&[0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]),
        frame(3, &[&[0, 0, 1], &[0xFE, 0, 0, 0x82, 0]]),
        frame(4, &[b"c1", b"c2", EOF_LAST]),
        frame(5, &[EOF_LAST]),
        frame(5, &[OK]),
        frame(6, &[b"Uptime: 5"]),
    ]
}

/// Sessions for the planner: the legacy trace in order (with the row the
/// app read), and the shapes of the rules tests.
pub fn plan_seeds() -> Vec<Vec<u8>> {
    let legacy = legacy_statements();
    let mut trace: Vec<&str> = Vec::new();
    for s in &legacy {
        trace.push(s);
        if s.contains("FOR UPDATE") {
            trace.push("=8\x1fbob\x1f5000\x1f616\x1f2024-01-01 00:00:00");
        }
    }
    let mut out = vec![session_input(0x0C, &trace), session_input(0x04, &trace), session_input(0x1F, &trace)];
    for s in &legacy {
        out.push(session_input(0x0C, &[s]));
    }
    let shapes: &[&[&str]] = &[
        &["SELECT * FROM users WHERE id = 8 FOR UPDATE", "=8\x1f5000\x1f616", "UPDATE users SET frozen_balance = 1232 WHERE id = 8"],
        &[
            "SELECT balance, frozen_balance FROM users WHERE id = '8' LOCK IN SHARE MODE",
            "UPDATE users SET balance = balance - 5 WHERE id = 8",
        ],
        &["SELECT * FROM users WHERE id IN (1, 2) FOR UPDATE", "DELETE FROM users WHERE id = 1"],
        &[
            "SELECT * FROM billing.users WHERE users.id = 8 FOR UPDATE NOWAIT",
            "UPDATE billing.users SET balance = 1.5e3, updated_at = now() WHERE id = 8 ORDER BY id LIMIT 1",
        ],
        &["SELECT * FROM users WHERE id = 8 FOR UPDATE; UPDATE users SET balance = 1 WHERE id = 8"],
        &["UPDATE users SET frozen_balance = CASE WHEN balance > 0 THEN 1 ELSE 0 END WHERE id = 8"],
        &["SELECT * FROM conversations WHERE id = 3 FOR UPDATE", "INSERT INTO users (id) VALUES (9) ON DUPLICATE KEY UPDATE balance = 0"],
        &["/*!50000 SELECT * FROM users WHERE id = 8 FOR UPDATE */", "SELECT \"id\" FROM users WHERE \"id\" = 8 FOR UPDATE"],
        &["SELECT * FROM users WHERE id = 8 AND note = 'a\\'b' FOR UPDATE", "UPDATE users SET balance = x'10' || 1 WHERE id = 8"],
        &["BEGIN", "SELECT * FROM users WHERE id = 8 FOR UPDATE", "CALL p()", "COMMIT"],
    ];
    for s in shapes {
        out.push(session_input(0x0C, s));
    }
    out
}

/// Rule files and configs, valid and near-valid.
pub fn loader_seeds() -> Vec<Vec<u8>> {
    let texts: &[&str] = &[
        BILLING_YAML,
        "",
        "tables: []\n",
        "tables:\n  - table: t\n    key: id\n    invariants: [\"a - b >= 0\", \"b >= 0\"]\n    balance_columns: [a, b]\n    cas_columns: [c]\n    last_writer_wins: [updated_at]\n    trigger_tables: [ledger]\n    views: [v_t]\n    violation: { pass_through: true }\n    unhandled: reject\n    statements: [\"SELECT ... FROM t WHERE t.id = ? FOR UPDATE\", \"UPDATE t SET a = ? WHERE id = ?\"]\n",
        "tables:\n  - table: t\n    key: id\n    invarint: [x]\n",
        "listen: 0.0.0.0:4000\nbackend_tls:\n  mode: required\n  ca_file: /etc/ca.pem\n  verify_identity: true\nretry:\n  attempts: 5\n  errors: [1205, 1213]\n",
        "backend: db:3306\nlog:\n  format: json\n  level: info\n  redact_literals: false\nshutdown_grace_secs: 25\nmax_packet_bytes: 1024\nprobe:\n  user: thaw_probe\n  password: x\n",
        "retry:\n  backoff_base_ms: 900\n  backoff_cap_ms: 10\n",
    ];
    texts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

/// Compressed wire bytes: a stored frame, a compressed one, frames split
/// mid-packet, and the lies (stated too long or too short, trailing bytes).
pub fn compressed_seeds() -> Vec<Vec<u8>> {
    let frames = |parts: &[&[u8]]| {
        let mut z = Codec::new(compress::DEFAULT_LEVEL, Framing::Pieces, None);
        for p in parts {
            z.deflate(&[p]);
        }
        z.wire
    };
    let rows: Vec<u8> = (0..5000u32).flat_map(|i| format!("row {i} billing EUR;").into_bytes()).collect();
    let ping = frames(&[b"\x01\x00\x00\x00\x0e"]);
    let query = frames(&[&rows]);
    let mut out = vec![ping.clone(), query.clone(), frames(&[&rows[..10_000], &rows[10_000..]])];
    let mut overstated = query.clone();
    overstated[4..7].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    let mut understated = query.clone();
    understated[4..7].copy_from_slice(&[100, 0, 0]);
    let mut trailing = query.clone();
    trailing.extend_from_slice(b"junk");
    let len = (trailing.len() - compress::HEADER) as u32;
    trailing[0..3].copy_from_slice(&len.to_le_bytes()[..3]);
    let zeros = frames(&[&[0u8; 60_000]]);
    out.extend([overstated, understated, trailing, zeros, query[..query.len() / 2].to_vec()]);
    // The first byte of an input picks the inflate chunk.
    out.into_iter().enumerate().map(|(i, s)| [&[(i as u8).wrapping_mul(40)][..], &s].concat()).collect()
}
