//! Compliance states (seed Table 1) and the state messages they come from. The store
//! keeps what clients reported (a scan verdict and an enforcement state per update, and
//! a scan record per client); [`classify`] turns that into Required / NotRequired /
//! Installed / Unknown with the seed's sub-reason, at a given `now`.

pub mod messages;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The four states of Table 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ComplianceState {
    Required,
    NotRequired,
    Installed,
    Unknown,
}

/// Why a state is what it is: Table 1's conditions, one variant each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// T1.R1: applicable, and no deployment targets it at this client.
    NotDeployed,
    /// T1.R2: installed, but the re-scan's state message has not reached the store.
    InstalledStatePending,
    /// T1.R3: installed, but a restart is pending.
    PendingReboot,
    /// T1.R4: deployed, not yet installed (downloading, waiting for a window, installing).
    DeployedNotInstalled,
    /// T1.R4 with the last attempt failed (download or install).
    InstallFailed,
    /// T1.N: not applicable.
    NotApplicable,
    /// T1.I: applicable and installed.
    Installed,
    /// T1.U1: the client's last scan failed.
    ScanFailed,
    /// T1.U2: the scan's state messages are received but not processed yet (backlog).
    StateNotProcessed,
    /// T1.U3: no state message received from the client.
    NoStateReceived,
    /// T1.U4: the client's last state message was corrupt; it was kept and rejected.
    StateMessageCorrupt,
    /// The last scan is older than the scan TTL and no newer scan came.
    StateExpired,
    /// S7: the client's agent is older than the required minimum version.
    AgentVersionUnsupported,
    /// The update is newer than the catalog version the client last scanned.
    NotScannedAgainstUpdate,
}

impl Reason {
    pub fn state(self) -> ComplianceState {
        use Reason::*;
        match self {
            NotDeployed | InstalledStatePending | PendingReboot | DeployedNotInstalled | InstallFailed => {
                ComplianceState::Required
            }
            NotApplicable => ComplianceState::NotRequired,
            Installed => ComplianceState::Installed,
            ScanFailed
            | StateNotProcessed
            | NoStateReceived
            | StateMessageCorrupt
            | StateExpired
            | AgentVersionUnsupported
            | NotScannedAgainstUpdate => ComplianceState::Unknown,
        }
    }
}

/// What a scan found for one update (only applicable updates are reported; everything
/// else in the scanned catalog is NotRequired).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ScanResult {
    Missing = 0,
    Installed = 1,
}

/// Where installing a deployed update stands on the client (ConfigMgr's enforcement
/// state messages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Enforcement {
    #[default]
    None = 0,
    Downloading = 1,
    Downloaded = 2,
    WaitingForWindow = 3,
    Installing = 4,
    /// Installed; the re-scan's state is on its way (T1.R2).
    InstalledPendingScan = 5,
    PendingReboot = 6,
    DownloadFailed = 7,
    InstallFailed = 8,
}

impl Enforcement {
    pub const ALL: [Enforcement; 9] = [
        Enforcement::None,
        Enforcement::Downloading,
        Enforcement::Downloaded,
        Enforcement::WaitingForWindow,
        Enforcement::Installing,
        Enforcement::InstalledPendingScan,
        Enforcement::PendingReboot,
        Enforcement::DownloadFailed,
        Enforcement::InstallFailed,
    ];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    pub fn failed(self) -> bool {
        matches!(self, Enforcement::DownloadFailed | Enforcement::InstallFailed)
    }
}

/// One reported (client, update) state, packed in 32 bits so 20 million of them fit in
/// 80 MB: 24 bits of update key, 1 bit scan result, 4 bits enforcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackedState(u32);

impl PackedState {
    pub const MAX_KEY: u32 = (1 << 24) - 1;

    pub fn new(key: u32, scan: ScanResult, enforcement: Enforcement) -> Self {
        debug_assert!(key <= Self::MAX_KEY);
        PackedState((key << 8) | ((scan as u32) << 4) | enforcement as u32)
    }
    pub fn key(self) -> u32 {
        self.0 >> 8
    }
    pub fn scan(self) -> ScanResult {
        if (self.0 >> 4) & 1 == 1 { ScanResult::Installed } else { ScanResult::Missing }
    }
    pub fn enforcement(self) -> Enforcement {
        Enforcement::from_u8((self.0 & 0xF) as u8).unwrap_or_default()
    }

    // What the tallies ask of every state, read straight off the bits: they run once per
    // state of the fleet, and a branch on scan data (80 % installed, at random) mispredicts.

    /// Counter slot: 0 Required, 1 Installed (Table 1: a pending reboot keeps the update
    /// Required).
    pub fn counter_slot(self) -> usize {
        let installed = (self.0 >> 4) & 1;
        let reboot = ((self.0 & 0xF) == Enforcement::PendingReboot as u32) as u32;
        (installed & !reboot & 1) as usize
    }
    /// The enforcement is PendingReboot.
    pub fn pending_reboot(self) -> bool {
        (self.0 & 0xF) == Enforcement::PendingReboot as u32
    }
    /// The enforcement is a download or install failure (as `Enforcement::failed`).
    pub fn failed(self) -> bool {
        let e = self.0 & 0xF;
        (e == Enforcement::DownloadFailed as u32) | (e == Enforcement::InstallFailed as u32)
    }
}

/// Outcome of a client's most recent scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanRecord {
    pub time: Timestamp,
    /// Catalog version the scan ran against.
    #[serde(alias = "catalog_version")]
    pub catalog_version: u64,
    /// None when the scan succeeded; the error the client reported otherwise.
    pub error: Option<String>,
}

/// Everything the server knows about one client's compliance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientCompliance {
    pub agent_version: Option<String>,
    /// Last successful scan (its states are `states`).
    pub last_scan: Option<ScanRecord>,
    /// Last failed scan, if newer than the last successful one.
    pub last_failure: Option<ScanRecord>,
    /// State messages accepted but not yet applied (T1.U2).
    pub pending_messages: u32,
    /// When a state message from this client was last rejected as corrupt (T1.U4).
    pub rejected_at: Option<Timestamp>,
    /// Reported states, sorted by update key.
    pub states: Vec<PackedState>,
}

/// Why a client as a whole has no usable state (every update is Unknown), if it has none.
pub fn client_unknown_reason(
    c: &ClientCompliance,
    scan_ttl: jiff::SignedDuration,
    minimum_agent_version: Option<&str>,
    now: Timestamp,
) -> Option<Reason> {
    if let Some(min) = minimum_agent_version {
        let too_old = match &c.agent_version {
            None => true,
            Some(v) => crate::catalog::applicability::compare_dotted(v, min) == std::cmp::Ordering::Less,
        };
        if too_old {
            return Some(Reason::AgentVersionUnsupported);
        }
    }
    let last_good = c.last_scan.as_ref().map(|s| s.time);
    if let Some(rejected) = c.rejected_at
        && last_good.is_none_or(|t| rejected >= t)
    {
        return Some(Reason::StateMessageCorrupt);
    }
    if let Some(failure) = &c.last_failure
        && last_good.is_none_or(|t| failure.time >= t)
    {
        return Some(Reason::ScanFailed);
    }
    match &c.last_scan {
        None if c.pending_messages > 0 => Some(Reason::StateNotProcessed),
        None => Some(Reason::NoStateReceived),
        Some(scan) if crate::time::add(scan.time, scan_ttl) < now => Some(Reason::StateExpired),
        Some(_) => None,
    }
}

/// Table 1 for one (client, update) whose client has a usable scan.
///
/// `reported`: the client's reported state for the update, if any; `deployed`: an
/// active deployment targets this update at this client; `update_since` and
/// `scanned_version`: the catalog version that introduced the update and the one the
/// client scanned against.
///
/// A scan can only speak for updates its catalog version contained: an update newer
/// than the scan is Unknown whatever else arrived for it.
pub fn classify(reported: Option<PackedState>, deployed: bool, update_since: u64, scanned_version: u64) -> Reason {
    if update_since > scanned_version {
        return Reason::NotScannedAgainstUpdate;
    }
    let Some(s) = reported else {
        return Reason::NotApplicable;
    };
    match (s.scan(), s.enforcement()) {
        (ScanResult::Installed, Enforcement::PendingReboot) => Reason::PendingReboot,
        (ScanResult::Installed, _) => Reason::Installed,
        (ScanResult::Missing, Enforcement::PendingReboot) => Reason::PendingReboot,
        (ScanResult::Missing, Enforcement::InstalledPendingScan) => Reason::InstalledStatePending,
        (ScanResult::Missing, e) if e.failed() => Reason::InstallFailed,
        (ScanResult::Missing, _) if deployed => Reason::DeployedNotInstalled,
        (ScanResult::Missing, _) => Reason::NotDeployed,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use jiff::SignedDuration;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const TTL: SignedDuration = SignedDuration::from_hours(24);

    fn scanned(time: &str) -> ClientCompliance {
        ClientCompliance {
            agent_version: Some("1.0.0".into()),
            last_scan: Some(ScanRecord { time: at(time), catalog_version: 3, error: None }),
            ..Default::default()
        }
    }

    fn missing(e: Enforcement) -> Option<PackedState> {
        Some(PackedState::new(7, ScanResult::Missing, e))
    }

    #[test]
    fn packed_states_round_trip_every_field() {
        for e in Enforcement::ALL {
            for scan in [ScanResult::Missing, ScanResult::Installed] {
                let p = PackedState::new(PackedState::MAX_KEY, scan, e);
                assert_eq!((p.key(), p.scan(), p.enforcement()), (PackedState::MAX_KEY, scan, e));
            }
        }
        assert_eq!(std::mem::size_of::<PackedState>(), 4);
    }

    #[test]
    fn the_bit_reads_the_tallies_use_agree_with_table_1() {
        for e in Enforcement::ALL {
            for scan in [ScanResult::Missing, ScanResult::Installed] {
                let p = PackedState::new(7, scan, e);
                let required = classify(Some(p), true, 1, 3).state() == ComplianceState::Required;
                assert_eq!(p.counter_slot() == 0, required, "{scan:?} {e:?}");
                assert_eq!((p.failed(), p.pending_reboot()), (e.failed(), e == Enforcement::PendingReboot), "{e:?}");
            }
        }
    }

    #[test]
    fn t1_r1_required_applicable_and_not_deployed() {
        let r = classify(missing(Enforcement::None), false, 1, 3);
        assert_eq!((r, r.state()), (Reason::NotDeployed, ComplianceState::Required));
    }

    #[test]
    fn t1_r2_required_installed_but_newer_state_not_yet_received() {
        let r = classify(missing(Enforcement::InstalledPendingScan), true, 1, 3);
        assert_eq!((r, r.state()), (Reason::InstalledStatePending, ComplianceState::Required));
    }

    #[test]
    fn t1_r3_required_installed_but_reboot_pending() {
        for scan in [ScanResult::Missing, ScanResult::Installed] {
            let r = classify(Some(PackedState::new(7, scan, Enforcement::PendingReboot)), true, 1, 3);
            assert_eq!((r, r.state()), (Reason::PendingReboot, ComplianceState::Required));
        }
    }

    #[test]
    fn t1_r4_required_deployed_not_yet_installed() {
        for e in [
            Enforcement::None,
            Enforcement::Downloading,
            Enforcement::Downloaded,
            Enforcement::WaitingForWindow,
            Enforcement::Installing,
        ] {
            let r = classify(missing(e), true, 1, 3);
            assert_eq!((r, r.state()), (Reason::DeployedNotInstalled, ComplianceState::Required), "{e:?}");
        }
        for e in [Enforcement::DownloadFailed, Enforcement::InstallFailed] {
            let r = classify(missing(e), true, 1, 3);
            assert_eq!((r, r.state()), (Reason::InstallFailed, ComplianceState::Required), "{e:?}");
        }
    }

    #[test]
    fn t1_n_not_required_when_the_scan_did_not_report_it() {
        let r = classify(None, true, 2, 3);
        assert_eq!((r, r.state()), (Reason::NotApplicable, ComplianceState::NotRequired));
    }

    #[test]
    fn t1_i_installed_when_applicable_and_installed() {
        let r = classify(Some(PackedState::new(7, ScanResult::Installed, Enforcement::None)), true, 1, 3);
        assert_eq!((r, r.state()), (Reason::Installed, ComplianceState::Installed));
    }

    #[test]
    fn t1_u1_unknown_when_the_last_scan_failed() {
        let mut c = scanned("2026-11-24T00:00:00Z");
        c.last_failure =
            Some(ScanRecord { time: at("2026-11-24T06:00:00Z"), catalog_version: 3, error: Some("0x80244022".into()) });
        assert_eq!(client_unknown_reason(&c, TTL, None, at("2026-11-24T07:00:00Z")), Some(Reason::ScanFailed));
        // A later successful scan clears it.
        c.last_scan.as_mut().unwrap().time = at("2026-11-24T06:30:00Z");
        assert_eq!(client_unknown_reason(&c, TTL, None, at("2026-11-24T07:00:00Z")), None);
    }

    #[test]
    fn t1_u2_unknown_while_received_states_are_not_processed() {
        let c = ClientCompliance { pending_messages: 2, ..Default::default() };
        assert_eq!(client_unknown_reason(&c, TTL, None, at("2026-11-24T07:00:00Z")), Some(Reason::StateNotProcessed));
    }

    #[test]
    fn t1_u3_unknown_when_no_state_message_was_received() {
        let c = ClientCompliance::default();
        assert_eq!(client_unknown_reason(&c, TTL, None, at("2026-11-24T07:00:00Z")), Some(Reason::NoStateReceived));
        assert_eq!(Reason::NoStateReceived.state(), ComplianceState::Unknown);
    }

    #[test]
    fn t1_u4_unknown_when_the_state_message_was_corrupt() {
        let mut c = scanned("2026-11-24T00:00:00Z");
        c.rejected_at = Some(at("2026-11-24T01:00:00Z"));
        assert_eq!(client_unknown_reason(&c, TTL, None, at("2026-11-24T02:00:00Z")), Some(Reason::StateMessageCorrupt));
    }

    #[test]
    fn f2_states_older_than_the_scan_ttl_are_unknown() {
        let c = scanned("2026-11-23T00:00:00Z");
        assert_eq!(client_unknown_reason(&c, TTL, None, at("2026-11-24T00:00:00Z")), None, "exactly 24 h: still valid");
        assert_eq!(client_unknown_reason(&c, TTL, None, at("2026-11-24T00:00:01Z")), Some(Reason::StateExpired));
    }

    #[test]
    fn s7_clients_below_the_minimum_agent_version_are_unknown() {
        let mut c = scanned("2026-11-24T00:00:00Z");
        c.agent_version = Some("7.2.6001.787".into());
        let now = at("2026-11-24T01:00:00Z");
        assert_eq!(client_unknown_reason(&c, TTL, Some("7.2.6001.788"), now), Some(Reason::AgentVersionUnsupported));
        c.agent_version = Some("7.10.0".into());
        assert_eq!(client_unknown_reason(&c, TTL, Some("7.2.6001.788"), now), None);
    }

    #[test]
    fn updates_newer_than_the_scanned_catalog_are_unknown() {
        let r = classify(None, true, 4, 3);
        assert_eq!((r, r.state()), (Reason::NotScannedAgainstUpdate, ComplianceState::Unknown));
    }
}

/// One managed client as the server sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Client {
    /// Unique client name (hostname as registered).
    pub name: String,
    /// Flat facts collections select on (os, site, role, hostname…).
    pub facts: std::collections::BTreeMap<String, String>,
    pub compliance: ClientCompliance,
}

/// Every client, sorted by name: the compliance snapshot the reconcile core reads.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    pub clients: Vec<Client>,
}

impl Fleet {
    pub fn new(mut clients: Vec<Client>) -> Self {
        clients.sort_by(|a, b| a.name.cmp(&b.name));
        Fleet { clients }
    }
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.clients.binary_search_by(|c| c.name.as_str().cmp(name)).ok()
    }
    pub fn state_count(&self) -> usize {
        self.clients.iter().map(|c| c.compliance.states.len()).sum()
    }
}
