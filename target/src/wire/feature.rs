//! Set and Get Features fields (NVMe Base 2.0, section 5.27.1): the feature identifier
//! and select values. Pure.

use super::RawCommand;

/// Feature identifiers this target knows (NVMe Base 2.0, Figure 317).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureId {
    Arbitration,
    PowerManagement,
    TemperatureThreshold,
    VolatileWriteCache,
    NumberOfQueues,
    WriteAtomicityNormal,
    AsyncEventConfiguration,
    KeepAliveTimer,
    HostIdentifier,
    ReservationNotificationMask,
    ReservationPersistence,
    /// Any other identifier: not supported.
    Other(u8),
}

impl From<u8> for FeatureId {
    fn from(fid: u8) -> FeatureId {
        match fid {
            0x01 => FeatureId::Arbitration,
            0x02 => FeatureId::PowerManagement,
            0x04 => FeatureId::TemperatureThreshold,
            0x06 => FeatureId::VolatileWriteCache,
            0x07 => FeatureId::NumberOfQueues,
            0x0A => FeatureId::WriteAtomicityNormal,
            0x0B => FeatureId::AsyncEventConfiguration,
            0x0F => FeatureId::KeepAliveTimer,
            0x81 => FeatureId::HostIdentifier,
            0x82 => FeatureId::ReservationNotificationMask,
            0x83 => FeatureId::ReservationPersistence,
            other => FeatureId::Other(other),
        }
    }
}

/// Get Features SEL (CDW10 bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    Current,
    Default,
    /// Nothing here is saveable: it reads the default.
    Saved,
    /// Supported capabilities.
    Capabilities,
}

/// The feature a Set or Get Features names (CDW10 bits 7:0).
pub fn feature_id(command: &RawCommand) -> FeatureId {
    FeatureId::from(command.cdw10.get() as u8)
}

/// SEL of a Get Features; `None` for the reserved values.
pub fn select(command: &RawCommand) -> Option<Select> {
    match (command.cdw10.get() >> 8) & 7 {
        0 => Some(Select::Current),
        1 => Some(Select::Default),
        2 => Some(Select::Saved),
        3 => Some(Select::Capabilities),
        _ => None,
    }
}

/// Set Features SV (CDW10 bit 31): save the value across resets.
pub fn save(command: &RawCommand) -> bool {
    command.cdw10.get() & (1 << 31) != 0
}

/// Get Features SEL 11b result: changeable (bit 2); not saveable (bit 0) nor namespace
/// specific (bit 1).
pub const CAPABILITY_CHANGEABLE: u64 = 1 << 2;

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::little_endian::U32;

    #[test]
    fn fields_of_cdw10() {
        let command = RawCommand { cdw10: U32::new(1 << 31 | 3 << 8 | 0x0B), ..Default::default() };
        assert_eq!(feature_id(&command), FeatureId::AsyncEventConfiguration);
        assert_eq!(select(&command), Some(Select::Capabilities));
        assert!(save(&command));
        let reserved = RawCommand { cdw10: U32::new(4 << 8 | 0x7F), ..Default::default() };
        assert_eq!(select(&reserved), None);
        assert_eq!(feature_id(&reserved), FeatureId::Other(0x7F));
    }
}
