//! Asymmetric Namespace Access (NVMe Base Specification 2.0, section 8.1): the states a
//! namespace's group has on a port, and the ANA log page (0Ch). Pure data.

use super::bytes::{put_u16, put_u32, put_u64, put_u8};

/// An ANA group's state on one port (ANAS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnaState {
    Optimized = 0x01,
    NonOptimized = 0x02,
    Inaccessible = 0x03,
    PersistentLoss = 0x04,
    Change = 0x0F,
}

impl AnaState {
    /// nvmet's names (configfs `ana_state`, nvmetcli JSON).
    pub fn name(self) -> &'static str {
        match self {
            AnaState::Optimized => "optimized",
            AnaState::NonOptimized => "non-optimized",
            AnaState::Inaccessible => "inaccessible",
            AnaState::PersistentLoss => "persistent-loss",
            AnaState::Change => "change",
        }
    }

    /// The state of a group no one set on a port (nvmet's defaults): group 1 is
    /// optimized, every other group inaccessible.
    pub fn default_for(group: u32) -> AnaState {
        if group == 1 { AnaState::Optimized } else { AnaState::Inaccessible }
    }

    pub fn from_name(name: &str) -> Option<AnaState> {
        [AnaState::Optimized, AnaState::NonOptimized, AnaState::Inaccessible, AnaState::PersistentLoss, AnaState::Change].into_iter().find(|s| s.name() == name)
    }

    /// The status an I/O command gets through a port where its namespace's group is in
    /// this state (path related, without DNR: the host retries on another path).
    pub fn refusal(self) -> Option<super::Status> {
        match self {
            AnaState::Optimized | AnaState::NonOptimized => None,
            AnaState::Inaccessible => Some(super::Status::ANA_INACCESSIBLE),
            AnaState::PersistentLoss => Some(super::Status::ANA_PERSISTENT_LOSS),
            AnaState::Change => Some(super::Status::ANA_TRANSITION),
        }
    }
}

/// Groups a subsystem may use (ANAGRPMAX, NANAGRPID), as nvmet.
pub const GROUPS_MAX: u32 = 128;
/// ANA Transition Time in seconds (ANATT).
pub const TRANSITION_TIME_SECONDS: u8 = 10;
/// ANACAP: every state reportable (bits 0-4), as nvmet.
pub const CAPABILITIES: u8 = 0x1F;

/// One group of the ANA log: its ID, its state on the port asked through, and its
/// namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescriptor {
    pub group: u32,
    pub state: AnaState,
    pub namespaces: Vec<u32>,
}

const HEADER_BYTES: usize = 16;
const DESCRIPTOR_BYTES: usize = 32;

/// Log 0Ch: the header (change count, group count), then each group's descriptor and,
/// unless `groups_only` (RGO), its NSIDs.
pub fn encode_log(change_count: u64, groups: &[GroupDescriptor], groups_only: bool) -> Vec<u8> {
    let mut log = vec![0u8; HEADER_BYTES];
    put_u64(&mut log, 0, change_count);
    put_u16(&mut log, 8, u16::try_from(groups.len()).unwrap_or(u16::MAX));
    for group in groups {
        let namespaces: &[u32] = if groups_only { &[] } else { &group.namespaces };
        let mut descriptor = vec![0u8; DESCRIPTOR_BYTES];
        put_u32(&mut descriptor, 0, group.group);
        put_u32(&mut descriptor, 4, u32::try_from(namespaces.len()).unwrap_or(u32::MAX));
        put_u64(&mut descriptor, 8, change_count);
        put_u8(&mut descriptor, 16, group.state as u8);
        log.extend_from_slice(&descriptor);
        for id in namespaces {
            log.extend_from_slice(&id.to_le_bytes());
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_layout_with_and_without_namespaces() {
        let groups = [
            GroupDescriptor { group: 1, state: AnaState::Optimized, namespaces: vec![1, 3] },
            GroupDescriptor { group: 2, state: AnaState::Inaccessible, namespaces: vec![2] },
        ];
        let log = encode_log(7, &groups, false);
        assert_eq!(log.len(), 16 + 32 + 8 + 32 + 4);
        assert_eq!(&log[0..8], &7u64.to_le_bytes());
        assert_eq!(&log[8..10], &2u16.to_le_bytes());
        assert_eq!(&log[16..20], &1u32.to_le_bytes(), "ANAGRPID");
        assert_eq!(&log[20..24], &2u32.to_le_bytes(), "NNSIDS");
        assert_eq!(&log[24..32], &7u64.to_le_bytes(), "CHGCNT");
        assert_eq!(log[32], 0x01, "ANAS");
        assert_eq!(&log[48..56], &[1, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&log[56..60], &2u32.to_le_bytes());
        assert_eq!(log[72], 0x03);
        let groups_only = encode_log(7, &groups, true);
        assert_eq!(groups_only.len(), 16 + 2 * 32);
        assert_eq!(&groups_only[20..24], &[0; 4], "RGO: no NSIDs");
    }

    #[test]
    fn state_names_are_nvmets() {
        for state in [AnaState::Optimized, AnaState::NonOptimized, AnaState::Inaccessible, AnaState::PersistentLoss, AnaState::Change] {
            assert_eq!(AnaState::from_name(state.name()), Some(state));
        }
        assert_eq!(AnaState::from_name("up"), None);
        assert_eq!(AnaState::Inaccessible.refusal().map(|s| s.code()), Some(0x302));
        assert_eq!(AnaState::NonOptimized.refusal(), None);
    }
}
