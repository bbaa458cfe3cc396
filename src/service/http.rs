//! `/metrics`, `/health` and `/ready` over a minimal HTTP/1.1 responder.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::metrics::Metrics;

/// Serves until the process ends. `ready` turns true once state is rebuilt
/// and consumption has started.
/// `/health` fails while commits keep failing (`healthy` false).
pub async fn serve(
    listen: String,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
) -> Result<()> {
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "http: /metrics /health /ready");
    loop {
        let (mut socket, _) = listener.accept().await?;
        let metrics = metrics.clone();
        let ready = ready.clone();
        let healthy = healthy.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let n = match socket.read(&mut request).await {
                Ok(n) => n,
                Err(_) => return,
            };
            let head = String::from_utf8_lossy(&request[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.encode()),
                "/health" if healthy.load(Ordering::Relaxed) => ("200 OK", "ok\n".to_string()),
                "/health" => (
                    "503 Service Unavailable",
                    "commits failing; retrying\n".to_string(),
                ),
                "/ready" if ready.load(Ordering::Relaxed) => ("200 OK", "ready\n".to_string()),
                "/ready" => ("503 Service Unavailable", "rebuilding\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
