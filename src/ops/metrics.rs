//! Prometheus metrics, registered once and shared by every session.
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;

/// Connection phases with a deadline (`thaw_handshake_timeouts_total{phase}`).
pub const PHASES: [&str; 5] = ["client_handshake", "backend_greeting", "auth", "tls", "client_tls"];
/// How a backend handshake that the client abandoned ended (`thaw_handshakes_abandoned_total{ending}`):
/// `quit` (logged in as the probe user and sent COM_QUIT: no aborted connect),
/// `auth_failed` (no probe user: a failed login, which the server does not count
/// toward max_connect_errors), `dropped` (could not finish it).
pub const ENDINGS: [&str; 3] = ["quit", "auth_failed", "dropped"];
/// The two legs of a connection (`thaw_compressed_*{leg}`).
pub const LEGS: [&str; 2] = ["client", "backend"];

pub struct Metrics {
    registry: Registry,
    pub connections_open: Gauge,
    pub connections_total: Counter,
    pub backend_connect_failures: Counter,
    /// `backend_tls: preferred` connections that went on in plain text.
    pub backend_tls_fallbacks: Counter,
    /// Client connections answered with 1040 because `max_connections` were open.
    pub connections_refused: Counter,
    /// Failed accepts, by listener (`proxy`, `admin`).
    pub accept_errors: Family<Labels, Counter>,
    /// Connections closed at a phase deadline, by phase.
    pub handshake_timeouts: Family<Labels, Counter>,
    /// Backend handshakes thaw finished itself because the client left before
    /// its HandshakeResponse, by how they ended.
    pub handshakes_abandoned: Family<Labels, Counter>,
    /// Backend checks `/readyz` actually ran (cached answers are not counted), by outcome.
    pub readiness_checks: Family<Labels, Counter>,
    pub commands: Family<Labels, Counter>,
    /// `commands` resolved per command byte once, so the hot path does no label lookup.
    commands_by_byte: Vec<Counter>,
    pub rewrites: Family<Labels, Counter>,
    pub unhandled: Family<Labels, Counter>,
    pub violations: Family<Labels, Counter>,
    /// Locking reads by shape, and the lock errors that followed them.
    pub contention: super::contention::Contention,
    /// Shadow mode: what enforce mode would have done, by rule and action.
    pub shadow_actions: Family<Labels, Counter>,
    /// Guarded writes answered at once and held back to COMMIT, by rule.
    pub deferred_writes: Family<Labels, Counter>,
    /// Held-back writes sent before COMMIT, by cause.
    pub deferred_flushes: Family<Labels, Counter>,
    /// Held-back writes committed in one step with their COMMIT.
    pub deferred_committed: Counter,
    /// Held-back writes whose guard failed when sent (the app learns it at COMMIT), by rule.
    pub deferred_violations: Family<Labels, Counter>,
    /// COM_STMT_EXECUTEs by how they reached the server (`original`, `shadow`, `text`).
    pub prepared_executes: Family<Labels, Counter>,
    /// Re-lock-and-validate runs inside the protection window, by outcome.
    pub validations: Family<Labels, Counter>,
    /// Statements answered with the rolled-back error of an aborted transaction.
    pub aborted_statements: Counter,
    pub backend_errors: Family<Labels, Counter>,
    pub retries: Family<Labels, Counter>,
    pub replays: Family<Labels, Counter>,
    pub statement_seconds: Histogram,
    pub reloads: Family<Labels, Counter>,
    pub rules_generation: Gauge,
    pub draining: Gauge,
    /// Bytes of large client packets buffered now, all connections (the global budget in use).
    pub buffered_bytes: Gauge,
    /// Client packets streamed to the server instead of buffered, by reason.
    pub streamed_packets: Family<Labels, Counter>,
    /// Client packets over a limit: the connection got ERR 1153 and was closed, by phase.
    pub packets_too_large: Family<Labels, Counter>,
    /// Connections whose leg speaks the compressed protocol, by leg (client, backend).
    pub compressed_connections: Family<Labels, Counter>,
    /// Compressed frames on the wire (headers included), by leg and direction (in, out).
    pub compressed_wire_bytes: Family<Labels, Counter>,
    /// The plain bytes those frames carried, by leg and direction.
    pub compressed_plain_bytes: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("thaw");
        let m = Metrics {
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            backend_connect_failures: Counter::default(),
            backend_tls_fallbacks: Counter::default(),
            connections_refused: Counter::default(),
            accept_errors: Family::default(),
            handshake_timeouts: Family::default(),
            handshakes_abandoned: Family::default(),
            readiness_checks: Family::default(),
            commands: Family::default(),
            commands_by_byte: Vec::new(),
            rewrites: Family::default(),
            unhandled: Family::default(),
            violations: Family::default(),
            validations: Family::default(),
            prepared_executes: Family::default(),
            deferred_writes: Family::default(),
            shadow_actions: Family::default(),
            contention: Default::default(),
            deferred_flushes: Family::default(),
            deferred_committed: Counter::default(),
            deferred_violations: Family::default(),
            aborted_statements: Counter::default(),
            backend_errors: Family::default(),
            retries: Family::default(),
            replays: Family::default(),
            statement_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            reloads: Family::default(),
            rules_generation: Gauge::default(),
            draining: Gauge::default(),
            buffered_bytes: Gauge::default(),
            streamed_packets: Family::default(),
            packets_too_large: Family::default(),
            compressed_connections: Family::default(),
            compressed_wire_bytes: Family::default(),
            compressed_plain_bytes: Family::default(),
            registry: Registry::default(),
        };
        registry.register("client_connections_open", "Client connections currently open", m.connections_open.clone());
        registry.register("client_connections", "Client connections accepted", m.connections_total.clone());
        registry.register("backend_connect_failures", "Backend connections that could not be opened", m.backend_connect_failures.clone());
        registry.register(
            "backend_tls_fallbacks",
            "backend_tls preferred: backend connections that went on in plain text because the server did not offer TLS",
            m.backend_tls_fallbacks.clone(),
        );
        registry.register(
            "client_connections_refused",
            "Client connections answered with 1040 because max_connections were open",
            m.connections_refused.clone(),
        );
        registry.register("accept_errors", "Failed accepts, by listener", m.accept_errors.clone());
        registry.register(
            "handshake_timeouts",
            "Connections closed at a connection-phase deadline, by phase",
            m.handshake_timeouts.clone(),
        );
        registry.register(
            "handshakes_abandoned",
            "Backend handshakes thaw ended itself because the client left first, by ending",
            m.handshakes_abandoned.clone(),
        );
        registry.register("readiness_checks", "Backend checks run for /readyz, by outcome", m.readiness_checks.clone());
        for listener in ["proxy", "admin"] {
            let _ = m.accept_errors.get_or_create(&labels([("listener", listener.into())]));
        }
        for phase in PHASES {
            let _ = m.handshake_timeouts.get_or_create(&labels([("phase", phase.into())]));
        }
        for ending in ENDINGS {
            let _ = m.handshakes_abandoned.get_or_create(&labels([("ending", ending.into())]));
        }
        for outcome in ["ready", "not_ready"] {
            let _ = m.readiness_checks.get_or_create(&labels([("outcome", outcome.into())]));
        }
        registry.register("commands", "Client commands relayed, by command", m.commands.clone());
        registry.register("statements_rewritten", "Statements rewritten, by rule and action", m.rewrites.clone());
        registry.register("statements_unhandled", "Statements on governed tables forwarded untouched, by table", m.unhandled.clone());
        registry.register("guard_violations", "Guarded writes that would have broken an invariant, by rule", m.violations.clone());
        registry.register(
            "validations",
            "Unproven statements inside the protection window: re-lock and compare, by outcome (equal, changed)",
            m.validations.clone(),
        );
        registry.register(
            "aborted_transaction_statements",
            "Statements refused because thaw had rolled their transaction back",
            m.aborted_statements.clone(),
        );
        for outcome in ["equal", "changed"] {
            let _ = m.validations.get_or_create(&labels([("outcome", outcome.into())]));
        }
        registry.register(
            "prepared_executes",
            "COM_STMT_EXECUTE by how it reached the server: original, shadow (lock-cut read), text (guarded write)",
            m.prepared_executes.clone(),
        );
        registry.register(
            "locking_reads",
            "Locking reads (FOR UPDATE, FOR SHARE, LOCK IN SHARE MODE), by table and shape",
            m.contention.reads.clone(),
        );
        registry.register(
            "locking_read_seconds",
            "Time locking reads took, lock waits included, by table and shape",
            m.contention.read_seconds.clone(),
        );
        registry.register(
            "locking_read_lock_errors",
            "Lock errors (1205, 1213) in transactions that ran a locking read, hidden by a retry or not, by table, shape and code",
            m.contention.lock_errors.clone(),
        );
        registry.register(
            "shadow_actions",
            "Shadow mode: what enforce mode would have done, by rule and action (unlock, guard, delta, cas, validate, refuse)",
            m.shadow_actions.clone(),
        );
        registry.register("deferred_writes", "Guarded writes answered at once and held back to COMMIT, by rule", m.deferred_writes.clone());
        registry.register(
            "deferred_flushes",
            "Held-back writes sent before COMMIT, by cause (read, write, statement, savepoint, commit, validation, command)",
            m.deferred_flushes.clone(),
        );
        registry.register("deferred_committed", "Held-back writes committed in one step with their COMMIT", m.deferred_committed.clone());
        registry.register(
            "deferred_violations",
            "Held-back writes whose guard failed when sent: the app gets the violation at COMMIT, by rule",
            m.deferred_violations.clone(),
        );
        for route in ["original", "shadow", "text"] {
            let _ = m.prepared_executes.get_or_create(&labels([("route", route.into())]));
        }
        registry.register("backend_errors", "ERR packets from the backend, by code", m.backend_errors.clone());
        registry.register("retries", "Statement retries, by error code and outcome", m.retries.clone());
        registry.register("replays", "Transaction replays, by error code and outcome", m.replays.clone());
        registry.register(
            "statement_duration_seconds",
            "Time from a command's arrival to the end of its response",
            m.statement_seconds.clone(),
        );
        registry.register("rules_reloads", "Rules and config reloads, by outcome", m.reloads.clone());
        registry.register("rules_generation", "Generation of the rules in force (1 = loaded at start)", m.rules_generation.clone());
        registry.register("draining", "1 while shutting down", m.draining.clone());
        registry.register(
            "client_buffered_bytes",
            "Bytes of client packets over 64 KiB buffered now, all connections (limits.global_buffer_bytes in use)",
            m.buffered_bytes.clone(),
        );
        registry.register(
            "client_packets_streamed",
            "Client packets streamed to the server frame by frame instead of buffered, by reason (size, budget)",
            m.streamed_packets.clone(),
        );
        registry.register(
            "client_packets_too_large",
            "Client packets over a limit, answered with ERR 1153 and a close, by phase (handshake, command)",
            m.packets_too_large.clone(),
        );
        registry.register(
            "compressed_connections",
            "Connections whose leg speaks the compressed protocol, by leg (client, backend)",
            m.compressed_connections.clone(),
        );
        registry.register(
            "compressed_wire_bytes",
            "Compressed protocol: bytes on the wire, frame headers included, by leg and direction (in, out)",
            m.compressed_wire_bytes.clone(),
        );
        registry.register(
            "compressed_plain_bytes",
            "Compressed protocol: the plain bytes those frames carried, by leg and direction (in, out)",
            m.compressed_plain_bytes.clone(),
        );
        for leg in LEGS {
            let _ = m.compressed_connections.get_or_create(&labels([("leg", leg.into())]));
            for direction in ["in", "out"] {
                let l = labels([("leg", leg.into()), ("direction", direction.into())]);
                let _ = m.compressed_wire_bytes.get_or_create(&l);
                let _ = m.compressed_plain_bytes.get_or_create(&l);
            }
        }
        for reason in ["size", "budget"] {
            let _ = m.streamed_packets.get_or_create(&labels([("reason", reason.into())]));
        }
        for phase in ["handshake", "command"] {
            let _ = m.packets_too_large.get_or_create(&labels([("phase", phase.into())]));
        }
        // Series an alert takes increase() of must exist before their first event.
        for outcome in ["success", "failure"] {
            let _ = m.reloads.get_or_create(&labels([("outcome", outcome.into())]));
        }
        for code in ["1205", "1213"] {
            let _ = m.backend_errors.get_or_create(&labels([("code", code.into())]));
            for outcome in ["succeeded", "exhausted", "refused"] {
                let _ = m.retries.get_or_create(&labels([("code", code.into()), ("outcome", outcome.into())]));
                let _ = m.replays.get_or_create(&labels([("code", code.into()), ("outcome", outcome.into())]));
            }
        }
        let commands_by_byte =
            (0..=255u8).map(|b| m.commands.get_or_create(&labels([("command", command_name(b).to_string())])).clone()).collect();
        Metrics { registry, commands_by_byte, ..m }
    }

    /// Per-rule series at 0, so the first violation after a (re)load is visible to increase().
    pub fn zero_rule_series<'a>(&self, rules: impl Iterator<Item = &'a str>) {
        for rule in rules {
            let _ = self.violations.get_or_create(&labels([("rule", rule.to_string())]));
        }
    }

    pub fn handshake_timeout(&self, phase: &'static str) {
        self.handshake_timeouts.get_or_create(&labels([("phase", phase.into())])).inc();
    }

    pub fn handshake_abandoned(&self, ending: &'static str) {
        self.handshakes_abandoned.get_or_create(&labels([("ending", ending.into())])).inc();
    }

    pub fn command(&self, byte: u8) -> &Counter {
        &self.commands_by_byte[byte as usize]
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Metric label for a client command byte.
pub fn command_name(c: u8) -> &'static str {
    match c {
        0x01 => "quit",
        0x02 => "init_db",
        0x03 => "query",
        0x04 => "field_list",
        0x09 => "statistics",
        0x0A => "process_info",
        0x0C => "process_kill",
        0x0E => "ping",
        0x11 => "change_user",
        0x16 => "stmt_prepare",
        0x17 => "stmt_execute",
        0x18 => "stmt_send_long_data",
        0x19 => "stmt_close",
        0x1A => "stmt_reset",
        0x1B => "set_option",
        0x1C => "stmt_fetch",
        0x1F => "reset_connection",
        _ => "other",
    }
}

pub fn labels<const N: usize>(pairs: [(&'static str, String); N]) -> Labels {
    pairs.into_iter().collect()
}
