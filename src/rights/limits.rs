//! Limits on what the public may ask of the service: token buckets per client address for
//! public submissions and for public transparency reads, and one global bucket for all public
//! submissions.
//!
//! They must hold against a caller who controls many addresses. So an address is an IPv4
//! address or an IPv6 /64 (one subscriber's usual allocation; an IPv4-mapped IPv6 address is its
//! IPv4 address); the buckets live in a bounded table that evicts the least recently seen
//! address, never all of them at once (a table that clears itself when full lets a churner
//! reset everyone's bucket, its own included); and the global bucket caps what all addresses
//! together may submit, whatever their number. Callers without a known address share one
//! bucket. Synchronous and clock-free: every call takes `now`.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use jiff::Timestamp;
use parking_lot::Mutex;

use super::{Error, Settings};

/// Addresses whose buckets are kept: about 5 MiB at most. Beyond it the least recently seen
/// address is forgotten (its next call starts with a full bucket).
pub const TRACKED_ADDRESSES: usize = 65_536;

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
    /// A call whose peer address is not known.
    Unknown,
}

impl ClientKey {
    pub fn of(peer: Option<IpAddr>) -> ClientKey {
        match peer {
            None => ClientKey::Unknown,
            Some(IpAddr::V4(a)) => ClientKey::V4(a.octets()),
            Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&a.octets()[..8]);
                    ClientKey::V6(prefix)
                }
            },
        }
    }
}

/// A rate: `per_minute` calls a minute, and a burst of as many.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    fn per_minute(n: u32) -> Rate {
        let n = f64::from(n.max(1));
        Rate { per_second: n / 60.0, burst: n }
    }
}

/// Tokens left, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Timestamp,
}

impl Bucket {
    fn full(rate: Rate, now: Timestamp) -> Bucket {
        Bucket { tokens: rate.burst, at: now }
    }

    /// Refills the bucket up to `now`; returns `None` if a token is left, else the seconds
    /// until there is one.
    fn refill(&mut self, rate: Rate, now: Timestamp) -> Option<u64> {
        let elapsed = now.duration_since(self.at).as_secs_f64().max(0.0);
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = self.at.max(now);
        // Rounding errors forgiven: a caller back after the advised wait finds its token.
        (self.tokens < 1.0 - 1e-9).then(|| (((1.0 - self.tokens) / rate.per_second - 1e-6).ceil() as u64).max(1))
    }

    fn take(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// Buckets per client, the least recently seen forgotten first.
struct Table {
    rate: Rate,
    capacity: usize,
    /// Each client's bucket and the tick it was last seen.
    buckets: HashMap<ClientKey, (Bucket, u64)>,
    /// Clients by the tick they were last seen: the first is the least recent.
    seen: BTreeMap<u64, ClientKey>,
    tick: u64,
}

impl Table {
    fn new(rate: Rate, capacity: usize) -> Table {
        Table { rate, capacity: capacity.max(1), buckets: HashMap::new(), seen: BTreeMap::new(), tick: 0 }
    }

    /// `key`'s bucket, marked as just seen (a new client gets a full one, evicting the least
    /// recently seen client if the table is full).
    fn bucket(&mut self, key: ClientKey, now: Timestamp) -> &mut Bucket {
        self.tick += 1;
        let tick = self.tick;
        if let Some((_, seen)) = self.buckets.get_mut(&key) {
            self.seen.remove(seen);
            *seen = tick;
        } else {
            if self.buckets.len() >= self.capacity
                && let Some((_, oldest)) = self.seen.pop_first()
            {
                self.buckets.remove(&oldest);
            }
            self.buckets.insert(key, (Bucket::full(self.rate, now), tick));
        }
        self.seen.insert(tick, key);
        &mut self.buckets.get_mut(&key).expect("the bucket was just found or inserted").0
    }

    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The public limits of one server.
pub struct Limits {
    submissions: Mutex<Table>,
    /// All public submissions together.
    global: Mutex<(Rate, Option<Bucket>)>,
    reads: Mutex<Table>,
}

impl Limits {
    pub fn new(settings: &Settings) -> Limits {
        Limits::with_capacity(settings, TRACKED_ADDRESSES)
    }

    /// [`Limits::new`] tracking at most `addresses` clients per kind of call.
    pub fn with_capacity(settings: &Settings, addresses: usize) -> Limits {
        Limits {
            submissions: Mutex::new(Table::new(Rate::per_minute(settings.submissions_per_minute), addresses)),
            global: Mutex::new((Rate::per_minute(settings.public_submissions_per_minute), None)),
            reads: Mutex::new(Table::new(Rate::per_minute(settings.transparency_reads_per_minute), addresses)),
        }
    }

    /// Takes a token for a public submission from `peer`'s bucket and from the global one, or
    /// says when to come back (then neither is taken).
    pub fn admit_submission(&self, peer: Option<IpAddr>, now: Timestamp) -> Result<(), Error> {
        let mut table = self.submissions.lock();
        let rate = table.rate;
        let own = table.bucket(ClientKey::of(peer), now);
        let mut global = self.global.lock();
        let (global_rate, global_bucket) = &mut *global;
        let all = global_bucket.get_or_insert_with(|| Bucket::full(*global_rate, now));
        let wait = own.refill(rate, now).max(all.refill(*global_rate, now));
        if let Some(retry_after_secs) = wait {
            return Err(Error::RateLimited { retry_after_secs });
        }
        own.take();
        all.take();
        Ok(())
    }

    /// Takes a token for a public read of the transparency log from `peer`'s bucket.
    pub fn admit_read(&self, peer: Option<IpAddr>, now: Timestamp) -> Result<(), Error> {
        let mut table = self.reads.lock();
        let rate = table.rate;
        let bucket = table.bucket(ClientKey::of(peer), now);
        if let Some(retry_after_secs) = bucket.refill(rate, now) {
            return Err(Error::RateLimited { retry_after_secs });
        }
        bucket.take();
        Ok(())
    }

    /// Clients tracked for submissions (at most the table's capacity).
    pub fn tracked(&self) -> usize {
        self.submissions.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn limits(per_address: u32, global: u32) -> Limits {
        let settings = Settings {
            submissions_per_minute: per_address,
            public_submissions_per_minute: global,
            transparency_reads_per_minute: 3,
            ..Settings::default()
        };
        Limits::with_capacity(&settings, 4)
    }

    #[test]
    fn each_address_gets_its_burst_then_waits_for_its_rate() {
        let l = limits(2, 1000);
        assert!(l.admit_submission(ip("10.0.0.1"), at(0)).is_ok());
        assert!(l.admit_submission(ip("10.0.0.1"), at(0)).is_ok());
        assert!(matches!(l.admit_submission(ip("10.0.0.1"), at(0)), Err(Error::RateLimited { retry_after_secs: 30 })));
        assert!(l.admit_submission(ip("10.0.0.2"), at(0)).is_ok(), "another address has its own bucket");
        assert!(matches!(l.admit_submission(ip("10.0.0.1"), at(10)), Err(Error::RateLimited { retry_after_secs: 20 })));
        assert!(l.admit_submission(ip("10.0.0.1"), at(30)).is_ok(), "one token back after 30 s at 2 a minute");
    }

    #[test]
    fn ipv6_addresses_are_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let l = limits(2, 1000);
        assert!(l.admit_submission(ip("2001:db8:1:2::1"), at(0)).is_ok());
        assert!(l.admit_submission(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), at(0)).is_ok());
        assert!(
            l.admit_submission(ip("2001:db8:1:2:dead:beef::7"), at(0)).is_err(),
            "one /64 shares one bucket, whatever its interface ids"
        );
        assert!(l.admit_submission(ip("2001:db8:1:3::1"), at(0)).is_ok(), "the next /64 is another client");
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(ClientKey::of(Some(mapped)), ClientKey::of(ip("192.0.2.7")));
        assert_eq!(ClientKey::of(Some(IpAddr::V6(Ipv6Addr::LOCALHOST))), ClientKey::V6([0; 8]));
        assert_eq!(ClientKey::of(None), ClientKey::Unknown);
    }

    #[test]
    fn callers_without_an_address_share_one_bucket() {
        let l = limits(1, 1000);
        assert!(l.admit_submission(None, at(0)).is_ok());
        assert!(l.admit_submission(None, at(0)).is_err());
    }

    #[test]
    fn churning_addresses_does_not_reset_a_recently_seen_one() {
        // A table of 4: the limited address keeps calling while 3 others churn through.
        let l = limits(1, 1000);
        assert!(l.admit_submission(ip("10.0.0.1"), at(0)).is_ok());
        for i in 0..100u8 {
            assert!(l.admit_submission(ip(&format!("10.1.0.{i}")), at(0)).is_ok());
            if i % 2 == 0 {
                assert!(l.admit_submission(ip("10.0.0.1"), at(0)).is_err(), "still limited after {i} other addresses");
            }
            assert!(l.tracked() <= 4, "the table stays bounded");
        }
        // Forgotten only once it is the least recently seen of more addresses than the table holds.
        for i in 0..4u8 {
            l.admit_submission(ip(&format!("10.2.0.{i}")), at(0)).unwrap();
        }
        assert!(l.admit_submission(ip("10.0.0.1"), at(0)).is_ok(), "evicted, it starts again with a full bucket");
    }

    #[test]
    fn the_global_cap_holds_whatever_the_number_of_addresses() {
        let l = limits(10, 3);
        for i in 0..3u8 {
            l.admit_submission(ip(&format!("10.0.0.{i}")), at(0)).unwrap();
        }
        let refused = l.admit_submission(ip("10.9.9.9"), at(0));
        assert!(matches!(refused, Err(Error::RateLimited { retry_after_secs: 20 })), "{refused:?}");
        assert!(l.admit_submission(ip("10.9.9.9"), at(20)).is_ok(), "a token back after 20 s at 3 a minute");
        // A refusal takes a token from neither bucket.
        let l = limits(1, 2);
        l.admit_submission(ip("10.0.0.1"), at(0)).unwrap();
        assert!(l.admit_submission(ip("10.0.0.1"), at(0)).is_err());
        assert!(l.admit_submission(ip("10.0.0.2"), at(0)).is_ok(), "the refused call took nothing from the cap");
        assert!(l.admit_submission(ip("10.0.0.3"), at(0)).is_err());
    }

    #[test]
    fn reads_have_their_own_buckets() {
        let l = limits(1, 1);
        l.admit_submission(ip("10.0.0.1"), at(0)).unwrap();
        for _ in 0..3 {
            assert!(l.admit_read(ip("10.0.0.1"), at(0)).is_ok());
        }
        assert!(matches!(l.admit_read(ip("10.0.0.1"), at(0)), Err(Error::RateLimited { retry_after_secs: 20 })));
        assert!(l.admit_read(ip("10.0.0.2"), at(0)).is_ok());
    }

    #[test]
    fn a_clock_going_back_gives_nothing_back() {
        let l = limits(1, 1000);
        l.admit_submission(ip("10.0.0.1"), at(100)).unwrap();
        assert!(l.admit_submission(ip("10.0.0.1"), at(0)).is_err());
        assert!(l.admit_submission(ip("10.0.0.1"), at(130)).is_err(), "the refill counts from the latest time");
        assert!(l.admit_submission(ip("10.0.0.1"), at(160)).is_ok());
    }
}
