//! What the store creates is private to its user, whatever the umask: new
//! directories 0700; the database, its `-wal` and `-shm`, and the lock file
//! 0600.
//!
//! The umask is process-wide and cannot be changed without `unsafe`, so the
//! test re-runs its own binary under `sh -c 'umask …'` (as `crash` does for
//! its writer): with [`CHILD_DIR`] set, the same test function opens a store
//! in that directory and checks the modes.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use session_core::port::store::SessionStore;
use session_core::testkit::{account, epoch, session_at};
use session_sqlite::SqliteSessionStore;

/// Set in the child: the directory to create the database under.
const CHILD_DIR: &str = "SESSION_SQLITE_MODES_DIR";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_and_directories_are_private_whatever_the_umask() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        return open_and_check_modes(Path::new(&dir)).await;
    }
    // 000 would leave SQLite's defaults wide open (0644 files, 0777
    // directories); 277 would take the owner's own write bit away.
    for umask in ["000", "022", "277"] {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(std::env::current_exe().unwrap())
            .args([
                "modes::new_files_and_directories_are_private_whatever_the_umask",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "umask {umask}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "umask {umask}: the child ran the checks"
        );
    }
}

async fn open_and_check_modes(root: &Path) {
    let path = root.join("new").join("nested").join("sessions.db");
    let store = SqliteSessionStore::open(&path).await.unwrap();
    // A write, so the write-ahead log and its index exist.
    let (_, session) = session_at(account(), epoch());
    store.insert(&session).await.unwrap();

    // In octal, as `ls -l` and `chmod` speak.
    let mode = |path: &Path| {
        let mode = std::fs::metadata(path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .permissions()
            .mode();
        format!("{:o}", mode & 0o777)
    };
    for dir in [root.join("new"), root.join("new").join("nested")] {
        assert_eq!(mode(&dir), "700", "{}", dir.display());
    }
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let file = path.with_file_name(format!("sessions.db{suffix}"));
        assert_eq!(mode(&file), "600", "{}", file.display());
    }
    drop(store);
}
