//! The stats socket: a Unix stream socket on which each request is one line
//! and each answer one JSON line (`docs/stats-protocol.md`).
//!
//! Requests: `stats` (the last complete interval's report), `clear` (start
//! a fresh measurement, then answer like `stats`) and `explain {json}` (see
//! [`crate::explain`]). Anything else gets `{"error": "..."}`. A client that
//! sends nothing for 5 s is dropped.

use crate::explain::{ExplainRequest, Explainer};
use crate::stats::StatsAggregator;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;

/// Why the stats socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Another process answers on the socket.
    #[error("stats socket {0} is in use by another running hbgw: stop it, or give this one its own socket with --stats-socket PATH")]
    InUse(PathBuf),
    /// Binding failed.
    #[error("cannot create stats socket {path}: {source}: choose a writable path with --stats-socket PATH")]
    Bind {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What else the socket answers for, besides stats.
#[derive(Clone, Default)]
pub struct Services {
    /// `explain {json}`.
    pub explainer: Option<Arc<Explainer>>,
    /// `endpoints`.
    pub heartbeat: Option<Arc<crate::heartbeat::HeartbeatService>>,
}

/// Binds the socket, replacing a stale one left by a process that died.
pub fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    let bind_err = |source| AdminError::Bind { path: path.to_owned(), source };
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(AdminError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok(listener)
}

/// Answers requests until the task is aborted.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    aggregator: Arc<Mutex<StatsAggregator>>,
    services: Services,
) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("stats socket {}: {e}", path.display());
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, aggregator.clone(), services.clone()));
            }
            Err(e) => {
                tracing::warn!("stats socket {}: accept failed: {e}", path.display());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(
    stream: tokio::net::UnixStream,
    aggregator: Arc<Mutex<StatsAggregator>>,
    services: Services,
) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    loop {
        let mut line = String::new();
        let n = match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await {
            Ok(Ok(n)) => n,
            _ => return,
        };
        if n == 0 {
            return;
        }
        let reply = respond(line.trim(), &aggregator, &services);
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
        reader.get_mut().set_limit(MAX_REQUEST as u64);
    }
}

fn respond(request: &str, aggregator: &Mutex<StatsAggregator>, services: &Services) -> String {
    if request == "endpoints" {
        let body = match &services.heartbeat {
            None => serde_json::json!({"error": "no heartbeat service runs here: add a [heartbeat] section to the config"}),
            Some(svc) => {
                let report = svc.report();
                serde_json::json!({"report": report, "table": report.render_table()})
            }
        };
        return format!("{body}\n");
    }
    if let Some(question) = request.strip_prefix("explain ") {
        let body = match (services.explainer.as_deref(), serde_json::from_str::<ExplainRequest>(question)) {
            (None, _) => serde_json::json!({"error": "this gateway enforces nothing (no [enforcement] section): every frame is bridged"}),
            (_, Err(e)) => serde_json::json!({"error": format!("bad explain request: {e}")}),
            (Some(x), Ok(q)) => match x.explain(&q) {
                Ok(answer) => serde_json::to_value(answer).unwrap_or_default(),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            },
        };
        return format!("{body}\n");
    }
    let mut agg = aggregator.lock().unwrap_or_else(|p| p.into_inner());
    let body = match request {
        "stats" => serde_json::to_string(agg.report()),
        "clear" => {
            agg.clear();
            serde_json::to_string(agg.report())
        }
        other => Ok(serde_json::json!({
            "error": format!("unknown request {other:?}: send `stats`, `clear`, `endpoints` or `explain {{json}}`")
        })
        .to_string()),
    };
    let mut body = body.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    body.push('\n');
    body
}

/// Client side: sends one request and returns the answer line.
pub fn request(path: &Path, request: &str, timeout: Duration) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the gateway closed the connection"));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{NoDeviceStats, StatsAggregator};

    #[test]
    fn stale_socket_is_replaced_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/s.sock");
        let l1 = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(AdminError::InUse(_))));
        drop(l1);
        // The file remains but nobody listens: a stale socket.
        assert!(path.exists());
        let _l2 = bind(&path).unwrap();
    }

    #[test]
    fn answers_stats_clear_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = bind(&path).unwrap();
        let (_recs, ex) = hbgw_dataplane::latency::exchange(0, 1, 1);
        let agg = Arc::new(Mutex::new(StatsAggregator::new(vec![], vec![], Box::new(NoDeviceStats), ex)));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.spawn(serve(listener, path.clone(), agg, Services::default()));
        let client_path = path.clone();
        let (a, b, c) = rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let t = Duration::from_secs(5);
                (
                    request(&client_path, "stats", t).unwrap(),
                    request(&client_path, "clear", t).unwrap(),
                    request(&client_path, "bogus", t).unwrap(),
                )
            })
            .await
            .unwrap()
        });
        let report: hbgw_shared::stats::StatsReport = serde_json::from_str(&a).unwrap();
        assert!(!report.stopped);
        assert!(b.starts_with('{') && !b.contains("error"));
        assert!(c.contains("unknown request"), "{c}");
    }
}
