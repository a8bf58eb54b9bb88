//! Ports as the core sees them (nvmet's `struct nvmet_port`): the address the discovery
//! log reports, the subsystems a host may reach through the port, and the referrals to
//! other discovery services that the port's discovery log carries. Plain data; the
//! transport owns the listening.

use std::sync::Arc;

use super::subsystem::Subsystem;
use crate::wire::discovery::{SecureChannel, TransportType};

/// An address the target listens on, and what it serves there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub id: u16,
    pub address: String,
    pub service_id: String,
    pub ipv6: bool,
    pub subsystems: PortSubsystems,
    /// The referrals the discovery log of this port lists, enabled ones only, in order.
    pub referrals: Vec<Referral>,
}

impl Port {
    /// A port serving every subsystem, without referrals: the command line's model.
    pub fn new(id: u16, address: impl Into<String>, service_id: impl Into<String>, ipv6: bool) -> Port {
        Port { id, address: address.into(), service_id: service_id.into(), ipv6, subsystems: PortSubsystems::All, referrals: Vec::new() }
    }
}

/// Which subsystems a port serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSubsystems {
    /// Every subsystem of the target, those added later too (`--listen`, `port add`
    /// without subsystems).
    All,
    /// The subsystems linked to the port, by NQN in link order (nvmetcli's
    /// `ports[].subsystems`, the links in nvmet's `ports/N/subsystems/`). A name may
    /// outlive its subsystem: a subsystem served anew under it is linked again.
    Linked(Vec<String>),
}

impl PortSubsystems {
    pub fn serves(&self, nqn: &str) -> bool {
        match self {
            PortSubsystems::All => true,
            PortSubsystems::Linked(names) => names.iter().any(|name| name == nqn),
        }
    }

    /// The subsystems of `all` served here, in the order the discovery log lists them:
    /// the target's order, or link order as nvmet lists a port's links.
    pub fn select(&self, all: &[Arc<Subsystem>]) -> Vec<Arc<Subsystem>> {
        match self {
            PortSubsystems::All => all.to_vec(),
            PortSubsystems::Linked(names) => names.iter().filter_map(|name| all.iter().find(|s| &s.nqn == name).cloned()).collect(),
        }
    }

    /// Links `nqn` (a no-op when the port serves it already).
    pub fn link(&mut self, nqn: &str) {
        if let PortSubsystems::Linked(names) = self {
            if !names.iter().any(|name| name == nqn) {
                names.push(nqn.to_owned());
            }
        }
    }

    /// Drops the link to `nqn`; a port serving every subsystem keeps doing so.
    pub fn unlink(&mut self, nqn: &str) {
        if let PortSubsystems::Linked(names) = self {
            names.retain(|name| name != nqn);
        }
    }
}

/// A discovery service on another port, which this port's discovery log points hosts
/// to with an entry of subtype "referral to a discovery service" (nvmet's referrals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referral {
    /// The PORTID of the port the other discovery service is reached through.
    pub port_id: u16,
    pub transport: TransportType,
    pub ipv6: bool,
    pub address: String,
    pub service_id: String,
    pub secure_channel: SecureChannel,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::HostAccess;

    fn subsystem(nqn: &str) -> Arc<Subsystem> {
        Arc::new(Subsystem::new(nqn, HostAccess::default(), []))
    }

    #[test]
    fn all_serves_everything_and_linked_keeps_link_order() {
        let all = [subsystem("nqn.2026-11.io.example:a"), subsystem("nqn.2026-11.io.example:b")];
        let names = |selected: Vec<Arc<Subsystem>>| selected.iter().map(|s| s.nqn.clone()).collect::<Vec<_>>();
        assert!(PortSubsystems::All.serves("nqn.2026-11.io.example:z"));
        assert_eq!(names(PortSubsystems::All.select(&all)), ["nqn.2026-11.io.example:a", "nqn.2026-11.io.example:b"]);
        let mut linked = PortSubsystems::Linked(vec!["nqn.2026-11.io.example:b".into(), "nqn.2026-11.io.example:gone".into()]);
        assert_eq!(names(linked.select(&all)), ["nqn.2026-11.io.example:b"], "link order; a name without a subsystem serves nothing");
        assert!(!linked.serves("nqn.2026-11.io.example:a"));
        linked.link("nqn.2026-11.io.example:a");
        linked.link("nqn.2026-11.io.example:a");
        linked.unlink("nqn.2026-11.io.example:gone");
        assert_eq!(linked, PortSubsystems::Linked(vec!["nqn.2026-11.io.example:b".into(), "nqn.2026-11.io.example:a".into()]));
        let mut all_ports = PortSubsystems::All;
        all_ports.unlink("nqn.2026-11.io.example:a");
        assert_eq!(all_ports, PortSubsystems::All);
    }
}
