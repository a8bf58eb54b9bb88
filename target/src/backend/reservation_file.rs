//! Reservations with Persist Through Power Loss, kept in one small JSON file: every
//! change writes a new file beside it, syncs it, renames it over the old one and syncs
//! the directory, so a crash leaves the old state or the new one, never a mix.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::core::reservation::{ReservationState, ReservationStore};

#[derive(Debug)]
pub struct ReservationFile {
    path: PathBuf,
    /// The file's content: state by subsystem NQN and NSID.
    states: Mutex<BTreeMap<(String, u32), ReservationState>>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    namespaces: Vec<SavedNamespace>,
}

#[derive(Serialize, Deserialize)]
struct SavedNamespace {
    subsystem: String,
    nsid: u32,
    #[serde(flatten)]
    state: ReservationState,
}

#[derive(Debug, thiserror::Error)]
pub enum ReservationFileError {
    #[error("reading reservation state {path}")]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("reservation state {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ReservationFile {
    /// Reads `path`; a file that does not exist yet is an empty state.
    pub fn open(path: &Path) -> Result<ReservationFile, ReservationFileError> {
        let states = match std::fs::read_to_string(path) {
            Ok(text) => {
                let saved: Saved = serde_json::from_str(&text).map_err(|e| ReservationFileError::Invalid { path: path.to_owned(), message: e.to_string() })?;
                saved.namespaces.into_iter().map(|n| ((n.subsystem, n.nsid), n.state)).collect()
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(ReservationFileError::Read { path: path.to_owned(), source }),
        };
        Ok(ReservationFile { path: path.to_owned(), states: Mutex::new(states) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, states: &BTreeMap<(String, u32), ReservationState>) -> std::io::Result<()> {
        let saved = Saved {
            namespaces: states.iter().map(|((subsystem, nsid), state)| SavedNamespace { subsystem: subsystem.clone(), nsid: *nsid, state: state.clone() }).collect(),
        };
        let text = serde_json::to_string_pretty(&saved).map_err(std::io::Error::other)?;
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        // Keys let their bearer preempt: readable by the target's user only.
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, &self.path)?;
        let directory = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(directory)?.sync_all()
    }
}

impl ReservationStore for ReservationFile {
    fn load(&self, subsystem: &str, namespace_id: u32) -> Option<ReservationState> {
        self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&(subsystem.to_owned(), namespace_id)).cloned()
    }

    fn save(&self, subsystem: &str, namespace_id: u32, state: Option<&ReservationState>) -> std::io::Result<()> {
        let mut states = self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = states.clone();
        let key = (subsystem.to_owned(), namespace_id);
        match state {
            Some(state) => next.insert(key, state.clone()),
            None => next.remove(&key),
        };
        self.write(&next)?;
        *states = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reservation::{Holder, Registrant};
    use crate::wire::reservation::ReservationType;

    fn directory(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!("p2ptgt-reservations-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        directory
    }

    #[test]
    fn state_survives_reopening_and_forgetting_removes_it() {
        let directory = directory("reopen");
        let path = directory.join("reservations.json");
        let state = ReservationState {
            generation: 3,
            registrants: vec![Registrant { host_id: [1; 16], key: 0xAB }],
            holder: Some(Holder { host_id: [1; 16], rtype: ReservationType::ExclusiveAccess }),
            persist: true,
        };
        let file = ReservationFile::open(&path).unwrap();
        assert_eq!(file.load("nqn.2026-11.io.p2ptgt:a", 1), None, "no file yet: empty");
        file.save("nqn.2026-11.io.p2ptgt:a", 1, Some(&state)).unwrap();
        file.save("nqn.2026-11.io.p2ptgt:a", 2, Some(&state)).unwrap();
        let reopened = ReservationFile::open(&path).unwrap();
        assert_eq!(reopened.load("nqn.2026-11.io.p2ptgt:a", 1), Some(state.clone()));
        reopened.save("nqn.2026-11.io.p2ptgt:a", 1, None).unwrap();
        let again = ReservationFile::open(&path).unwrap();
        assert_eq!(again.load("nqn.2026-11.io.p2ptgt:a", 1), None);
        assert_eq!(again.load("nqn.2026-11.io.p2ptgt:a", 2), Some(state));
        assert!(!directory.join("reservations.json.new").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "keys are the target user's only");
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_error_and_a_failed_write_keeps_the_old_state() {
        let directory = directory("damaged");
        let path = directory.join("reservations.json");
        std::fs::write(&path, "{ not json").unwrap();
        assert!(matches!(ReservationFile::open(&path), Err(ReservationFileError::Invalid { .. })));
        let missing_directory = ReservationFile { path: directory.join("gone/reservations.json"), states: Mutex::default() };
        assert!(missing_directory.save("nqn.2026-11.io.p2ptgt:a", 1, Some(&ReservationState::default())).is_err());
        assert_eq!(missing_directory.load("nqn.2026-11.io.p2ptgt:a", 1), None, "not kept when not written");
        std::fs::remove_dir_all(directory).unwrap();
    }
}
