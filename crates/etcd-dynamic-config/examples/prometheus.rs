//! Metrics exported to Prometheus, and `health()` as JSON, on one small HTTP endpoint
//! served with axum: `GET /metrics` (the Prometheus text format) and `GET /health` (200
//! when ready, 503 otherwise).
//!
//! ```sh
//! export EtcdSettings__HostName=http://127.0.0.1:2379 EtcdSettings__RootKey=/apps/myapp
//! cargo run -p etcd-dynamic-config --example prometheus -- 127.0.0.1:9898
//! curl -s 127.0.0.1:9898/metrics; curl -s 127.0.0.1:9898/health
//! ```

use std::sync::Arc;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::routing::get;
use etcd_dynamic_config::EtcdConfig;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

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
    serve(Arc::new(config), handle, listener).await?;
    Ok(())
}

/// Answers `/metrics` and `/health` until the task is dropped.
pub async fn serve(
    config: Arc<EtcdConfig>,
    metrics: PrometheusHandle,
    listener: TcpListener,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(async move || {
                let content_type = [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];
                (content_type, metrics.render())
            }),
        )
        .route(
            "/health",
            get(async move || {
                let health = config.health();
                let status = if health.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, Json(health))
            }),
        );
    axum::serve(listener, app).await
}
