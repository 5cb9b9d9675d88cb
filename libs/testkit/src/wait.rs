//! Waiting for conditions: poll with a deadline, never sleep and hope.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms (backing off to 500 ms) until it returns `Some`, and returns that
/// value. Panics naming `what` if `timeout` passes first.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(50);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

/// Polls `GET url` until it answers with `status`; returns the body. Panics on timeout with the
/// last answer seen.
pub async fn wait_for_http_status(url: &str, status: u16, timeout: Duration) -> String {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        let last;
        match client.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(response) => {
                let answered = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                if answered == status {
                    return body;
                }
                last = format!("{answered} {body}");
            }
            Err(error) => last = error.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for GET {url} to answer {status}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
