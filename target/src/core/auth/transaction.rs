//! One controller's DH-HMAC-CHAP transaction, as the host drives it through
//! Authentication Send and Receive on the admin queue: Negotiate, then the Challenge
//! the host receives, its Reply, Success1 and, when the host asked to authenticate
//! the controller too, Success2. A protocol failure never shows as an NVMe status:
//! the host reads an AUTH_Failure1 message, and the controller does not survive it,
//! as with nvmet.

use std::sync::Arc;

use tracing::{info, warn};
use zeroize::Zeroizing;

use super::crypto::{self, DhGroup, DhKeyPair, HashFunction, Role, Secret};
use crate::wire::auth::{self as message, FailureReason, Negotiate, Reply};

/// A host's DH-HMAC-CHAP settings (nvmet's per-host `dhchap_*` attributes). With a
/// key, that host connects to a subsystem only once it has proved it holds the key.
#[derive(Clone, Debug, PartialEq)]
pub struct HostKeys {
    /// The host's secret: it authenticates the host.
    pub key: Secret,
    /// The controller's secret, for hosts that authenticate the controller in turn.
    pub controller_key: Option<Secret>,
    /// The hash to use when the host offers it (else the first one it offers).
    pub hash: HashFunction,
    /// The Diffie-Hellman group; a host that does not offer it is refused.
    pub group: DhGroup,
}

impl HostKeys {
    pub fn new(key: Secret) -> HostKeys {
        HostKeys { key, controller_key: None, hash: HashFunction::Sha256, group: DhGroup::Null }
    }
}

/// Where the transaction stands.
enum Step {
    /// Negotiated: the next Receive carries the Challenge.
    Challenge { hash: HashFunction, group: DhGroup },
    /// The Challenge went out: waiting for the host's Reply.
    Reply { hash: HashFunction, challenge: Vec<u8>, sequence: u32, key_pair: Option<DhKeyPair> },
    /// The Reply was right: the next Receive carries Success1, with the controller's
    /// response when the host asked for it.
    Success1 { hash: HashFunction, response: Option<Zeroizing<Vec<u8>>> },
    /// Success1 carried the controller's response: waiting for Success2.
    Success2,
    /// The transaction failed: the next Receive carries Failure1.
    Failure1(FailureReason),
    /// Nothing in progress: waiting for AUTH_Negotiate, which starts a transaction
    /// (the first, or a re-authentication).
    Idle,
}

/// What a Receive returns to the host.
pub struct Received {
    pub message: Vec<u8>,
    /// The message is a Failure1: the controller fails once it is sent.
    pub fatal: bool,
}

/// The authentication of one controller.
pub struct Authenticator {
    keys: Arc<HostKeys>,
    host_nqn: String,
    subsystem_nqn: String,
    step: Step,
    transaction: u16,
    authenticated: bool,
}

impl Authenticator {
    pub fn new(keys: Arc<HostKeys>, host_nqn: &str, subsystem_nqn: &str) -> Authenticator {
        Authenticator { keys, host_nqn: host_nqn.to_owned(), subsystem_nqn: subsystem_nqn.to_owned(), step: Step::Idle, transaction: 0, authenticated: false }
    }

    /// Whether the host has authenticated. It stays so while the host authenticates
    /// again (re-authentication); a failure ends the controller.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The keys a new transaction uses (they may have changed since the last one).
    pub fn set_keys(&mut self, keys: Arc<HostKeys>) {
        self.keys = keys;
    }

    /// The message of an Authentication Send. `Err` is a violation the controller does
    /// not survive (a message out of order, or the host's own Failure2).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), FailureReason> {
        let Some(header) = message::header(bytes) else {
            self.fail(FailureReason::IncorrectPayload, "message shorter than its header");
            return Ok(());
        };
        match (header.auth_type, header.auth_id) {
            (message::AUTH_TYPE_COMMON, message::NEGOTIATE) => {
                self.negotiate(bytes);
                Ok(())
            }
            (message::AUTH_TYPE_COMMON, message::FAILURE2) => {
                let reason = bytes.get(7).copied().unwrap_or(0);
                warn!(host = %self.host_nqn, subsystem = %self.subsystem_nqn, reason, "the host ended authentication with a failure");
                self.authenticated = false;
                self.step = Step::Idle;
                Err(FailureReason::Failed)
            }
            (message::AUTH_TYPE_DHCHAP, id) => {
                if header.transaction != self.transaction {
                    self.fail(FailureReason::IncorrectPayload, "transaction identifier differs from the negotiated one");
                    return Ok(());
                }
                match (std::mem::replace(&mut self.step, Step::Idle), id) {
                    (Step::Reply { hash, challenge, sequence, key_pair }, message::REPLY) => {
                        self.reply(bytes, hash, &challenge, sequence, key_pair.as_ref());
                        Ok(())
                    }
                    (Step::Success2, message::SUCCESS2) => {
                        self.authenticated = true;
                        info!(host = %self.host_nqn, subsystem = %self.subsystem_nqn, "host and controller authenticated each other");
                        Ok(())
                    }
                    _ => self.out_of_order(),
                }
            }
            _ => self.out_of_order(),
        }
    }

    /// The message an Authentication Receive returns, at most `allocation` bytes long;
    /// `None` if it does not fit (the transaction stays where it is).
    pub fn receive(&mut self, allocation: usize) -> Option<Received> {
        let transaction = self.transaction;
        let (message, next, fatal) = match &self.step {
            Step::Challenge { hash, group } => match challenge(*hash, *group) {
                Ok((challenge, sequence, key_pair)) => {
                    let public = key_pair.as_ref().map_or(&[][..], DhKeyPair::public);
                    let message = message::encode_challenge(transaction, hash.id(), hash.len() as u8, group.id(), sequence, &challenge, public);
                    (message, Step::Reply { hash: *hash, challenge, sequence, key_pair }, false)
                }
                Err(error) => {
                    warn!(host = %self.host_nqn, %error, "cannot build a challenge");
                    (message::encode_failure1(transaction, FailureReason::Failed), Step::Idle, true)
                }
            },
            Step::Success1 { hash, response } => {
                let message = message::encode_success1(transaction, hash.len() as u8, response.as_deref().map(Vec::as_slice));
                let next = if response.is_some() { Step::Success2 } else { Step::Idle };
                if response.is_none() {
                    info!(host = %self.host_nqn, subsystem = %self.subsystem_nqn, "host authenticated");
                }
                (message, next, false)
            }
            Step::Failure1(reason) => (message::encode_failure1(transaction, *reason), Step::Idle, true),
            // Nothing to receive now: the host is out of step.
            Step::Reply { .. } | Step::Success2 | Step::Idle => {
                warn!(host = %self.host_nqn, subsystem = %self.subsystem_nqn, "authentication receive out of order");
                (message::encode_failure1(transaction, FailureReason::Failed), Step::Idle, true)
            }
        };
        if message.len() > allocation {
            return None;
        }
        if fatal {
            self.authenticated = false;
        }
        self.step = next;
        Some(Received { message, fatal })
    }

    /// AUTH_Negotiate, accepted at any time: it starts a new transaction.
    fn negotiate(&mut self, bytes: &[u8]) {
        let negotiate = match Negotiate::parse(bytes) {
            Ok(negotiate) => negotiate,
            Err(reason) => {
                self.transaction = message::header(bytes).map_or(0, |h| h.transaction);
                self.fail(reason, "unusable negotiate message");
                return;
            }
        };
        self.transaction = negotiate.transaction;
        // The configured hash if the host offers it, else the first it offers that we
        // know (nvmet's choice); the configured group or nothing.
        let offered = |id: &u8| HashFunction::from_id(*id);
        let hash = if negotiate.hashes.contains(&self.keys.hash.id()) { Some(self.keys.hash) } else { negotiate.hashes.iter().find_map(offered) };
        let Some(hash) = hash else {
            self.fail(FailureReason::HashUnusable, "the host offers no usable hash function");
            return;
        };
        if !negotiate.groups.contains(&self.keys.group.id()) {
            self.fail(FailureReason::DhGroupUnusable, "the host does not offer the configured DH group");
            return;
        }
        self.step = Step::Challenge { hash, group: self.keys.group };
    }

    /// The host's Reply to our Challenge.
    fn reply(&mut self, bytes: &[u8], hash: HashFunction, challenge: &[u8], sequence: u32, key_pair: Option<&DhKeyPair>) {
        let reply = match Reply::parse(bytes) {
            Ok(reply) => reply,
            Err(reason) => return self.fail(reason, "malformed reply"),
        };
        if usize::from(reply.hash_len) != hash.len() {
            return self.fail(FailureReason::Failed, "reply with the wrong hash length");
        }
        let session_key = match key_pair {
            None if reply.dh_value.is_empty() => None,
            None => return self.fail(FailureReason::IncorrectPayload, "a DH value without a DH group"),
            Some(pair) => match pair.shared_secret(reply.dh_value) {
                Ok(shared) => Some(crypto::session_key(hash, &shared)),
                Err(_) => return self.fail(FailureReason::DhGroupUnusable, "unusable DH value"),
            },
        };
        let key = self.keys.key.transform(&self.host_nqn);
        let expected = crypto::response(hash, &key, challenge, session_key.as_deref().map(Vec::as_slice), sequence, self.transaction, 0, Role::Host, &self.host_nqn, &self.subsystem_nqn);
        if !crypto::constant_time_eq(&expected, reply.response) {
            return self.fail(FailureReason::Failed, "wrong response: the host does not hold its key");
        }
        // A sequence number of 0 asks for no controller response (nvmet's reading).
        if !reply.cvalid || reply.sequence == 0 {
            self.authenticated = true;
            self.step = Step::Success1 { hash, response: None };
            return;
        }
        let Some(controller_key) = &self.keys.controller_key else {
            return self.fail(FailureReason::Failed, "the host asks the controller to authenticate, and it has no key for that");
        };
        let key = controller_key.transform(&self.subsystem_nqn);
        let response = crypto::response(hash, &key, reply.challenge, session_key.as_deref().map(Vec::as_slice), reply.sequence, self.transaction, 0, Role::Controller, &self.host_nqn, &self.subsystem_nqn);
        self.step = Step::Success1 { hash, response: Some(response) };
    }

    /// The transaction fails: the next Receive tells the host why.
    fn fail(&mut self, reason: FailureReason, why: &str) {
        warn!(host = %self.host_nqn, subsystem = %self.subsystem_nqn, reason = reason.describe(), why, "authentication failed");
        self.step = Step::Failure1(reason);
    }

    fn out_of_order(&mut self) -> Result<(), FailureReason> {
        warn!(host = %self.host_nqn, subsystem = %self.subsystem_nqn, "authentication message out of order");
        self.authenticated = false;
        self.step = Step::Idle;
        Err(FailureReason::IncorrectMessage)
    }
}

/// A fresh challenge, sequence number and (with a DH group) key pair.
fn challenge(hash: HashFunction, group: DhGroup) -> Result<(Vec<u8>, u32, Option<DhKeyPair>), crypto::CryptoError> {
    let challenge = crypto::random_bytes(hash.len())?;
    let sequence = crypto::random_sequence()?;
    let key_pair = if group == DhGroup::Null { None } else { Some(group.generate()?) };
    Ok((challenge, sequence, key_pair))
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("host", &self.host_nqn).field("authenticated", &self.authenticated).finish_non_exhaustive()
    }
}

