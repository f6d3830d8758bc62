//! Which legs speak the compressed protocol, decided at each login from the
//! config, the server's offer and the client's flags; and their traffic in
//! the metrics. The framing itself is `wire::compress`, below PacketIo.
use crate::config::{BackendCompression, ClientCompression, Config};
use crate::ops::Metrics;
use crate::ops::metrics::labels;
use crate::wire::caps;
use crate::wire::compress::Tally;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;

/// The compression settings in force when the client connected.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub client: ClientCompression,
    pub backend: BackendCompression,
    pub level: u32,
}

/// What one login settled: which legs compress once the server's OK is relayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Legs {
    pub client: bool,
    pub backend: bool,
}

pub const NOT_OFFERED: &str = "thaw: the client asked for the compressed protocol, which thaw does not offer \
    (client_compression: off); turn compression off in the client, or set client_compression: allowed";
pub const BACKEND_REQUIRED: &str = "thaw: backend_compression is required but the backend does not offer compression";

impl Policy {
    pub fn from_config(c: &Config) -> Self {
        Policy { client: c.client_compression, backend: c.backend_compression, level: c.compression_level }
    }

    /// thaw's greeting offers compression (thaw speaks it itself, whatever
    /// the backend leg does).
    pub fn offers_client(&self) -> bool {
        self.client == ClientCompression::Allowed
    }

    /// Known from the greeting alone: a required backend compression the server cannot give.
    pub fn check_server(&self, server_caps: u32) -> Result<(), &'static str> {
        if self.backend == BackendCompression::Required && server_caps & caps::COMPRESS == 0 {
            return Err(BACKEND_REQUIRED);
        }
        Ok(())
    }

    /// `client_caps` as the client sent them: a client that sets
    /// CLIENT_COMPRESS although it was not offered (mysql-connector-python
    /// does) is refused here, at login, before it switches its framing:
    /// never left waiting on a session that cannot read it.
    pub fn legs(&self, client_caps: u32, server_caps: u32) -> Result<Legs, &'static str> {
        let client = client_caps & caps::COMPRESS != 0;
        if client && !self.offers_client() {
            return Err(NOT_OFFERED);
        }
        self.check_server(server_caps)?;
        let backend = server_caps & caps::COMPRESS != 0
            && match self.backend {
                BackendCompression::Off => false,
                BackendCompression::AsClient => client,
                BackendCompression::Preferred | BackendCompression::Required => true,
            };
        Ok(Legs { client, backend })
    }
}

/// One leg's traffic counters, resolved once per connection.
struct LegTally {
    wire_in: Counter,
    plain_in: Counter,
    wire_out: Counter,
    plain_out: Counter,
}

impl Tally for LegTally {
    fn read(&self, wire: u64, plain: u64) {
        self.wire_in.inc_by(wire);
        self.plain_in.inc_by(plain);
    }
    fn wrote(&self, wire: u64, plain: u64) {
        self.wire_out.inc_by(wire);
        self.plain_out.inc_by(plain);
    }
}

/// Count a compressed leg (`leg`: client or backend) and report its traffic.
pub fn tally(m: &Metrics, leg: &'static str) -> Arc<dyn Tally> {
    m.compressed_connections.get_or_create(&labels([("leg", leg.into())])).inc();
    let get = |family: &prometheus_client::metrics::family::Family<_, Counter>, direction: &str| {
        family.get_or_create(&labels([("leg", leg.into()), ("direction", direction.into())])).clone()
    };
    Arc::new(LegTally {
        wire_in: get(&m.compressed_wire_bytes, "in"),
        plain_in: get(&m.compressed_plain_bytes, "in"),
        wire_out: get(&m.compressed_wire_bytes, "out"),
        plain_out: get(&m.compressed_plain_bytes, "out"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(client: ClientCompression, backend: BackendCompression) -> Policy {
        Policy { client, backend, level: 6 }
    }

    const C: u32 = caps::COMPRESS;

    #[test]
    fn legs_follow_the_config_the_offer_and_the_client() {
        use BackendCompression as B;
        use ClientCompression as Cl;
        let l = |client, backend| Ok(Legs { client, backend });
        // Default: the backend leg compresses when the app's does, as direct.
        assert_eq!(policy(Cl::Allowed, B::AsClient).legs(C, C), l(true, true));
        assert_eq!(policy(Cl::Allowed, B::AsClient).legs(0, C), l(false, false));
        assert_eq!(policy(Cl::Allowed, B::AsClient).legs(C, 0), l(true, false), "thaw speaks it to the app on its own");
        assert_eq!(policy(Cl::Allowed, B::Off).legs(C, C), l(true, false));
        assert_eq!(policy(Cl::Allowed, B::Preferred).legs(0, C), l(false, true), "a remote database, whatever the app does");
        assert_eq!(policy(Cl::Allowed, B::Preferred).legs(0, 0), l(false, false));
        assert_eq!(policy(Cl::Off, B::Required).legs(0, C), l(false, true));
        assert_eq!(policy(Cl::Off, B::Required).legs(0, 0), Err(BACKEND_REQUIRED));
        assert_eq!(policy(Cl::Off, B::AsClient).legs(C, C), Err(NOT_OFFERED), "asked although not offered: refused at login");
        assert!(policy(Cl::Allowed, B::Off).offers_client() && !policy(Cl::Off, B::Off).offers_client());
        assert_eq!(policy(Cl::Allowed, B::Required).check_server(0), Err(BACKEND_REQUIRED));
        assert_eq!(policy(Cl::Allowed, B::Preferred).check_server(0), Ok(()));
    }

    #[test]
    fn traffic_lands_in_the_leg_series() {
        let m = Metrics::new();
        let t = tally(&m, "backend");
        t.read(100, 400);
        t.wrote(10, 20);
        let text = m.encode();
        for line in [
            "thaw_compressed_connections_total{leg=\"backend\"} 1",
            "thaw_compressed_wire_bytes_total{leg=\"backend\",direction=\"in\"} 100",
            "thaw_compressed_plain_bytes_total{leg=\"backend\",direction=\"in\"} 400",
            "thaw_compressed_wire_bytes_total{leg=\"backend\",direction=\"out\"} 10",
            "thaw_compressed_plain_bytes_total{leg=\"backend\",direction=\"out\"} 20",
            "thaw_compressed_connections_total{leg=\"client\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
