//! Metrics exported to Prometheus, and `health()` as JSON, on one small HTTP endpoint:
//! `GET /metrics` (the Prometheus text format) and `GET /health` (200 when ready, 503
//! otherwise).
//!
//! ```sh
//! export EtcdSettings__HostName=http://127.0.0.1:2379 EtcdSettings__RootKey=/apps/myapp
//! cargo run -p etcd-dynamic-config --example prometheus -- 127.0.0.1:9898
//! curl -s 127.0.0.1:9898/metrics; curl -s 127.0.0.1:9898/health
//! ```

use std::sync::Arc;

use etcd_dynamic_config::EtcdConfig;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The recorder first: metrics bind to the recorder installed when `start` runs.
    let handle = PrometheusBuilder::new().install_recorder()?;
    let config = EtcdConfig::builder().build()?;
    config.start().await?;
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9898".into());
    let listener = TcpListener::bind(&address).await?;
    eprintln!("serving /metrics and /health on http://{address}");
    serve(Arc::new(config), handle, listener).await;
    Ok(())
}

/// Answers `/metrics` and `/health` until the task is dropped.
pub async fn serve(config: Arc<EtcdConfig>, metrics: PrometheusHandle, listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        let config = config.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = respond(stream, &config, &metrics).await;
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    config: &EtcdConfig,
    metrics: &PrometheusHandle,
) -> std::io::Result<()> {
    let mut request = vec![0u8; 4096];
    let read = stream.read(&mut request).await?;
    let request = String::from_utf8_lossy(&request[..read]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        "/health" => {
            let health = config.health();
            let status = if health.is_ready() {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let body = serde_json::to_string(&health).unwrap_or_else(|_| "{}".into());
            (status, "application/json", body)
        }
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
