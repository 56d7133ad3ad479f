//! One store per file: a second open is refused while the first store lives.

use session_core::port::store::SessionStore;
use session_core::testkit::{account, epoch, session_at};
use session_sqlite::{OpenError, SqliteOptions, SqliteSessionStore};

use crate::support::temp_db;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_one_file_is_refused_naming_the_file_and_the_holder() {
    let (_dir, path) = temp_db();
    let first = SqliteSessionStore::open(&path).await.unwrap();
    let lock_file = path.with_file_name("sessions.db.lock");

    // Migrating or not, the second open fails before it touches the file.
    for options in [
        SqliteOptions::default(),
        SqliteOptions::default().migrate(false),
    ] {
        let err = SqliteSessionStore::open_with(&path, options)
            .await
            .unwrap_err();
        match &err {
            OpenError::Locked {
                path: p,
                lock_file: l,
                pid,
            } => {
                assert_eq!(p, &path);
                assert_eq!(l, &lock_file);
                assert_eq!(*pid, Some(std::process::id()), "the holder's pid");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "names the file: {message}"
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "names the holder: {message}"
        );
    }

    // The refused opens left the first store working.
    let (_, session) = session_at(account(), epoch());
    first.insert(&session).await.unwrap();
    assert_eq!(first.get(session.id).await.unwrap(), Some(session.clone()));

    // Closing the first store releases the lock; the lock file stays.
    drop(first);
    assert!(lock_file.is_file());
    let second = SqliteSessionStore::open(&path).await.unwrap();
    assert_eq!(second.get(session.id).await.unwrap(), Some(session));
    assert_eq!(
        std::fs::read_to_string(&lock_file).unwrap(),
        format!("{}\n", std::process::id()),
        "the new holder recorded its pid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_file_left_by_a_process_that_exited_is_no_obstacle() {
    let (_dir, path) = temp_db();
    // What a crashed owner leaves behind: the file, with a pid, but no lock.
    std::fs::write(path.with_file_name("sessions.db.lock"), "4194304\n").unwrap();
    let store = SqliteSessionStore::open(&path).await.unwrap();
    store.health_check().await.unwrap();
}
