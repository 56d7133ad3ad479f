//! The PostgreSQL change log's cursor: the rows of each read turned into a
//! page and the next cursor.
//!
//! Two parts. First, rows as given, built by `arbitrary`: decoding them must
//! only never panic. Second, a model of the database: transactions begin
//! (taking ids in order), insert entries (taking numbers in order, so a
//! transaction that began first may number its entries after one that began
//! later), and commit or roll back in any order, while a reader reads the
//! log from its cursor, pages of any size, at any moment. The model answers
//! each read as the read's SQL does from one snapshot: the horizon row (the
//! transactions still open), then the first `limit` visible entries by
//! number among those numbered past the cursor and those of the
//! transactions the cursor waits for, past each one's mark, and those of
//! every transaction from the cursor's `open_from` on; a snapshot lists
//! only the open transactions below its xmax, one past the newest that has
//! ended, as PostgreSQL's does. The property:
//! once everything has ended and the reader has read to the end, it was
//! given every committed entry exactly once, and no entry of a rolled-back
//! transaction.

#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use session_core::port::change_log::{Change, LogCursor, LogRead};
use session_postgres::{LogRow, read_log_page};

/// One row: the horizon's columns, or an entry's, as given.
#[derive(Arbitrary, Debug)]
struct RawRow {
    epoch: Option<i64>,
    expired: Option<bool>,
    open_now: Option<Vec<i64>>,
    open_from: Option<i64>,
    late: Option<Vec<i64>>,
    seq: Option<i64>,
    kind: Option<String>,
    change_hash: Option<Vec<u8>>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// A transaction takes its id.
    Begin,
    /// The `n`th transaction (modulo those begun) logs an entry, if open.
    Insert(u8),
    /// It commits, if open.
    Commit(u8),
    /// It rolls back, if open.
    Abort(u8),
    /// The reader reads a page of at most `limit + 1` entries.
    Read(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<RawRow>,
    raw_cursor: (u64, u64, Vec<(u64, u64)>, u64),
    raw_limit: u8,
    steps: Vec<Step>,
}

/// A row with every session column null: the model logs revocations only,
/// whose hash carries the entry's number.
/// The horizon row's columns: epoch, expired, open, open from, late.
type Horizon = (i64, bool, Vec<i64>, i64, Vec<i64>);

fn row(horizon: Option<Horizon>, entry: Option<(i64, String, Vec<u8>)>) -> LogRow {
    let (epoch, expired, open_now, open_from, late) = match horizon {
        Some((epoch, expired, open, from, late)) => (
            Some(epoch),
            Some(expired),
            Some(open),
            Some(from),
            Some(late),
        ),
        None => (None, None, None, None, None),
    };
    let (seq, kind, change_hash) = match entry {
        Some((seq, kind, hash)) => (Some(seq), Some(kind), Some(hash)),
        None => (None, None, None),
    };
    LogRow {
        epoch,
        expired,
        open_now,
        open_from,
        late,
        not_before: None,
        seq,
        kind,
        change_hash,
        id: None,
        account_id: None,
        token_hash: None,
        created_at: None,
        revoked_at: None,
        user_agent: None,
        ip: None,
        label: None,
    }
}

fn hash_of(seq: u64) -> Vec<u8> {
    let mut hash = vec![0; 32];
    hash[..8].copy_from_slice(&seq.to_be_bytes());
    hash
}

fn seq_of(hash: &[u8]) -> u64 {
    u64::from_be_bytes(hash[..8].try_into().expect("32 bytes"))
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Open,
    Committed,
    Aborted,
}

/// The database as the model sees it.
#[derive(Default)]
struct Database {
    /// By id, in the order they began.
    transactions: Vec<State>,
    /// Entry number → its transaction's id.
    entries: BTreeMap<u64, usize>,
    next_seq: u64,
}

const EPOCH: i64 = 7;
/// Ids start here, so none is 0.
const FIRST_XID: usize = 100;

impl Database {
    fn open(&self, n: u8) -> Option<usize> {
        let open: Vec<usize> = (0..self.transactions.len())
            .filter(|&id| self.transactions[id] == State::Open)
            .collect();
        (!open.is_empty()).then(|| open[usize::from(n) % open.len()])
    }

    fn visible(&self, seq: u64) -> bool {
        self.transactions[self.entries[&seq]] == State::Committed
    }

    /// A snapshot's xmax, as PostgreSQL takes it: one past the newest
    /// transaction that has ended. An open transaction at or above it is
    /// invisible and not in the snapshot's list.
    fn xmax(&self) -> usize {
        (0..self.transactions.len())
            .filter(|&id| self.transactions[id] != State::Open)
            .max()
            .map_or(FIRST_XID, |id| id + FIRST_XID + 1)
    }

    /// The rows of one read from `cursor`, as the read's SQL returns them.
    fn read(&self, cursor: &LogCursor, limit: usize) -> Vec<LogRow> {
        let xmax = self.xmax();
        let open_now: Vec<i64> = (0..self.transactions.len())
            .filter(|&id| self.transactions[id] == State::Open && id + FIRST_XID < xmax)
            .map(|id| (id + FIRST_XID) as i64)
            .collect();
        let xid_of = |seq: u64| (self.entries[&seq] + FIRST_XID) as u64;
        let waits_for = |seq: u64| {
            let xid = xid_of(seq);
            cursor
                .open()
                .iter()
                .any(|writer| writer.id == xid && seq > writer.read_through)
        };
        let late_entry = |seq: u64| xid_of(seq) >= cursor.open_from() && seq <= cursor.through();
        let mut late: Vec<i64> = self
            .entries
            .keys()
            .copied()
            .filter(|&seq| self.visible(seq) && late_entry(seq))
            .map(|seq| xid_of(seq) as i64)
            .collect();
        late.sort_unstable();
        late.dedup();
        let horizon = (EPOCH, false, open_now, xmax as i64, late);
        let mut rows = vec![row(Some(horizon), None)];
        rows.extend(
            self.entries
                .keys()
                .copied()
                .filter(|&seq| self.visible(seq))
                .filter(|&seq| seq > cursor.through() || waits_for(seq) || late_entry(seq))
                .take(limit)
                .map(|seq| row(None, Some((seq as i64, "r".to_owned(), hash_of(seq))))),
        );
        rows
    }
}

fuzz_target!(|input: Input| {
    // As given: anything a corrupt or hostile row holds must not panic.
    let (epoch, through, open, open_from) = input.raw_cursor;
    let open = open
        .into_iter()
        .map(|(id, read_through)| session_core::port::change_log::OpenWriter { id, read_through })
        .collect();
    let raw: Vec<LogRow> = input
        .raw
        .into_iter()
        .map(|raw| LogRow {
            epoch: raw.epoch,
            expired: raw.expired,
            open_now: raw.open_now,
            open_from: raw.open_from,
            late: raw.late,
            ..row(
                None,
                raw.seq
                    .zip(raw.kind)
                    .map(|(seq, kind)| (seq, kind, raw.change_hash.unwrap_or_default())),
            )
        })
        .collect();
    let _ = read_log_page(
        &LogCursor::new(epoch, through, open).with_open_from(open_from),
        u32::from(input.raw_limit),
        raw,
    );

    // The model.
    let mut database = Database {
        next_seq: 1,
        ..Database::default()
    };
    let mut cursor = LogCursor::new(EPOCH as u64, 0, Vec::new()).with_open_from(FIRST_XID as u64);
    let mut given: BTreeMap<u64, usize> = BTreeMap::new();
    let mut read = |database: &Database, cursor: &mut LogCursor, limit: usize| -> bool {
        let rows = database.read(cursor, limit);
        let LogRead::Page(page) = read_log_page(cursor, limit as u32, rows) else {
            panic!("a live cursor expired");
        };
        for change in &page.entries {
            let Change::Revoked(hashes) = change else {
                panic!("the model logs revocations only: {change:?}");
            };
            for hash in hashes {
                *given.entry(seq_of(hash.as_bytes())).or_default() += 1;
            }
        }
        assert!(page.rejected.is_empty());
        assert!(page.entries.len() <= limit);
        *cursor = page.next;
        page.more
    };
    for step in input.steps.into_iter().take(400) {
        match step {
            Step::Begin => database.transactions.push(State::Open),
            Step::Insert(n) => {
                if let Some(id) = database.open(n) {
                    database.entries.insert(database.next_seq, id);
                    database.next_seq += 1;
                }
            }
            Step::Commit(n) | Step::Abort(n) => {
                let end = if matches!(step, Step::Commit(_)) {
                    State::Committed
                } else {
                    State::Aborted
                };
                if let Some(id) = database.open(n) {
                    database.transactions[id] = end;
                }
            }
            Step::Read(limit) => {
                read(&database, &mut cursor, usize::from(limit % 8) + 1);
            }
        }
    }
    for state in &mut database.transactions {
        if *state == State::Open {
            *state = State::Committed;
        }
    }
    // Read to the end: each full page moves the cursor, so this ends.
    let mut pages = 0;
    while read(&database, &mut cursor, 3) {
        pages += 1;
        assert!(
            pages <= database.entries.len() + 1,
            "a full page moved nowhere"
        );
    }
    assert!(!read(&database, &mut cursor, 3));
    for (&seq, &id) in &database.entries {
        let expected = usize::from(database.transactions[id] == State::Committed);
        assert_eq!(
            given.get(&seq).copied().unwrap_or(0),
            expected,
            "entry {seq} of transaction {id}"
        );
    }
    assert_eq!(
        given.values().sum::<usize>(),
        given.len(),
        "an entry given twice"
    );
});
