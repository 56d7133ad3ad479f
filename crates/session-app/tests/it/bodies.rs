//! Bodies the service does not read, sent anyway: a gateway relaying an
//! upload to forward auth (which never reads a body), a client whose body is
//! refused (413) before it is read. Against the real binary on a real
//! socket, with a client that behaves as gateways do: it keeps writing its
//! body in 32 KiB writes while it reads the answer.
//!
//! Every case holds the same promise: the client reads the whole answer and
//! never sees a reset (ECONNRESET, EPIPE) while it writes; an answer that
//! says `Connection: close` is followed by a clean end of stream, and a
//! connection left open serves the next request.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use uuid::Uuid;

use crate::e2e::{Server, ready_on_sqlite};
use crate::limits::{self, Answer, GIVE_UP};

/// The upload a gateway relays: 1 MiB, far over what the service drains.
const UPLOAD: usize = 1 << 20;
/// The size of each write, as gateways relay a body.
const WRITE: usize = 32 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    ContentLength,
    Chunked,
}

/// Sends `head` (without its framing header and blank line) and a body of
/// `length` bytes framed as `framing`, in [`WRITE`]-byte writes, while it
/// reads the answer. Panics if a write fails (the server reset the
/// connection under the client). Returns the answer and both halves.
async fn upload(
    server: &Server,
    head: &str,
    framing: Framing,
    length: usize,
) -> (Answer, OwnedReadHalf, OwnedWriteHalf) {
    let stream = TcpStream::connect(server.address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let framing_header = match framing {
        Framing::ContentLength => format!("Content-Length: {length}\r\n"),
        Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_owned(),
    };
    let head = format!("{head}{framing_header}\r\n");
    let writing = tokio::spawn(async move {
        let written = async {
            writer.write_all(head.as_bytes()).await?;
            let piece = vec![b'x'; WRITE];
            let mut left = length;
            while left > 0 {
                let size = left.min(WRITE);
                match framing {
                    Framing::ContentLength => writer.write_all(&piece[..size]).await?,
                    Framing::Chunked => {
                        let mut chunk = format!("{size:x}\r\n").into_bytes();
                        chunk.extend_from_slice(&piece[..size]);
                        chunk.extend_from_slice(b"\r\n");
                        writer.write_all(&chunk).await?;
                    }
                }
                left -= size;
            }
            if framing == Framing::Chunked {
                writer.write_all(b"0\r\n\r\n").await?;
            }
            io::Result::Ok(())
        };
        let result = written.await;
        (writer, result)
    });
    let answer = read_answer(&mut reader).await;
    let (writer, written) = tokio::time::timeout(GIVE_UP, writing)
        .await
        .expect("the body was written in time (the server stopped reading it)")
        .unwrap();
    if let Err(error) = written {
        panic!(
            "writing the body failed after the answer {answer:?}: {error} ({:?})",
            error.kind()
        );
    }
    (answer, reader, writer)
}

/// Reads one answer with a `Content-Length`, and nothing after it.
async fn read_answer(reader: &mut OwnedReadHalf) -> Answer {
    let answer = limits::read_answer(reader, "the client").await;
    assert_eq!(
        answer.after, 0,
        "bytes after the answer: {}\r\n\r\n{}",
        answer.headers, answer.body
    );
    answer
}

/// What the client sees after an answer: the clean end of stream an answer
/// with `Connection: close` promised, or a connection that serves the next
/// request.
async fn after(answer: &Answer, mut reader: OwnedReadHalf, mut writer: OwnedWriteHalf) {
    if answer.close {
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout(GIVE_UP, reader.read(&mut buf))
            .await
            .expect("the server closed the connection in time");
        match read {
            Ok(0) => {}
            Ok(read) => panic!(
                "bytes after a closing answer: {}",
                String::from_utf8_lossy(&buf[..read])
            ),
            Err(error) => panic!("the close after the answer was a reset: {error}"),
        }
    } else {
        writer
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("the connection left open takes the next request");
        let next = read_answer(&mut reader).await;
        assert_eq!(next.status, "HTTP/1.1 200 OK", "{next:?}");
    }
}

fn forward_auth_head(token: &str) -> String {
    format!(
        "POST /v1/forward-auth/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
    )
}

const CREATE_HEAD: &str =
    "POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";

async fn forward_auth_upload(framing: Framing) {
    let (server, _dir) = ready_on_sqlite(&[]).await;
    let (token, _) = server.create(Uuid::new_v4()).await;
    let (answer, reader, writer) =
        upload(&server, &forward_auth_head(&token), framing, UPLOAD).await;
    assert_eq!(answer.status, "HTTP/1.1 200 OK", "{answer:?}");
    // Over the drain bound: the connection cannot be kept, and says so.
    assert!(answer.close, "{answer:?}");
    after(&answer, reader, writer).await;
}

#[tokio::test]
async fn an_upload_relayed_to_forward_auth_is_answered_without_a_reset() {
    forward_auth_upload(Framing::ContentLength).await;
}

#[tokio::test]
async fn a_chunked_upload_relayed_to_forward_auth_is_answered_without_a_reset() {
    forward_auth_upload(Framing::Chunked).await;
}

async fn oversized_create(framing: Framing) {
    let (server, _dir) = ready_on_sqlite(&[]).await;
    let (answer, reader, writer) = upload(&server, CREATE_HEAD, framing, UPLOAD).await;
    assert_eq!(
        answer.status, "HTTP/1.1 413 Payload Too Large",
        "{answer:?}"
    );
    assert!(answer.body.contains("payload_too_large"), "{answer:?}");
    assert!(answer.close, "{answer:?}");
    after(&answer, reader, writer).await;
    let closed = server
        .metric("session_http_unread_bodies_total{outcome=\"closed\"}")
        .await;
    assert!((closed - 1.0).abs() < f64::EPSILON, "{closed}");
}

#[tokio::test]
async fn an_oversized_create_gets_its_413_without_a_reset() {
    oversized_create(Framing::ContentLength).await;
}

#[tokio::test]
async fn an_oversized_chunked_create_gets_its_413_without_a_reset() {
    oversized_create(Framing::Chunked).await;
}

#[tokio::test]
async fn a_small_body_forward_auth_ignores_leaves_the_connection_serving() {
    let (server, _dir) = ready_on_sqlite(&[]).await;
    let (token, _) = server.create(Uuid::new_v4()).await;
    let head = format!(
        "{}Content-Length: {}\r\n\r\n",
        forward_auth_head(&token),
        8 << 10
    );
    let (mut reader, mut writer) = TcpStream::connect(server.address)
        .await
        .unwrap()
        .into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    // The body follows the head a moment later, as a gateway relays it: by
    // then forward auth has answered without reading it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer.write_all(&[b'x'; 8 << 10]).await.unwrap();
    let answer = read_answer(&mut reader).await;
    assert_eq!(answer.status, "HTTP/1.1 200 OK", "{answer:?}");
    // Within the drain bound: read and dropped, and the connection kept.
    assert!(!answer.close, "{answer:?}");
    after(&answer, reader, writer).await;
    let drained = server
        .metric("session_http_unread_bodies_total{outcome=\"drained\"}")
        .await;
    assert!((drained - 1.0).abs() < f64::EPSILON, "{drained}");
}

#[tokio::test]
async fn an_oversized_create_expecting_100_continue_is_refused_before_its_body() {
    let (server, _dir) = ready_on_sqlite(&[]).await;
    let (mut reader, writer) = TcpStream::connect(server.address)
        .await
        .unwrap()
        .into_split();
    let mut writer = writer;
    writer
        .write_all(
            format!("{CREATE_HEAD}Content-Length: {UPLOAD}\r\nExpect: 100-continue\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    // The final answer, never an invitation to upload (`100 Continue`).
    let answer = read_answer(&mut reader).await;
    assert_eq!(
        answer.status, "HTTP/1.1 413 Payload Too Large",
        "{answer:?}"
    );
    // The body was neither invited nor sent: the connection cannot tell
    // where the next request would start.
    assert!(answer.close, "{answer:?}");
    after(&answer, reader, writer).await;
}
