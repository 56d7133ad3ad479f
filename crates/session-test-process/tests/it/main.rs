//! Servers run as promised and leave nothing behind, however the test
//! process ends; the small helpers do what they say.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use session_test_process::{
    Cleanup, Guardian, ServerProcess, ServerUser, Signal, free_port, is_running, metric_value,
    on_a_free_port, signal_process, until, until_async,
};

/// Set in the child process of [`a_killed_test_process_leaves_no_server_behind`].
const CHILD_ROLE: &str = "SESSION_TEST_PROCESS_CHILD";
const REPORT: &str = "child report:";

/// A bound on waiting for another process, not a timing assertion.
const MINUTE: Duration = Duration::from_secs(60);

fn server_user() -> ServerUser {
    ServerUser::unprivileged(&["nobody"]).unwrap()
}

/// `sh -c script` as a server of `user`'s under a guardian that removes
/// `directory`, with its standard output piped.
fn start(user: &ServerUser, directory: &std::path::Path, script: &str) -> ServerProcess {
    let guardian = Guardian::spawn(user, Cleanup::new().remove(directory)).unwrap();
    let mut command = user.command("sh");
    command
        .args(["-c", script])
        .current_dir(directory)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    ServerProcess::spawn(&mut command, guardian).unwrap()
}

/// A shell that starts a helper in its own process group, reports the
/// helper's pid and waits: a server with a child, as PostgreSQL has.
const WITH_A_HELPER: &str = "sleep 600 & echo $!; wait";

fn first_line(process: &mut ServerProcess) -> String {
    let mut line = String::new();
    BufReader::new(process.take_stdout().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_owned()
}

#[test]
fn dropping_a_server_kills_its_group_and_removes_its_directory() {
    let user = server_user();
    let directory = user.private_directory("session-test-process-").unwrap();
    let mut server = start(&user, &directory, WITH_A_HELPER);
    let helper: u32 = first_line(&mut server).parse().unwrap();
    let leader = server.id();
    assert!(is_running(leader) && is_running(helper));
    drop(server);
    assert!(!is_running(leader), "the server outlived its handle");
    until("the helper is gone", MINUTE, || !is_running(helper)).unwrap();
    assert!(!directory.exists(), "{} is left", directory.display());
}

/// The process holding the server is killed outright: no destructor runs,
/// and the guardian kills the server's group and removes its directory.
#[test]
fn a_killed_test_process_leaves_no_server_behind() {
    if std::env::var(CHILD_ROLE).as_deref() == Ok("hold-server") {
        let user = server_user();
        let directory = user.private_directory("session-test-process-").unwrap();
        let mut server = start(&user, &directory, WITH_A_HELPER);
        let helper = first_line(&mut server);
        println!("{REPORT} {} {helper} {}", server.id(), directory.display());
        // Until killed.
        std::io::stdin().read_line(&mut String::new()).unwrap();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_test_process_leaves_no_server_behind",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, "hold-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let report = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        // The test harness prints the test's name on the same line first.
        .find_map(|line| Some(line.split_once(REPORT)?.1.trim().to_owned()))
        .expect("the child reports its server");
    let mut fields = report.split(' ');
    let leader: u32 = fields.next().unwrap().parse().unwrap();
    let helper: u32 = fields.next().unwrap().parse().unwrap();
    let directory = PathBuf::from(fields.next().unwrap());
    assert!(is_running(leader) && is_running(helper) && directory.is_dir());

    child.kill().unwrap();
    child.wait().unwrap();
    until("the server is gone", MINUTE, || !is_running(leader)).unwrap();
    until("its helper is gone", MINUTE, || !is_running(helper)).unwrap();
    until("its directory is gone", MINUTE, || !directory.exists()).unwrap();
}

/// Run as root, a server runs as the user asked for, in its group alone;
/// otherwise as the test's own user.
#[test]
fn a_server_runs_as_the_unprivileged_user_when_the_tests_run_as_root() {
    let user = server_user();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let nobody: Vec<&str> = passwd
        .lines()
        .find(|line| line.starts_with("nobody:"))
        .unwrap()
        .split(':')
        .collect();
    let ids = |flag: &str| {
        let output = user.command("id").arg(flag).output().unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let as_root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if as_root {
        assert_eq!(user.uid(), Some(nobody[2].parse().unwrap()));
        assert_eq!(ids("-u"), nobody[2]);
        assert_eq!(ids("-G"), nobody[3], "its own group, no other");

        let directory = user.private_directory("session-test-process-").unwrap();
        let meta = std::fs::metadata(&directory).unwrap();
        std::fs::remove_dir(&directory).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        assert_eq!(meta.uid().to_string(), nobody[2]);
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);

        let missing = ServerUser::unprivileged(&["no-such-user", "nor-this"]).unwrap_err();
        assert!(
            missing.to_string().contains("no-such-user, nor-this"),
            "{missing}"
        );
    } else {
        assert_eq!(user.uid(), None);
        assert_eq!(user, ServerUser::current());
    }
}

#[test]
fn signals_reach_the_process_and_a_reaped_one_is_not_running() {
    let mut child = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = child.id();
    assert!(is_running(pid));
    signal_process(pid, Signal::Term).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(15));
    assert!(!is_running(pid));
    assert!(is_running(std::process::id()));
    // Never the caller's own group, nor every process there is.
    assert!(signal_process(0, Signal::Term).is_err());
    assert!(signal_process(1, Signal::Term).is_err());
}

#[test]
fn until_returns_once_done_and_names_what_never_happened() {
    let mut polls = 0;
    until("the third poll", MINUTE, || {
        polls += 1;
        polls == 3
    })
    .unwrap();
    assert_eq!(polls, 3);
    let err = until("pigs fly", Duration::from_millis(30), || false).unwrap_err();
    assert_eq!(err.to_string(), "pigs fly: still not after 30ms");
}

#[tokio::test]
async fn until_async_lets_the_runtime_run_meanwhile() {
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let done = done.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            done.store(1, Ordering::SeqCst);
        }
    });
    until_async("the task has run", MINUTE, async || {
        done.load(Ordering::SeqCst) == 1
    })
    .await
    .unwrap();
    let err = until_async("never", Duration::from_millis(20), async || false)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("never: still not after"));
}

#[test]
fn a_free_port_refuses_connections_and_a_taken_one_is_tried_again() {
    // Another process may take a probed port before it is tried (the
    // suites start servers in parallel): of five probes, one is enough.
    let refused = (0..5).any(|_| {
        let port = free_port().unwrap();
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(refused, "five free ports in a row accepted connections");

    let mut tried = Vec::new();
    let started = on_a_free_port(
        |port| {
            tried.push(port);
            if tried.len() < 3 {
                Err(format!("port {port} in use"))
            } else {
                Ok(port)
            }
        },
        |err| err.contains("in use"),
    )
    .unwrap();
    assert_eq!(tried.len(), 3);
    assert_eq!(started, tried[2]);

    let failed = on_a_free_port(
        |_| Err::<(), _>("no such file".to_owned()),
        |err| err.contains("in use"),
    );
    assert_eq!(failed.unwrap_err(), "no such file", "other errors at once");
}

#[test]
fn a_metric_value_is_read_by_its_series() {
    let exposition = "# HELP session_resolves Resolves by outcome.\n\
        # TYPE session_resolves counter\n\
        session_resolves_total{outcome=\"hit\"} 12\n\
        session_resolves_total{outcome=\"hit_stale\"} 3\n\
        session_cache_sessions 4.5 1700000000000\n\
        session_cache_sessions_max 9\n";
    let value = |series| metric_value(exposition, series);
    assert_eq!(value("session_resolves_total{outcome=\"hit\"}"), Some(12.0));
    assert_eq!(
        value("session_resolves_total{outcome=\"hit_stale\"}"),
        Some(3.0)
    );
    assert_eq!(value("session_cache_sessions"), Some(4.5), "not its _max");
    assert_eq!(
        value("session_resolves_total"),
        None,
        "labels are part of it"
    );
    assert_eq!(value("session_resolves"), None);
}
