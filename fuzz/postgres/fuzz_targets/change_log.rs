//! The PostgreSQL change log's decoding: the rows of one log read (horizon,
//! entries, joined session rows) turned into a page of changes.
//!
//! The read is structured with `arbitrary`. The rows are decoded twice: as
//! given, which must only never panic, and as the read's SQL can return
//! them (committed entries after the cursor, in order, at most `limit`, a creation
//! joined to the session with its hash, one row of nulls if none), where
//! the page must keep its documented promises:
//! - an entry either becomes a change or, for a session row the domain
//!   rejects (an infinite or out-of-range instant among them) or a
//!   malformed hash, a typed `InvalidRow` at its position;
//! - entries are in order, after the cursor, and no further than `read_to`;
//! - `settled` is at least the cursor and never passes an entry of a
//!   transaction at or above the horizon (xmin), which may yet get earlier
//!   neighbours;
//! - `Expired` exactly when the epoch changed or the cursor was pruned.

#![no_main]

use std::net::IpAddr;

use arbitrary::Arbitrary;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use session_core::port::change_log::{Change, LogPosition, LogRead};
use session_postgres::{LogRow, RawInstant, read_log_page};
use uuid::Uuid;

#[derive(Arbitrary, Debug)]
struct Read {
    epoch: u8,
    xmin: u16,
    pruned_through: u16,
    after: (u8, u16, u16),
    limit: u8,
    entries: Vec<Entry>,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    xid: u16,
    seq: u16,
    kind: Kind,
    change_hash: Vec<u8>,
    session: Option<Joined>,
}

/// The `kind` column; `Other` may spell one of the others too.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
enum Kind {
    Created,
    Revoked,
    Truncated,
    Other(String),
}

impl Kind {
    fn text(&self) -> String {
        match self {
            Self::Created => "c".to_owned(),
            Self::Revoked => "r".to_owned(),
            Self::Truncated => "t".to_owned(),
            Self::Other(text) => text.clone(),
        }
    }
}

/// A session row joined to a creation entry.
#[derive(Arbitrary, Debug, Clone)]
struct Joined {
    id: u128,
    account_id: u128,
    token_hash: Vec<u8>,
    /// Raw `timestamptz` microseconds since 2000: any value, the
    /// infinities (`i64::MAX`, `i64::MIN`) included.
    created_at: i64,
    revoked_at: Option<i64>,
    user_agent: Option<String>,
    ip: Option<(IpAddr, u8)>,
    label: Option<String>,
}

fn ip_net((ip, prefix): (IpAddr, u8)) -> IpNet {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    IpNet::new(ip, prefix % (max + 1)).expect("prefix in range")
}

impl Read {
    fn row(&self, entry: Option<(&Entry, Option<&Joined>)>) -> LogRow {
        let joined = entry.and_then(|(_, joined)| joined);
        LogRow {
            epoch: i64::from(self.epoch),
            xmin: i64::from(self.xmin),
            pruned_through: i64::from(self.pruned_through),
            xid: entry.map(|(e, _)| i64::from(e.xid)),
            seq: entry.map(|(e, _)| i64::from(e.seq)),
            kind: entry.map(|(e, _)| e.kind.text()),
            change_hash: entry.map(|(e, _)| e.change_hash.clone()),
            id: joined.map(|s| Uuid::from_u128(s.id)),
            account_id: joined.map(|s| Uuid::from_u128(s.account_id)),
            token_hash: joined.map(|s| s.token_hash.clone()),
            created_at: joined.map(|s| RawInstant(s.created_at)),
            revoked_at: joined.and_then(|s| s.revoked_at.map(RawInstant)),
            user_agent: joined.and_then(|s| s.user_agent.clone()),
            ip: joined.and_then(|s| s.ip.map(ip_net)),
            label: joined.and_then(|s| s.label.clone()),
        }
    }

    fn after(&self) -> LogPosition {
        let (epoch, major, minor) = self.after;
        LogPosition::new(u64::from(epoch), u64::from(major), u64::from(minor))
    }

    fn position(&self, entry: &Entry) -> LogPosition {
        LogPosition::new(
            u64::from(self.epoch),
            u64::from(entry.xid),
            u64::from(entry.seq),
        )
    }
}

fuzz_target!(|read: Read| {
    let after = read.after();
    let limit = u32::from(read.limit).max(1);

    // As given: anything a corrupt or hostile row holds must not panic.
    let raw: Vec<LogRow> = read
        .entries
        .iter()
        .map(|entry| read.row(Some((entry, entry.session.as_ref()))))
        .collect();
    let _ = read_log_page(after, limit, raw);

    // As the SQL returns them.
    let mut entries: Vec<&Entry> = read
        .entries
        .iter()
        // xmin is a transaction still running: none of its entries is visible.
        .filter(|e| e.xid != read.xmin)
        .filter(|e| (u64::from(e.xid), u64::from(e.seq)) > (after.major(), after.minor()))
        .collect();
    entries.sort_by_key(|e| (e.xid, e.seq));
    entries.dedup_by_key(|e| (e.xid, e.seq));
    entries.truncate(limit as usize);
    // A creation joins the session whose token hash it names.
    let joined: Vec<Option<Joined>> = entries
        .iter()
        .map(|e| {
            let session = e.session.as_ref().filter(|_| e.kind.text() == "c")?;
            Some(Joined {
                token_hash: e.change_hash.clone(),
                ..session.clone()
            })
        })
        .collect();
    let mut rows: Vec<LogRow> = entries
        .iter()
        .zip(&joined)
        .map(|(e, s)| read.row(Some((e, s.as_ref()))))
        .collect();
    if rows.is_empty() {
        rows.push(read.row(None));
    }

    let expired =
        after.epoch() != u64::from(read.epoch) || after.major() <= u64::from(read.pruned_through);
    let page = match read_log_page(after, limit, rows) {
        LogRead::Expired => {
            assert!(expired, "a live cursor was declared expired");
            return;
        }
        LogRead::Page(page) => {
            assert!(!expired, "an expired cursor got a page");
            page
        }
    };

    let positions: Vec<LogPosition> = entries.iter().map(|e| read.position(e)).collect();
    assert_eq!(page.read_to, positions.last().copied().unwrap_or(after));
    assert_eq!(page.more, entries.len() == limit as usize);
    assert!(page.settled >= after, "settled moved back");
    let horizon = u64::from(read.xmin);
    for at in positions.iter().filter(|at| at.major() >= horizon) {
        assert!(
            page.settled < *at,
            "settled passed an entry at or above xmin"
        );
    }
    for pair in page.entries.windows(2) {
        assert!(pair[0].position < pair[1].position, "entries out of order");
    }
    for entry in &page.entries {
        assert!(entry.position > after && entry.position <= page.read_to);
        assert!(positions.contains(&entry.position));
    }

    // Every entry is accounted for: a change, a rejection or (a creation
    // whose session is gone or revoked) nothing.
    let mut expected_created = 0;
    let mut expected_revoked = 0;
    let mut expected_reloads = 0;
    let mut expected_bad_hashes = 0;
    for (e, s) in entries.iter().zip(&joined) {
        match e.kind.text().as_str() {
            "c" => {
                expected_created += usize::from(s.as_ref().is_some_and(|s| s.revoked_at.is_none()))
            }
            "r" if e.change_hash.len() == 32 => expected_revoked += 1,
            "r" => expected_bad_hashes += 1,
            _ => expected_reloads += 1,
        }
    }
    let mut created = 0;
    let mut revoked = 0;
    let mut reloads = 0;
    for entry in &page.entries {
        match &entry.change {
            Change::Created(session) => {
                assert!(session.is_active());
                created += 1;
            }
            Change::Revoked(hashes) => revoked += hashes.len(),
            Change::Reload => reloads += 1,
        }
    }
    for (at, _) in &page.rejected {
        assert!(positions.contains(at));
    }
    assert_eq!(
        created + page.rejected.len(),
        expected_created + expected_bad_hashes
    );
    assert_eq!(revoked, expected_revoked);
    assert_eq!(reloads, expected_reloads);
});
