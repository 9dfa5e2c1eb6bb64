//! Per-client token buckets: each client may send `burst` requests at once and
//! `per_second` on average. Clients are told apart by address (with the
//! trusted-proxy rule for `X-Forwarded-For`) or by a configured header.
//!
//! Memory is bounded: at most `max_clients` buckets are tracked. A bucket that
//! has refilled to full is indistinguishable from a new one, so dropping it
//! changes no decision; those are the "idle" entries swept first. If the table
//! is full of active clients, the least recently seen sixteenth is dropped at
//! once (so the scan is paid once per sixteenth, not per new client); such a
//! client starts again with a full bucket, which is the price of the bound.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::HeaderName;
use parking_lot::Mutex;

/// Tokens are counted in thousandths so that fractional rates (0.5/s) and
/// refills over a few milliseconds stay exact integers.
const TOKEN: u64 = 1000;
const MICROS_PER_SECOND: u64 = 1_000_000;

/// Who a request is from, for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// A client address.
    Address(IpAddr),
    /// A hash of the configured header's value (fixed size whatever the
    /// value's length; keyed per process, so not predictable from outside).
    Header(u64),
}

/// An IP network (`10.0.0.0/8`, `::1/128`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    address: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// `ADDRESS` or `ADDRESS/PREFIX`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("'{text}' is not an IP address or network (e.g. 10.0.0.0/8, ::1)"))?;
        let address = address.to_canonical();
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("'{text}': the prefix length must be a number from 0 to {bits}"))?,
        };
        Ok(IpNet { address, prefix })
    }
}

/// How a request's [`ClientKey`] is found.
#[derive(Debug)]
pub struct KeyRule {
    header: Option<HeaderName>,
    trusted_proxies: Vec<IpNet>,
    hasher: RandomState,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl KeyRule {
    /// Keys by `header` when the request has it, else by client address; the
    /// address is taken from `X-Forwarded-For` only behind `trusted_proxies`.
    pub fn new(header: Option<HeaderName>, trusted_proxies: Vec<IpNet>) -> Self {
        KeyRule { header, trusted_proxies, hasher: RandomState::new() }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// The key of a request from `peer` with `headers`. The configured
    /// header is believed only from a trusted proxy (one that set or checked
    /// it): from anyone else, a client could send a new value with every
    /// request and never run out of tokens, so it is keyed by its address.
    pub fn key(&self, headers: &HeaderMap, peer: IpAddr) -> ClientKey {
        match self.believed_header(headers, peer) {
            Some(value) => ClientKey::Header(self.hasher.hash_one(value.as_bytes())),
            None => ClientKey::Address(self.client_address(headers, peer)),
        }
    }

    /// The same client's key as every instance of a fleet spells it (for
    /// the shared limit: [`ClientKey`]s are hashed with a per-process
    /// secret). A header value is stored hashed: API keys must not land in
    /// the store.
    pub fn fleet_key(&self, headers: &HeaderMap, peer: IpAddr) -> String {
        use sha2::Digest;
        match self.believed_header(headers, peer) {
            Some(value) => {
                let digest = sha2::Sha256::digest(value.as_bytes());
                digest[..16].iter().fold(String::from("key:"), |mut hex, byte| {
                    use std::fmt::Write;
                    let _ = write!(hex, "{byte:02x}");
                    hex
                })
            }
            None => format!("ip:{}", self.client_address(headers, peer)),
        }
    }

    fn believed_header<'h>(&self, headers: &'h HeaderMap, peer: IpAddr) -> Option<&'h http::HeaderValue> {
        self.header.as_ref().filter(|_| self.trusted(peer)).and_then(|name| headers.get(name))
    }

    /// The client's address: the peer, unless the peer is a trusted proxy; then
    /// the right-most `X-Forwarded-For` entry that is not a trusted proxy
    /// (entries left of it were written by the client or hops nobody vouches
    /// for, so they could be forged). If every entry is trusted, the left-most.
    pub fn client_address(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted(peer) {
            return peer;
        }
        let entries: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        let mut client = peer;
        for entry in entries.into_iter().rev() {
            let Some(ip) = parse_forwarded_address(entry) else {
                // A trusted hop forwarded garbage: nothing left of it can be
                // vouched for, so the last vouched-for address stands.
                return client;
            };
            client = ip;
            if !self.trusted(ip) {
                return ip;
            }
        }
        client
    }
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:80`, `::1` or `[::1]:80`.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The arithmetic of one bucket, in thousandths of a token.
#[derive(Debug, Clone, Copy)]
pub struct BucketPolicy {
    capacity_milli: u64,
    refill_milli_per_second: u64,
}

impl BucketPolicy {
    /// `burst` tokens at most, refilled at `per_second` (both > 0; validated by the config).
    pub fn new(burst: u32, per_second: f64) -> Self {
        BucketPolicy {
            capacity_milli: u64::from(burst.max(1)) * TOKEN,
            // At least a thousandth of a token per second so that the arithmetic never divides by zero.
            refill_milli_per_second: ((per_second.max(0.0) * TOKEN as f64).round() as u64).max(1),
        }
    }

    /// How long an empty bucket takes to fill up: after that a client's entry
    /// carries no information.
    pub fn time_to_fill(&self) -> Duration {
        Duration::from_micros(self.capacity_milli.saturating_mul(MICROS_PER_SECOND) / self.refill_milli_per_second)
    }
}

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens_milli: u64,
    /// The instant up to which refill has been credited.
    refilled: Instant,
    last_seen: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(policy: &BucketPolicy, now: Instant) -> Self {
        Bucket { tokens_milli: policy.capacity_milli, refilled: now, last_seen: now }
    }

    fn refill(&mut self, policy: &BucketPolicy, now: Instant) {
        let elapsed_us = now.saturating_duration_since(self.refilled).as_micros() as u64;
        let credit = elapsed_us.saturating_mul(policy.refill_milli_per_second) / MICROS_PER_SECOND;
        if credit == 0 {
            return;
        }
        if self.tokens_milli + credit >= policy.capacity_milli {
            self.tokens_milli = policy.capacity_milli;
            self.refilled = now;
        } else {
            self.tokens_milli += credit;
            // Advance only by the time the credit accounts for, so the
            // remainder is not lost when calls come every few microseconds.
            self.refilled += Duration::from_micros(credit * MICROS_PER_SECOND / policy.refill_milli_per_second);
        }
    }

    /// Takes one token at `now`; `Err` carries how long until one is available.
    pub fn try_take(&mut self, policy: &BucketPolicy, now: Instant) -> Result<(), Duration> {
        self.refill(policy, now);
        self.last_seen = self.last_seen.max(now);
        if self.tokens_milli >= TOKEN {
            self.tokens_milli -= TOKEN;
            return Ok(());
        }
        let missing = TOKEN - self.tokens_milli;
        let accrued = now.saturating_duration_since(self.refilled);
        let wait = Duration::from_micros((missing * MICROS_PER_SECOND).div_ceil(policy.refill_milli_per_second));
        Err(wait.saturating_sub(accrued).max(Duration::from_micros(1)))
    }

    /// Whether the bucket would be full at `now` (so forgetting it changes nothing).
    pub fn is_idle(&self, policy: &BucketPolicy, now: Instant) -> bool {
        let mut probe = *self;
        probe.refill(policy, now);
        probe.tokens_milli >= policy.capacity_milli
    }
}

/// The buckets of every tracked client.
#[derive(Debug)]
pub struct ClientBuckets {
    policy: BucketPolicy,
    max_clients: usize,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

impl ClientBuckets {
    /// Buckets of `policy`, for at most `max_clients` clients (at least 1).
    pub fn new(policy: BucketPolicy, max_clients: usize) -> Self {
        ClientBuckets { policy, max_clients: max_clients.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token from `key`'s bucket at `now`; `Err` carries how long
    /// until the client may try again.
    pub fn try_take(&self, key: ClientKey, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock();
        if let Some(bucket) = buckets.get_mut(&key) {
            return bucket.try_take(&self.policy, now);
        }
        if buckets.len() >= self.max_clients {
            self.make_room(&mut buckets, now);
        }
        let mut bucket = Bucket::full(&self.policy, now);
        let taken = bucket.try_take(&self.policy, now);
        buckets.insert(key, bucket);
        taken
    }

    /// Drops idle buckets; if none is idle, the least recently seen sixteenth.
    fn make_room(&self, buckets: &mut HashMap<ClientKey, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| !bucket.is_idle(&self.policy, now));
        if buckets.len() < self.max_clients {
            return;
        }
        let mut seen: Vec<Instant> = buckets.values().map(|b| b.last_seen).collect();
        let evict = (self.max_clients / 16).max(1);
        let (_, cutoff, _) = seen.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        let mut evicted = 0;
        buckets.retain(|_, bucket| {
            // `evicted` caps ties at the cutoff so that exactly `evict` go.
            let drop = bucket.last_seen <= cutoff && evicted < evict;
            evicted += usize::from(drop);
            !drop
        });
    }

    /// Drops every idle bucket (called periodically so that the tracked count
    /// falls back when traffic does).
    pub fn sweep(&self, now: Instant) {
        self.buckets.lock().retain(|_, bucket| !bucket.is_idle(&self.policy, now));
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_the_refill_rate() {
        let policy = BucketPolicy::new(3, 10.0);
        let start = Instant::now();
        let mut bucket = Bucket::full(&policy, start);
        assert!((0..3).all(|_| bucket.try_take(&policy, start).is_ok()));
        assert_eq!(bucket.try_take(&policy, start), Err(ms(100)), "one token per 100 ms");
        assert_eq!(bucket.try_take(&policy, start + ms(40)), Err(ms(60)));
        assert!(bucket.try_take(&policy, start + ms(100)).is_ok());
        assert!(bucket.try_take(&policy, start + ms(100)).is_err());
        // 1 s refills 10 tokens, but the bucket holds 3.
        assert!((0..3).all(|_| bucket.try_take(&policy, start + ms(1100)).is_ok()));
        assert!(bucket.try_take(&policy, start + ms(1100)).is_err());
    }

    #[test]
    fn frequent_calls_do_not_lose_fractional_refill() {
        // 0.5 tokens per second asked for every 7 ms: each call credits 3.5
        // thousandths. Rounding each credit down (and restarting the clock)
        // would grant 4 tokens in 10 s instead of 5.
        let policy = BucketPolicy::new(5, 0.5);
        let start = Instant::now();
        let mut bucket = Bucket::full(&policy, start);
        assert!((0..5).all(|_| bucket.try_take(&policy, start).is_ok()));
        let granted = (1..=1430).filter(|i| bucket.try_take(&policy, start + ms(i * 7)).is_ok()).count();
        assert_eq!(granted, 5, "one token per 2 s over 10.01 s");
    }

    #[test]
    fn retry_after_counts_down_to_the_next_token() {
        let policy = BucketPolicy::new(1, 0.25);
        let start = Instant::now();
        let mut bucket = Bucket::full(&policy, start);
        assert!(bucket.try_take(&policy, start).is_ok());
        assert_eq!(bucket.try_take(&policy, start), Err(ms(4000)));
        assert_eq!(bucket.try_take(&policy, start + ms(2500)), Err(ms(1500)));
        assert!(bucket.try_take(&policy, start + ms(4000)).is_ok());
    }

    #[test]
    fn buckets_are_per_client() {
        let buckets = ClientBuckets::new(BucketPolicy::new(2, 1.0), 100);
        let now = Instant::now();
        let (a, b) = (ClientKey::Address([10, 0, 0, 1].into()), ClientKey::Address([10, 0, 0, 2].into()));
        assert!(buckets.try_take(a, now).is_ok() && buckets.try_take(a, now).is_ok());
        assert!(buckets.try_take(a, now).is_err(), "a spent its burst");
        assert!(buckets.try_take(b, now).is_ok(), "b is unaffected by a");
        assert_eq!(buckets.tracked(), 2);
    }

    #[test]
    fn idle_clients_are_swept_and_memory_stays_bounded() {
        let policy = BucketPolicy::new(2, 10.0);
        assert_eq!(policy.time_to_fill(), ms(200));
        let buckets = ClientBuckets::new(policy, 32);
        let start = Instant::now();
        let client = |i: u32| ClientKey::Address(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + i)));
        for i in 0..32 {
            assert!(buckets.try_take(client(i), start).is_ok());
        }
        assert_eq!(buckets.tracked(), 32);
        // Full of active clients: a newcomer evicts the least recently seen sixteenth (2).
        assert!(buckets.try_take(client(100), start + ms(1)).is_ok());
        assert_eq!(buckets.tracked(), 31);
        for i in 0..1000 {
            let _ = buckets.try_take(client(1000 + i), start + ms(2));
            assert!(buckets.tracked() <= 32);
        }
        // Once refilled, everyone is idle.
        buckets.sweep(start + ms(250));
        assert_eq!(buckets.tracked(), 0);
    }

    #[test]
    fn full_table_drops_idle_entries_before_active_ones() {
        let buckets = ClientBuckets::new(BucketPolicy::new(1, 10.0), 2);
        let start = Instant::now();
        let (a, b, c) = (ClientKey::Header(1), ClientKey::Header(2), ClientKey::Header(3));
        assert!(buckets.try_take(a, start).is_ok());
        assert!(buckets.try_take(b, start + ms(90)).is_ok());
        // At 100 ms a has refilled (idle), b has not: a goes, b stays.
        assert!(buckets.try_take(c, start + ms(100)).is_ok());
        assert!(buckets.try_take(b, start + ms(100)).is_err(), "b's state survived");
    }

    fn rule(trusted: &[&str]) -> KeyRule {
        KeyRule::new(None, trusted.iter().map(|t| t.parse().unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let peer: IpAddr = [203, 0, 113, 9].into();
        assert_eq!(rule(&["10.0.0.0/8"]).client_address(&xff(&["1.1.1.1"]), peer), peer);
        assert_eq!(rule(&[]).client_address(&xff(&["1.1.1.1"]), peer), peer);
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_address_is_the_client() {
        let rule = rule(&["10.0.0.0/8", "127.0.0.1"]);
        let peer: IpAddr = [127, 0, 0, 1].into();
        let headers = xff(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        // 6.6.6.6 could be forged by the client; 198.51.100.7 was written by a trusted hop.
        assert_eq!(rule.client_address(&headers, peer), IpAddr::from([198, 51, 100, 7]));
        assert_eq!(rule.client_address(&xff(&["10.0.0.5, 10.0.0.6"]), peer), IpAddr::from([10, 0, 0, 5]));
        assert_eq!(rule.client_address(&HeaderMap::new(), peer), peer);
        assert_eq!(rule.client_address(&xff(&["junk, 10.0.0.6"]), peer), IpAddr::from([10, 0, 0, 6]));
        assert_eq!(rule.client_address(&xff(&["[2001:db8::1]:443"]), peer), "2001:db8::1".parse::<IpAddr>().unwrap());
        // An IPv4-mapped IPv6 peer is the IPv4 address.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(rule.client_address(&xff(&["192.0.2.1"]), mapped), IpAddr::from([192, 0, 2, 1]));
    }

    #[test]
    fn a_configured_header_keys_the_client_when_present() {
        let rule = KeyRule::new(Some(HeaderName::from_static("x-api-key")), vec!["192.0.2.0/24".parse().unwrap()]);
        let peer: IpAddr = [192, 0, 2, 1].into();
        let mut a = HeaderMap::new();
        a.insert("x-api-key", HeaderValue::from_static("alpha"));
        let mut b = HeaderMap::new();
        b.insert("x-api-key", HeaderValue::from_static("beta"));
        assert_eq!(rule.key(&a, peer), rule.key(&a.clone(), [192, 0, 2, 2].into()), "same key, any address");
        assert_ne!(rule.key(&a, peer), rule.key(&b, peer));
        assert_eq!(rule.key(&HeaderMap::new(), peer), ClientKey::Address(peer));
    }

    #[test]
    fn the_key_header_is_not_believed_from_an_untrusted_peer() {
        let rule = KeyRule::new(Some(HeaderName::from_static("x-api-key")), vec!["10.0.0.0/8".parse().unwrap()]);
        let client: IpAddr = [198, 51, 100, 9].into();
        let keys: std::collections::HashSet<_> = (0..50)
            .map(|i| {
                let mut headers = HeaderMap::new();
                headers.insert("x-api-key", HeaderValue::from_str(&format!("forged-{i}")).unwrap());
                rule.key(&headers, client)
            })
            .collect();
        assert_eq!(keys.len(), 1, "fifty forged keys are one client");
        assert_eq!(keys.into_iter().next(), Some(ClientKey::Address(client)));
    }

    #[test]
    fn networks_parse_and_match() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains([10, 200, 0, 1].into()) && !net.contains([11, 0, 0, 1].into()));
        assert!("0.0.0.0/0".parse::<IpNet>().unwrap().contains([8, 8, 8, 8].into()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()) && !v6.contains([10, 0, 0, 1].into()));
        assert!("::1".parse::<IpNet>().unwrap().contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().unwrap_err().contains("0 to 32"));
        assert!("example.com".parse::<IpNet>().is_err());
    }
}
