//! The lab's hosts: an origin and a client namespace joined by a quiet veth pair, with
//! addresses from the benchmarking range 198.18.0.0/15 (RFC 2544), never routed anywhere.

use std::net::Ipv4Addr;

use crate::{
    netns::{Endpoint, NetNs, NetNsError, quiet_veth, unique_iface},
    pins::PinDir,
};

/// The origin's address.
pub const ORIGIN_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The client's address.
pub const CLIENT_IPV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Two namespaces and the veth pair between them; dropping it removes all of it.
#[derive(Debug)]
pub struct Topology {
    /// The client end (declared first so it is dropped first).
    pub client_end: Endpoint,
    /// The origin end, where moat attaches.
    pub origin_end: Endpoint,
    /// The client namespace.
    pub client: NetNs,
    /// The origin namespace.
    pub origin: NetNs,
}

impl Topology {
    /// Creates both namespaces and the pair, with locally administered MACs.
    pub fn create() -> Result<Topology, NetNsError> {
        let origin = NetNs::create("moat-origin")?;
        let client = NetNs::create("moat-client")?;
        let origin_end = Endpoint {
            iface: unique_iface("mo"),
            mac: [0x02, 0x6d, 0x6f, 0x61, 0x74, 0x01],
            ipv4: ORIGIN_IPV4,
        };
        let client_end = Endpoint {
            iface: unique_iface("mc"),
            mac: [0x02, 0x6d, 0x6f, 0x61, 0x74, 0x02],
            ipv4: CLIENT_IPV4,
        };
        quiet_veth(&origin, &origin_end, &client, &client_end)?;
        Ok(Topology {
            client_end,
            origin_end,
            client,
            origin,
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // The lab's interface is gone with its namespace; so are the counters it pinned.
        if let Err(error) = PinDir::for_iface(&self.origin_end.iface).remove_persistent() {
            log::warn!("removing lab counters failed error={error}");
        }
    }
}
