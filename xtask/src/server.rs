//! The service binary on a free loopback port, for the checks that need a
//! live instance (schemathesis, the metrics table).

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The service binary, serving until dropped.
pub(crate) struct Server {
    child: std::process::Child,
    /// Where it listens: `127.0.0.1:port`.
    pub(crate) address: String,
}

impl Server {
    /// Starts `binary serve` with `args` on a free loopback port (`:0`) over
    /// a SQLite file in `dir`, and waits for the address it logs once it
    /// listens. Its log goes to `dir/server.log`.
    pub(crate) fn start(binary: &Path, dir: &Path, args: &[&str]) -> Result<Self> {
        use std::io::{BufRead as _, BufReader};
        let database = format!("sqlite://{}", dir.join("sessions.db").display());
        let mut child = Command::new(binary)
            .args(["--log-format", "json", "--log", "info", "serve"])
            .args(["--listen", "127.0.0.1:0", "--database-url", &database])
            .args(args)
            .env_remove("SESSION_API_KEY")
            .env_remove("DATABASE_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut log = std::fs::File::create(dir.join("server.log"))?;
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // The JSON log line of the listener: `"address":"127.0.0.1:N"`.
                if let Some(rest) = line.split("\"address\":\"").nth(1)
                    && let Some(address) = rest.split('"').next()
                {
                    let _ = found.send(address.to_owned());
                }
                let _ = writeln!(log, "{line}");
            }
        });
        let server = |address| Self { child, address };
        match address.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(address) => Ok(server(address)),
            Err(_) => {
                drop(server(String::new()));
                bail!(
                    "the service did not start listening; see {}",
                    dir.join("server.log").display()
                )
            }
        }
    }
    /// The body of `GET path`, which must answer 200. One request on its
    /// own connection (`Connection: close`), with a chunked body decoded.
    pub(crate) fn get(&self, path: &str) -> Result<String> {
        let mut stream = std::net::TcpStream::connect(&self.address)
            .with_context(|| format!("could not connect to {}", self.address))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("the response has no end of head")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!(
                "GET {path} answered {}",
                head.lines().next().unwrap_or_default()
            );
        }
        let chunked = head
            .lines()
            .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
        if !chunked {
            return Ok(body.to_owned());
        }
        let mut decoded = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest
                .split_once("\r\n")
                .context("a chunk has no size line")?;
            let size = usize::from_str_radix(size.trim(), 16).context("a chunk size is not hex")?;
            if size == 0 {
                return Ok(decoded);
            }
            let chunk = after.get(..size).context("a chunk is cut short")?;
            decoded.push_str(chunk);
            rest = after.get(size + 2..).context("a chunk has no end")?;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
