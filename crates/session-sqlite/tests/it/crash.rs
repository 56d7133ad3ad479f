//! A writer process killed with SIGKILL in the middle of a stream of writes
//! loses none it acknowledged.
//!
//! The test re-runs its own binary as the writer: with [`WRITER_DB`] set, the
//! same test function writes to that file and prints one line per write only
//! after the store returned `Ok`. The parent kills it mid-stream, reads every
//! line it managed to print, reopens the file and looks for each write.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use session_core::port::store::SessionStore;
use session_core::testkit::{account, epoch, session_at};
use session_core::{ListScope, SessionId};
use session_sqlite::SqliteSessionStore;
use time::Duration;

use crate::support::temp_db;

/// Set in the child: the database file to write to.
const WRITER_DB: &str = "SESSION_SQLITE_CRASH_WRITER_DB";
/// The parent kills the writer once it has read this many acknowledgements.
const KILL_AFTER: usize = 200;
/// The writer gives up on its own after this many sessions, far more than the
/// parent waits for, so a parent that never kills it cannot leave it running.
const WRITER_LIMIT: i64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    match std::env::var_os(WRITER_DB) {
        Some(path) => write_until_killed(Path::new(&path)).await,
        None => kill_a_writer_and_check_its_writes().await,
    }
}

/// What the writer acknowledged: created sessions with their token hashes, and
/// revoked session ids.
#[derive(Default)]
struct Acks {
    created: HashMap<SessionId, String>,
    revoked: HashSet<SessionId>,
}

async fn kill_a_writer_and_check_its_writes() {
    let (_dir, path) = temp_db();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash::acknowledged_writes_survive_sigkill",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DB, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the test binary re-runs itself as the writer");
    let stdout = child.stdout.take().unwrap();

    let (acks, killed, status) = tokio::task::spawn_blocking(move || {
        let mut acks = Acks::default();
        let mut killed = false;
        // Lines printed before the kill may still be in the pipe: they are
        // acknowledged writes too, so read to the end.
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // The harness prints `test <name> ... ` without a line break before
            // running the test, so the first acknowledgement shares its line.
            let Some(start) = line.find("ack ") else {
                continue;
            };
            let mut words = line[start..].split(' ');
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("ack"), Some("created"), Some(id), Some(hash)) => {
                    acks.created.insert(id.parse().unwrap(), hash.to_owned());
                }
                (Some("ack"), Some("revoked"), Some(id), None) => {
                    acks.revoked.insert(id.parse().unwrap());
                }
                _ => panic!("unexpected acknowledgement: {line}"),
            }
            if !killed && acks.created.len() + acks.revoked.len() == KILL_AFTER {
                // `Child::kill` is SIGKILL on Unix: no destructors, no flushing.
                child.kill().unwrap();
                killed = true;
            }
        }
        (acks, killed, child.wait().unwrap())
    })
    .await
    .unwrap();

    let total = acks.created.len() + acks.revoked.len();
    assert!(
        killed,
        "the writer stopped by itself after {total} acknowledged writes ({status})"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL, got {status}");
    }
    assert!(!acks.revoked.is_empty(), "the stream included revokes");

    let store = SqliteSessionStore::open(&path).await.unwrap();
    let mut revoked_unacknowledged = 0;
    for (id, hash) in &acks.created {
        let session = store
            .get(*id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged create of {id} was lost"));
        assert_eq!(&hex(session.token_hash.as_bytes()), hash, "{id}");
        let found = store
            .find_active_by_hash(&session.token_hash)
            .await
            .unwrap();
        if acks.revoked.contains(id) {
            assert!(
                session.revoked_at().is_some() && found.is_none(),
                "acknowledged revoke of {id} was lost"
            );
        } else if session.revoked_at().is_some() {
            // The revoke in flight at the kill may have committed unacknowledged.
            revoked_unacknowledged += 1;
        } else {
            assert_eq!(found.as_ref(), Some(&session), "{id}");
        }
    }
    assert!(
        revoked_unacknowledged <= 1,
        "{revoked_unacknowledged} sessions revoked without an acknowledgement"
    );
    for id in &acks.revoked {
        assert!(
            acks.created.contains_key(id),
            "revoke acknowledged before its create"
        );
    }
    let account = store
        .get(*acks.created.keys().next().unwrap())
        .await
        .unwrap()
        .unwrap()
        .account_id;
    let mut stored = 0;
    let mut page = session_core::PageRequest {
        after: None,
        limit: session_core::PageLimit::MAX,
    };
    loop {
        let read = store
            .list_for_account(account, ListScope::IncludeRevoked, page)
            .await
            .unwrap();
        stored += read.sessions.len();
        match read.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    // At most the one create in flight at the kill committed unacknowledged.
    assert!(
        (acks.created.len()..=acks.created.len() + 1).contains(&stored),
        "{stored} sessions stored, {} acknowledged",
        acks.created.len()
    );
}

/// The child: creates sessions and revokes every third one's predecessor,
/// acknowledging each write on stdout once the store returned `Ok`.
async fn write_until_killed(path: &Path) {
    let store = SqliteSessionStore::open(path).await.unwrap();
    let owner = account();
    let mut previous = None;
    for i in 0..WRITER_LIMIT {
        let (_, session) = session_at(owner, epoch() + Duration::microseconds(i));
        store.insert(&session).await.unwrap();
        let line = format!(
            "ack created {} {}",
            session.id,
            hex(session.token_hash.as_bytes())
        );
        if !acknowledge(&line) {
            return;
        }
        if let (2, Some(id)) = (i % 3, previous) {
            store
                .revoke(
                    id,
                    epoch() + Duration::hours(1),
                    session_core::RevocationReason::LOGOUT,
                    None,
                )
                .await
                .unwrap();
            if !acknowledge(&format!("ack revoked {id}")) {
                return;
            }
        }
        previous = Some(session.id);
    }
}

/// Prints one acknowledgement and flushes it to the pipe; `false` once the
/// parent has gone away.
fn acknowledge(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
