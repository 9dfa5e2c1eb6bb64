//! Lookups of backend names: A/AAAA for `NAME:PORT`, SRV for
//! `_service._proto.NAME`, through hickory-resolver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, Record};

use super::DiscoveryConfig;
use veer_data_plane::pool::{BackendSpec, MAX_WEIGHT};

/// What a named backend entry points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `NAME:PORT`: one backend per A/AAAA address of `host`.
    Host {
        /// The name looked up.
        host: String,
        /// The port every address gets.
        port: u16,
    },
    /// `_service._proto.NAME`: one backend per address of each SRV target
    /// of the lowest priority, with the target's port and weight.
    Srv(String),
}

impl Target {
    /// Parses a backend address that is not `IP:PORT`; `None` when it is
    /// neither `NAME:PORT` nor an SRV name.
    pub fn parse(text: &str) -> Option<Target> {
        let is_name = |name: &str| {
            !name.is_empty()
                && name.len() <= 253
                && name.trim_end_matches('.').split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        if text.starts_with('_') && !text.contains(':') {
            // `_service._proto.domain`: at least three labels.
            return (is_name(text) && text.split('.').filter(|l| !l.is_empty()).count() >= 3)
                .then(|| Target::Srv(text.to_string()));
        }
        let (host, port) = text.rsplit_once(':')?;
        let port: u16 = port.parse().ok().filter(|port| *port != 0)?;
        (is_name(host) && host.parse::<IpAddr>().is_err() && host.bytes().any(|b| b.is_ascii_alphabetic()))
            .then(|| Target::Host { host: host.to_string(), port })
    }

    /// `host` or `srv`, as metrics and `/status` name the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Host { .. } => "dns",
            Target::Srv(_) => "srv",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Host { host, port } => write!(f, "{host}:{port}"),
            Target::Srv(name) => f.write_str(name),
        }
    }
}

/// The resolver: the configured nameservers, or the system's.
#[derive(Clone)]
pub struct Lookups {
    resolver: TokioResolver,
    settings: DiscoveryConfig,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Addresses found for a target, and how long they may be trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// One backend per address, named `ENTRY@IP:PORT`.
    pub backends: Vec<BackendSpec>,
    /// The records' smallest TTL, clamped to `min_ttl..=max_ttl`.
    pub ttl: Duration,
}

impl Lookups {
    /// A resolver for `settings` (nameservers parsed by validation).
    pub fn new(settings: &DiscoveryConfig) -> Result<Lookups, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if settings.nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| format!("cannot read the system's resolver settings: {e}"))?
        } else {
            let servers = settings
                .nameservers()
                .map_err(|(text, _)| format!("nameserver {text:?} is not IP or IP:PORT"))?
                .into_iter()
                .map(|address| {
                    let connection = |mut c: ConnectionConfig| {
                        c.port = address.port();
                        c
                    };
                    NameServerConfig::new(
                        address.ip(),
                        true,
                        vec![connection(ConnectionConfig::udp()), connection(ConnectionConfig::tcp())],
                    )
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options = builder.options_mut();
        options.timeout = settings.timeout;
        options.attempts = 2;
        // The refresh schedule is ours: what the cache keeps must not outlive
        // it, and a failure must never be remembered.
        options.positive_max_ttl = Some(settings.max_ttl);
        options.negative_max_ttl = Some(Duration::ZERO);
        let resolver = builder.build().map_err(|e| format!("cannot build the resolver: {e}"))?;
        Ok(Lookups { resolver, settings: settings.clone() })
    }

    /// The backends `template` (a config entry, its name the prefix) stands
    /// for now. An answer without a usable address is an error: a name
    /// must never empty a group by itself.
    pub async fn find(&self, template: &BackendSpec, target: &Target) -> Result<Found, String> {
        let (backends, ttl) = match target {
            Target::Host { host, port } => {
                let (addresses, ttl) = self.addresses(host).await?;
                let backends = addresses.into_iter().map(|ip| named(template, SocketAddr::new(ip, *port), None));
                (backends.collect::<Vec<_>>(), ttl)
            }
            Target::Srv(name) => self.srv(template, name).await?,
        };
        if backends.is_empty() {
            return Err(format!("{target} has no addresses"));
        }
        Ok(Found { backends, ttl: ttl.clamp(self.settings.min_ttl, self.settings.max_ttl) })
    }

    async fn addresses(&self, host: &str) -> Result<(Vec<IpAddr>, Duration), String> {
        let lookup = self.resolver.lookup_ip(host).await.map_err(|e| failed(host, "A or AAAA", &e))?;
        let mut addresses: Vec<IpAddr> = lookup.iter().collect();
        addresses.sort();
        addresses.dedup();
        Ok((addresses, min_ttl(lookup.as_lookup().answers())))
    }

    async fn srv(&self, template: &BackendSpec, name: &str) -> Result<(Vec<BackendSpec>, Duration), String> {
        let lookup = self.resolver.srv_lookup(name).await.map_err(|e| failed(name, "SRV", &e))?;
        let records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                // A target of "." says the service is not available here.
                RData::SRV(srv) if !srv.target.is_root() => Some(srv.clone()),
                _ => None,
            })
            .collect();
        // RFC 2782: the lowest priority value is tried first; the others
        // only stand by, and standing by is what health checks are for.
        let Some(priority) = records.iter().map(|srv| srv.priority).min() else {
            return Err(format!("{name} has no SRV targets"));
        };
        let mut ttl = min_ttl(lookup.answers());
        let mut backends = Vec::new();
        for srv in records.iter().filter(|srv| srv.priority == priority) {
            // Servers usually send the targets' addresses along; ask when not.
            let mut addresses = glued(lookup.additionals(), &srv.target);
            if addresses.is_empty() {
                let (found, target_ttl) = self.addresses(&srv.target.to_ascii()).await?;
                addresses = found;
                ttl = ttl.min(target_ttl);
            }
            let weight = u32::from(srv.weight).clamp(1, MAX_WEIGHT);
            backends
                .extend(addresses.into_iter().map(|ip| named(template, SocketAddr::new(ip, srv.port), Some(weight))));
        }
        backends.sort_by(|a, b| a.name.cmp(&b.name));
        backends.dedup_by(|a, b| a.name == b.name);
        Ok((backends, ttl))
    }
}

/// Why a lookup of `name` failed, in words: hickory's own message for a
/// missing record spells out its query structure.
fn failed(name: &str, records: &str, error: &hickory_resolver::net::NetError) -> String {
    if error.is_no_records_found() {
        format!("{name} has no {records} records")
    } else {
        format!("cannot resolve {name}: {error}")
    }
}

/// The addresses of `target` among a response's additional records.
fn glued(additionals: &[Record], target: &Name) -> Vec<IpAddr> {
    additionals
        .iter()
        .filter(|r| r.name.eq_ignore_root_case(target))
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

fn min_ttl(records: &[Record]) -> Duration {
    Duration::from_secs(records.iter().map(|r| u64::from(r.ttl)).min().unwrap_or(0))
}

/// The backend for one address of the entry `template`.
fn named(template: &BackendSpec, address: SocketAddr, weight: Option<u32>) -> BackendSpec {
    BackendSpec {
        name: format!("{}@{address}", template.name),
        address,
        weight: weight.unwrap_or(template.weight),
        ..template.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_ports_and_srv_names_are_told_apart_from_mistakes() {
        let host = |h: &str, port| Some(Target::Host { host: h.to_string(), port });
        assert_eq!(Target::parse("api.internal:8080"), host("api.internal", 8080));
        assert_eq!(Target::parse("web:80"), host("web", 80));
        assert_eq!(Target::parse("my-svc.ns.svc.cluster.local.:443"), host("my-svc.ns.svc.cluster.local.", 443));
        assert_eq!(
            Target::parse("_http._tcp.my-svc.ns.svc.cluster.local"),
            Some(Target::Srv("_http._tcp.my-svc.ns.svc.cluster.local".into()))
        );
        for wrong in
            ["api.internal", "api:0", "api:99999", "nowhere", "_http._tcp", "a b:80", ":80", "1.2.3:80", "a..b:1"]
        {
            assert_eq!(Target::parse(wrong), None, "{wrong}");
        }
    }
}
