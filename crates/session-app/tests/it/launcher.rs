//! The launcher (session-test-app) leaves no service behind: not when its
//! handle is dropped, and not when the test process is killed outright.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use session_test_process::{is_running, until};

use crate::e2e::{Options, Server, sqlite_url, temp_dir};

/// Set in the child process of [`the_service_dies_with_a_killed_test_process`]:
/// the directory for its database.
const CHILD_DIRECTORY: &str = "LAUNCHER_TEST_CHILD_DIRECTORY";
const CHILD_REPORT: &str = "launcher child: service pid ";

/// How long a killed service may take to be gone.
const GONE_BOUND: Duration = Duration::from_secs(10);

/// Not a test of its own: the child process of
/// [`the_service_dies_with_a_killed_test_process`], which starts a service,
/// reports its pid, and waits to be killed. Without the variable it does nothing.
#[tokio::test]
async fn launcher_child() {
    let Ok(directory) = std::env::var(CHILD_DIRECTORY) else {
        return;
    };
    let server = Server::start(Options {
        database_url: sqlite_url(std::path::Path::new(&directory)),
        ..Options::default()
    });
    server.wait_ready().await;
    println!("{CHILD_REPORT}{}", server.pid());
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// SIGKILL to a test process that started a service: no destructor runs,
/// and the service is gone all the same.
#[test]
fn the_service_dies_with_a_killed_test_process() {
    let directory = temp_dir();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "launcher::launcher_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIRECTORY, directory.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (pid_tx, pid_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest writes the test's name first, on the same line.
            if let Some((_, pid)) = line.split_once(CHILD_REPORT) {
                let _ = pid_tx.send(pid.trim().parse::<u32>().unwrap());
            }
        }
    });
    let pid = pid_rx.recv_timeout(Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    let pid = pid.expect("the child test started a service");
    until("the service is gone with its launcher", GONE_BOUND, || {
        !is_running(pid)
    })
    .unwrap();
}

/// Dropped, the handle kills its service; killed and restarted, the service
/// answers on the same address with the same store.
#[tokio::test]
async fn restart_keeps_the_address_and_drop_kills() {
    let directory = temp_dir();
    let server = Server::start(Options {
        database_url: sqlite_url(directory.path()),
        ..Options::default()
    });
    server.wait_ready().await;
    let (token, _) = server.create(uuid::Uuid::new_v4()).await;
    let (address, first) = (server.address, server.pid());
    server.kill();
    assert!(!is_running(first), "kill waits until the process is gone");
    server.restart();
    server.wait_ready().await;
    assert_eq!(server.address, address);
    assert_eq!(server.resolve(&token).await, 200);
    let second = server.pid();
    assert_ne!(second, first);
    drop(server);
    assert!(!is_running(second), "drop waits until the process is gone");
}
