//! Where webhooks may be sent. A subscription's URL must be `http` or `https`, and its host must
//! not be (or resolve to) an address inside the installation's own network unless the operator
//! allows it: otherwise anyone holding the system token could make Eddy call internal services
//! (server-side request forgery). Loopback addresses need `EDDY_WEBHOOK_ALLOW_LOOPBACK`;
//! private, link-local, carrier-grade NAT and unspecified ones need
//! `EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS`.
//!
//! The URL is parsed with the WHATWG parser the sender connects with, so numeric tricks such as
//! `http://2130706433/` are seen as the `127.0.0.1` they are. The check runs when a
//! subscription is made or changed; a name that later resolves elsewhere must be checked again
//! by whatever delivers.

use std::net::IpAddr;
use std::time::Duration;

use eddy_api::ApiError;
pub use eddy_webhooks::destination::DestinationPolicy;
use reqwest::Url;

/// The longest webhook URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// How long resolving a webhook host may take before the URL is refused.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks the webhook URL in request field `field`; returns it as the WHATWG parser writes it
/// (the form stored and dialled), or a 400 naming the field and saying why.
pub async fn check_webhook_url(
    field: &str,
    text: &str,
    policy: DestinationPolicy,
) -> Result<String, ApiError> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(ApiError::bad_field(
            field,
            format!("longer than {MAX_URL_CHARS} characters"),
        ));
    }
    let url = Url::parse(text.trim())
        .map_err(|error| ApiError::bad_field(field, format!("'{text}' is not a URL ({error})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::bad_field(
            field,
            format!(
                "the scheme '{}' is not allowed; use http or https",
                url.scheme()
            ),
        ));
    }
    let Some(host) = url.host_str() else {
        return Err(ApiError::bad_field(field, format!("'{text}' has no host")));
    };
    // The parser writes IP hosts in canonical form (IPv6 in brackets); anything else is a name.
    let literal = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>()
        .ok();
    let addresses = match literal {
        Some(address) => vec![address],
        None => resolve(field, host, url.port_or_known_default().unwrap_or(80)).await?,
    };
    for address in addresses {
        if let Some((what, setting)) = policy.refusal(address) {
            let subject = if literal.is_some() {
                format!("the host {host} is {what}")
            } else {
                format!("the host {host} resolves to {address}, {what}")
            };
            return Err(ApiError::bad_field(
                field,
                format!("{subject}; webhooks to such addresses are refused unless {setting}=true"),
            ));
        }
    }
    Ok(url.into())
}

/// Every address `domain` resolves to; a 400 when it does not resolve.
async fn resolve(field: &str, domain: &str, port: u16) -> Result<Vec<IpAddr>, ApiError> {
    let unresolvable = |why: String| {
        ApiError::bad_field(
            field,
            format!("the host {domain} could not be resolved ({why})"),
        )
    };
    let lookup = tokio::net::lookup_host((domain, port));
    let addresses: Vec<IpAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(found)) => found.map(|address| address.ip()).collect(),
        Ok(Err(error)) => return Err(unresolvable(error.to_string())),
        Err(_) => {
            return Err(unresolvable(format!(
                "no answer within {}s",
                RESOLVE_TIMEOUT.as_secs()
            )));
        }
    };
    if addresses.is_empty() {
        return Err(unresolvable("no addresses".to_owned()));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_refused_with_the_setting_that_allows_them() {
        let strict = DestinationPolicy::default();
        let error = check_webhook_url("url", "http://127.0.0.1:8080/hook", strict)
            .await
            .expect_err("loopback");
        assert!(error.message.starts_with("url: "), "{}", error.message);
        assert!(
            error.message.contains("EDDY_WEBHOOK_ALLOW_LOOPBACK"),
            "{}",
            error.message
        );
        // The WHATWG parser reads a bare number as an IPv4 address.
        let error = check_webhook_url("url", "http://2130706433/", strict)
            .await
            .expect_err("numeric loopback");
        assert!(
            error.message.contains("EDDY_WEBHOOK_ALLOW_LOOPBACK"),
            "{}",
            error.message
        );
        let error = check_webhook_url("url", "https://[fd00::1]/hook", strict)
            .await
            .expect_err("ULA");
        assert!(
            error
                .message
                .contains("EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
            "{}",
            error.message
        );
        let error = check_webhook_url("url", "ftp://example.com/", strict)
            .await
            .expect_err("scheme");
        assert!(error.message.contains("'ftp'"), "{}", error.message);
        let error = check_webhook_url("url", "not a url", strict)
            .await
            .expect_err("garbage");
        assert!(error.message.contains("is not a URL"), "{}", error.message);

        let permissive = DestinationPolicy {
            allow_loopback: true,
            allow_private_networks: true,
        };
        assert_eq!(
            check_webhook_url("url", "http://127.0.0.1:8080/hook", permissive)
                .await
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:8080/hook")
        );
        assert!(
            check_webhook_url("url", "http://10.0.0.1/", permissive)
                .await
                .is_ok()
        );
        assert_eq!(
            check_webhook_url("url", "https://203.0.113.10/hook", strict)
                .await
                .ok()
                .as_deref(),
            Some("https://203.0.113.10/hook")
        );
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_and_unknown_names_are_refused() {
        let error = check_webhook_url("url", "http://localhost:9/x", DestinationPolicy::default())
            .await
            .expect_err("localhost");
        assert!(
            error.message.contains("the host localhost resolves to"),
            "{}",
            error.message
        );
        let error = check_webhook_url(
            "url",
            "https://no-such-host.invalid/hook",
            DestinationPolicy::default(),
        )
        .await
        .expect_err("unresolvable");
        assert!(
            error.message.contains("could not be resolved"),
            "{}",
            error.message
        );
    }
}
