//! The audit trail: who wrote what, when and why, recorded in the same transaction as
//! each write made through an [`EtcdClient`](crate::EtcdClient) with
//! [`with_audit`](crate::EtcdClient::with_audit).
//!
//! Records live under `/_audit` followed by the configuration's prefix
//! (`/app` → `/_audit/app/`): outside the prefix, so readers of the configuration never
//! see them. Each record is written once and never changed, so etcd keeps it through
//! compaction (which drops only superseded versions): the trail outlives the history of
//! the values. Secret values are recorded as `********`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// What a secret value is recorded as.
pub const MASK: &str = "********";

/// Who writes, and why: attached to a client with
/// [`with_audit`](crate::EtcdClient::with_audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Who (an operator's name).
    pub author: String,
    /// Why, if said.
    pub reason: Option<String>,
}

/// One value a recorded write changed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditChange {
    /// The etcd key.
    pub key: String,
    /// The name it holds, when it names one.
    pub name: Option<String>,
    /// The value before (`None`: absent), `********` for a secret.
    pub old: Option<String>,
    /// The value after (`None`: deleted), `********` for a secret.
    pub new: Option<String>,
}

impl std::fmt::Debug for AuditChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Recorded values are masked when secret, but may still be sensitive to a log.
        f.debug_struct("AuditChange")
            .field("key", &self.key)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One write, as the audit trail recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// The revision of the write (etcd's, filled in when the trail is read).
    #[serde(skip)]
    pub revision: i64,
    /// When, RFC 3339 in UTC.
    pub at: String,
    /// Who.
    pub author: String,
    /// Why, if said.
    pub reason: Option<String>,
    /// What the write did: `put`, `import`, `rollback to N`, …
    pub action: String,
    /// Every value it changed.
    pub changes: Vec<AuditChange>,
}

/// The audit prefix of a configuration prefix (with or without its trailing `/`).
pub(crate) fn prefix_for(prefix: &str) -> String {
    format!("/_audit{}/", prefix.trim_end_matches('/'))
}

/// A key for a new record under `audit_prefix`: the time, then a number unique in this
/// process, so that records list in the order they were made.
pub(crate) fn record_key(audit_prefix: &str, at: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{audit_prefix}{at}-{}-{n}", std::process::id())
}

/// Now, as recorded.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_live_outside_the_prefix_and_sort_by_time() {
        assert_eq!(prefix_for("/app"), "/_audit/app/");
        assert_eq!(prefix_for("/app/"), "/_audit/app/");
        assert!(!prefix_for("/app").starts_with("/app/"));
        let first = record_key("/_audit/app/", "2026-11-26T10:00:00.000Z");
        let second = record_key("/_audit/app/", "2026-11-26T10:00:00.001Z");
        assert!(first < second);
        assert_ne!(
            record_key("/_audit/app/", "t"),
            record_key("/_audit/app/", "t")
        );
    }

    #[test]
    fn a_record_reads_back_and_debug_shows_no_value() {
        let record = AuditRecord {
            revision: 0,
            at: now(),
            author: "alice".to_owned(),
            reason: Some("raise the pool".to_owned()),
            action: "put".to_owned(),
            changes: vec![AuditChange {
                key: "/app/Pool".to_owned(),
                name: Some("pool".to_owned()),
                old: Some("20".to_owned()),
                new: Some("30-visible-in-json".to_owned()),
            }],
        };
        let json = serde_json::to_string(&record).unwrap();
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
        let debug = format!("{record:?}");
        assert!(!debug.contains("30-visible-in-json"), "{debug}");
        // What it does show: the key and the name.
        assert!(
            debug.contains(r#"key: "/app/Pool", name: Some("pool")"#),
            "{debug}"
        );
    }

    #[test]
    fn now_is_the_current_time_in_rfc_3339() {
        let before = std::time::SystemTime::now();
        let at = humantime::parse_rfc3339(&now()).unwrap();
        let after = std::time::SystemTime::now();
        // Recorded to the millisecond.
        let floor = before - std::time::Duration::from_millis(1);
        assert!(
            floor <= at && at <= after,
            "{at:?} not in {before:?}..{after:?}"
        );
    }
}
