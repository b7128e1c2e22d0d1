//! A pooled keep-alive connection the server closes before answering the
//! next request on it (as llama-server does with idle connections) is not a
//! failure of the server: the request is sent again on a new connection,
//! and the record says so.

use std::time::{Duration, Instant};

use glimprouter_loadtest::client::{send_streaming, Target};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &str = "data: {\"choices\":[{\"index\":0,\"text\":\"hi\",\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";

/// Reads one HTTP request (headers and a Content-Length body).
async fn read_request(sock: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
    }
}

async fn answer(sock: &mut TcpStream) {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
        BODY.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(BODY.as_bytes()).await.unwrap();
}

#[tokio::test]
async fn a_request_on_a_connection_closed_by_the_server_is_resent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/completions", listener.local_addr().unwrap());
    tokio::spawn(async move {
        // First connection: answer one request, keep the connection open,
        // then close it on reading the next one, without answering.
        let (mut first, _) = listener.accept().await.unwrap();
        assert!(read_request(&mut first).await);
        answer(&mut first).await;
        read_request(&mut first).await;
        drop(first);
        // Every later connection is served normally.
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                while read_request(&mut sock).await {
                    answer(&mut sock).await;
                }
            });
        }
    });
    let client = reqwest::Client::new();
    let target = Target {
        url,
        api_key: None,
        timeout: Duration::from_secs(10),
    };
    let body = json!({"model": "m", "prompt": "x", "stream": true});
    let start = Instant::now();
    let a = send_streaming(&client, &target, &body, start)
        .await
        .expect("first request");
    assert!(!a.resent);
    let b = send_streaming(&client, &target, &body, start)
        .await
        .expect("second request, resent on a new connection");
    assert!(b.resent);
    assert_eq!(b.output_tokens, 1);
}
