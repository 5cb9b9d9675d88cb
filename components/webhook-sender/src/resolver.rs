//! Name resolution that applies the destination policy: a webhook host that resolves to a
//! loopback, private or link-local address is refused when the sender connects, not only when
//! the subscription was made (a name can be pointed elsewhere later: DNS rebinding).

use std::net::SocketAddr;

use eddy_webhooks::destination::DestinationPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Resolves with the system resolver and keeps only the addresses the policy allows.
#[derive(Debug, Clone, Copy)]
pub struct PolicyResolver {
    pub policy: DestinationPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|address| policy.refusal(address.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                let refusal = found.first().and_then(|address| {
                    policy.refusal(address.ip()).map(|why| (address.ip(), why))
                });
                let message = match refusal {
                    Some((address, (what, setting))) => format!(
                        "{host} resolves to {address}, {what}; allow it with {setting}=true"
                    ),
                    None => format!("{host} resolves to no address"),
                };
                return Err(message.into());
            }
            let addresses: Addrs = Box::new(allowed.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_is_refused_unless_loopback_is_allowed() {
        let strict = PolicyResolver {
            policy: DestinationPolicy::default(),
        };
        let name: Name = "localhost".parse().expect("a name");
        let error = match strict.resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("EDDY_WEBHOOK_ALLOW_LOOPBACK"), "{error}");
        let permissive = PolicyResolver {
            policy: DestinationPolicy {
                allow_loopback: true,
                allow_private_networks: false,
            },
        };
        let name: Name = "localhost".parse().expect("a name");
        let addresses: Vec<SocketAddr> = match permissive.resolve(name).await {
            Ok(addresses) => addresses.collect(),
            Err(error) => panic!("localhost allowed: {error}"),
        };
        assert!(addresses.iter().all(|address| address.ip().is_loopback()));
    }
}
