//! Which addresses webhooks may be sent to. Delivering to an address inside the installation's
//! own network would let anyone who can create a subscription make Eddy call internal services
//! (server-side request forgery): loopback addresses need `EDDY_WEBHOOK_ALLOW_LOOPBACK`;
//! private, link-local, carrier-grade NAT and unspecified ones need
//! `EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS`. The admin service checks a URL when a subscription is
//! made or changed; the sender checks every address it connects to, since a name may resolve
//! elsewhere later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The settings behind [`DestinationPolicy`], shared by every component that checks webhook
/// destinations.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DestinationArgs {
    /// Accept webhook URLs whose host is or resolves to a loopback address (127.0.0.0/8, ::1);
    /// for development only.
    #[arg(long, env = "EDDY_WEBHOOK_ALLOW_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_loopback: bool,

    /// Accept webhook URLs whose host is or resolves to a private (RFC 1918, fc00::/7),
    /// link-local (169.254.0.0/16, fe80::/10), carrier-grade NAT (100.64.0.0/10) or unspecified
    /// address: allow it when the receivers live inside your network.
    #[arg(long, env = "EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private_networks: bool,
}

impl DestinationArgs {
    pub fn policy(&self) -> DestinationPolicy {
        DestinationPolicy {
            allow_loopback: self.webhook_allow_loopback,
            allow_private_networks: self.webhook_allow_private_networks,
        }
    }
}

/// Which kinds of destination addresses the installation accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    pub allow_loopback: bool,
    pub allow_private_networks: bool,
}

/// Why an address is not a public destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalAddress {
    Loopback,
    /// Private, link-local, carrier-grade NAT or unspecified; the text says which.
    PrivateNetwork(&'static str),
}

impl DestinationPolicy {
    /// Why `address` is refused under this policy (what it is, the setting that allows it), or
    /// `None` when it is accepted.
    pub fn refusal(&self, address: IpAddr) -> Option<(String, &'static str)> {
        match classify(address)? {
            InternalAddress::Loopback if !self.allow_loopback => Some((
                "a loopback address".to_owned(),
                "EDDY_WEBHOOK_ALLOW_LOOPBACK",
            )),
            InternalAddress::PrivateNetwork(kind) if !self.allow_private_networks => Some((
                format!("a {kind} address"),
                "EDDY_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
            )),
            _ => None,
        }
    }
}

/// What kind of internal address `address` is, or `None` for a public one.
pub fn classify(address: IpAddr) -> Option<InternalAddress> {
    match address {
        IpAddr::V4(address) => classify_v4(address),
        IpAddr::V6(address) => classify_v6(address),
    }
}

fn classify_v4(address: Ipv4Addr) -> Option<InternalAddress> {
    let [first, second, ..] = address.octets();
    if address.is_loopback() {
        Some(InternalAddress::Loopback)
    } else if address.is_unspecified() || first == 0 {
        // 0.0.0.0/8, "this network": connecting to it reaches the local host.
        Some(InternalAddress::PrivateNetwork("unspecified"))
    } else if address.is_private() {
        Some(InternalAddress::PrivateNetwork("private (RFC 1918)"))
    } else if address.is_link_local() {
        Some(InternalAddress::PrivateNetwork("link-local"))
    } else if first == 100 && second & 0xc0 == 64 {
        Some(InternalAddress::PrivateNetwork(
            "carrier-grade NAT (100.64.0.0/10)",
        ))
    } else {
        None
    }
}

fn classify_v6(address: Ipv6Addr) -> Option<InternalAddress> {
    if let Some(mapped) = address.to_ipv4_mapped() {
        return classify_v4(mapped);
    }
    let first_segment = address.segments()[0];
    if address.is_loopback() {
        Some(InternalAddress::Loopback)
    } else if address.is_unspecified() {
        Some(InternalAddress::PrivateNetwork("unspecified"))
    } else if first_segment & 0xfe00 == 0xfc00 {
        Some(InternalAddress::PrivateNetwork("unique local (fc00::/7)"))
    } else if first_segment & 0xffc0 == 0xfe80 {
        Some(InternalAddress::PrivateNetwork("link-local"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<InternalAddress> {
        classify(text.parse().expect("an address"))
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for loopback in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(
                kind(loopback),
                Some(InternalAddress::Loopback),
                "{loopback}"
            );
        }
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "::",
            "::ffff:10.0.0.1",
        ] {
            assert!(
                matches!(kind(private), Some(InternalAddress::PrivateNetwork(_))),
                "{private}"
            );
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "100.63.255.255",
            "203.0.113.10",
            "2001:db8::1",
            "fec0::1",
        ] {
            assert_eq!(kind(public), None, "{public}");
        }
    }
}
