//! Outbound HTTP clients: every reqwest client of a process starts from [`client_builder`], so
//! they share one TLS configuration and one idle-connection policy. Building a TLS
//! configuration loads and parses the system's CA bundle (50–150 ms with OpenSSL 3, more on a
//! busy host), which each client paid on its own before: a restart that made two of them
//! waited for both before it could ask the schema registry anything.

use std::sync::OnceLock;

/// How long a pooled connection may sit idle before the client drops it: below the 30 s after
/// which Eddy's servers (hyper's HTTP/1 header read timeout, which also runs between requests
/// on a kept-alive connection) close an idle connection. A client that kept it longer could
/// send a request just as the server closes it and get "connection reset by peer" (the
/// platform benchmark did, after a 30 s quiet spell; instances forwarding queries to each
/// other and the gateway would answer 503 for the same reason).
pub const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A reqwest client builder that uses the process's TLS configuration (the system's roots,
/// loaded once, on first use) and drops idle connections after [`POOL_IDLE_TIMEOUT`]. A
/// configuration that cannot be built (a broken CA bundle) is left to reqwest, whose own
/// `build()` then says what is wrong.
pub fn client_builder() -> reqwest::ClientBuilder {
    static TLS: OnceLock<Option<native_tls::TlsConnector>> = OnceLock::new();
    let tls = TLS.get_or_init(|| match native_tls::TlsConnector::new() {
        Ok(connector) => Some(connector),
        Err(error) => {
            tracing::warn!(error = %error, "building the shared TLS configuration failed");
            None
        }
    });
    let builder = reqwest::Client::builder().pool_idle_timeout(POOL_IDLE_TIMEOUT);
    match tls {
        Some(connector) => builder.tls_backend_preconfigured(connector.clone()),
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_share_one_tls_configuration_and_build() {
        let first = std::time::Instant::now();
        client_builder().build().expect("the first client builds");
        let first = first.elapsed();
        let later = std::time::Instant::now();
        for _ in 0..5 {
            client_builder().build().expect("later clients build");
        }
        let later = later.elapsed();
        // Loading the roots again for each of five clients would cost five times the first.
        assert!(
            later < first * 2,
            "five later clients took {later:?}, the first {first:?}"
        );
    }
}
