//! Choosing an endpoint: round robin or least outstanding requests by the power of two
//! choices, client-IP affinity, and outlier ejection (an endpoint whose connections keep
//! failing is skipped for a while). Pure: time and randomness come from the caller.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Consecutive failures that eject an endpoint.
pub const EJECT_AFTER: u32 = 3;
/// How long an ejected endpoint is skipped.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    RoundRobin,
    /// Power of two choices over outstanding requests.
    #[default]
    LeastRequest,
}

impl Algorithm {
    /// From the Service annotation `wasmorch.io/load-balancer` (`round-robin` or
    /// `least-request`, the default).
    pub fn parse(s: Option<&str>) -> Algorithm {
        match s {
            Some("round-robin") => Algorithm::RoundRobin,
            _ => Algorithm::LeastRequest,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Health {
    outstanding: u32,
    failures: u32,
    ejected_until: Option<Instant>,
}

/// Balancing state of one Service port.
#[derive(Debug, Default)]
pub struct Balancer {
    next: usize,
    health: HashMap<SocketAddr, Health>,
    /// Client IP → (endpoint, last use).
    affinity: HashMap<IpAddr, (SocketAddr, Instant)>,
}

/// What [`Balancer::pick`] needs besides the endpoints.
pub struct Pick {
    pub algorithm: Algorithm,
    /// Client-IP affinity and its timeout.
    pub affinity: Option<(IpAddr, Duration)>,
    /// An endpoint not to choose (the one that just failed).
    pub exclude: Option<SocketAddr>,
    /// Endpoints at their concurrency limit: chosen only when all others are too.
    pub busy: Vec<SocketAddr>,
    pub now: Instant,
    /// Two random numbers for the power of two choices.
    pub random: (u64, u64),
}

impl Balancer {
    fn usable(&self, a: &SocketAddr, now: Instant) -> bool {
        self.health.get(a).and_then(|h| h.ejected_until).is_none_or(|t| t <= now)
    }

    /// Choose among `endpoints`; `None` only when there is none to choose.
    pub fn pick(&mut self, endpoints: &[SocketAddr], p: &Pick) -> Option<SocketAddr> {
        let mut pool: Vec<SocketAddr> = endpoints.iter().copied().filter(|a| Some(*a) != p.exclude).collect();
        if pool.is_empty() {
            return None;
        }
        // Ejected endpoints are skipped unless every endpoint is ejected.
        if pool.iter().any(|a| self.usable(a, p.now)) {
            pool.retain(|a| self.usable(a, p.now));
        }
        // Replicas with free capacity first.
        if pool.iter().any(|a| !p.busy.contains(a)) {
            pool.retain(|a| !p.busy.contains(a));
        }
        if let Some((client, timeout)) = p.affinity
            && let Some((a, last)) = self.affinity.get(&client)
            && p.now.duration_since(*last) < timeout
            && pool.contains(a)
        {
            let a = *a;
            self.affinity.insert(client, (a, p.now));
            return Some(a);
        }
        let chosen = match p.algorithm {
            Algorithm::RoundRobin => {
                let a = pool[self.next % pool.len()];
                self.next = self.next.wrapping_add(1);
                a
            }
            Algorithm::LeastRequest if pool.len() == 1 => pool[0],
            Algorithm::LeastRequest => {
                let i = (p.random.0 % pool.len() as u64) as usize;
                let mut j = (p.random.1 % (pool.len() as u64 - 1)) as usize;
                if j >= i {
                    j += 1;
                }
                let load = |a: &SocketAddr| self.health.get(a).map_or(0, |h| h.outstanding);
                if load(&pool[j]) < load(&pool[i]) { pool[j] } else { pool[i] }
            }
        };
        if let Some((client, _)) = p.affinity {
            self.affinity.insert(client, (chosen, p.now));
        }
        Some(chosen)
    }

    /// A request to `a` begins.
    pub fn start(&mut self, a: SocketAddr) {
        self.health.entry(a).or_default().outstanding += 1;
    }

    /// A request to `a` ended; `connected` false when the endpoint could not be reached.
    pub fn finish(&mut self, a: SocketAddr, connected: bool, now: Instant) {
        let h = self.health.entry(a).or_default();
        h.outstanding = h.outstanding.saturating_sub(1);
        if connected {
            h.failures = 0;
            h.ejected_until = None;
        } else {
            h.failures += 1;
            if h.failures >= EJECT_AFTER {
                h.ejected_until = Some(now + EJECT_FOR);
                h.failures = 0;
            }
        }
    }

    pub fn outstanding(&self, a: &SocketAddr) -> u32 {
        self.health.get(a).map_or(0, |h| h.outstanding)
    }

    /// Requests in flight through this balancer.
    pub fn in_flight(&self) -> u32 {
        self.health.values().map(|h| h.outstanding).sum()
    }

    /// Forget endpoints that are gone.
    pub fn retain(&mut self, endpoints: &[SocketAddr]) {
        self.health.retain(|a, h| endpoints.contains(a) || h.outstanding > 0);
        self.affinity.retain(|_, (a, _)| endpoints.contains(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 8000 + i))).collect()
    }

    fn pick(alg: Algorithm, now: Instant, r: (u64, u64)) -> Pick {
        Pick { algorithm: alg, affinity: None, exclude: None, busy: Vec::new(), now, random: r }
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let (mut b, a, now) = (Balancer::default(), addrs(3), Instant::now());
        let got: Vec<_> = (0..6).map(|_| b.pick(&a, &pick(Algorithm::RoundRobin, now, (0, 0))).unwrap()).collect();
        assert_eq!(got, [a[0], a[1], a[2], a[0], a[1], a[2]]);
    }

    #[test]
    fn least_request_prefers_the_less_loaded_of_two() {
        let (mut b, a, now) = (Balancer::default(), addrs(2), Instant::now());
        b.start(a[0]);
        b.start(a[0]);
        b.start(a[1]);
        for r in [(0, 0), (1, 0), (5, 7)] {
            assert_eq!(b.pick(&a, &pick(Algorithm::LeastRequest, now, r)), Some(a[1]));
        }
        b.finish(a[0], true, now);
        b.finish(a[0], true, now);
        assert_eq!(b.outstanding(&a[0]), 0);
        assert_eq!(b.pick(&a, &pick(Algorithm::LeastRequest, now, (1, 0))), Some(a[0]));
    }

    #[test]
    fn failing_endpoints_are_ejected_for_a_while_unless_all_are() {
        let (mut b, a, now) = (Balancer::default(), addrs(2), Instant::now());
        for _ in 0..EJECT_AFTER {
            b.start(a[0]);
            b.finish(a[0], false, now);
        }
        for i in 0..10 {
            assert_eq!(b.pick(&a, &pick(Algorithm::RoundRobin, now, (i, i))), Some(a[1]));
        }
        // Both ejected: traffic still goes somewhere.
        for _ in 0..EJECT_AFTER {
            b.finish(a[1], false, now);
        }
        assert!(b.pick(&a, &pick(Algorithm::LeastRequest, now, (0, 0))).is_some());
        // After the ejection time it is back.
        let later = now + EJECT_FOR + Duration::from_millis(1);
        let seen: std::collections::HashSet<_> =
            (0..4).map(|_| b.pick(&a, &pick(Algorithm::RoundRobin, later, (0, 0))).unwrap()).collect();
        assert_eq!(seen.len(), 2);
        // A success resets the count.
        b.finish(a[0], false, later);
        b.finish(a[0], true, later);
        b.finish(a[0], false, later);
        b.finish(a[0], false, later);
        assert!(b.usable(&a[0], later));
    }

    #[test]
    fn retry_excludes_the_failed_endpoint_and_affinity_sticks() {
        let (mut b, a, now) = (Balancer::default(), addrs(3), Instant::now());
        let mut p = pick(Algorithm::RoundRobin, now, (0, 0));
        p.exclude = Some(a[0]);
        for _ in 0..6 {
            assert_ne!(b.pick(&a, &p), Some(a[0]));
        }
        p.exclude = None;
        let client: IpAddr = [10, 0, 0, 9].into();
        p.affinity = Some((client, Duration::from_secs(60)));
        let first = b.pick(&a, &p).unwrap();
        for _ in 0..5 {
            assert_eq!(b.pick(&a, &p), Some(first));
        }
        // Expired affinity: a new choice is made (round robin moves on).
        p.now = now + Duration::from_secs(61);
        p.affinity = Some((client, Duration::from_secs(60)));
        let second = b.pick(&a, &p).unwrap();
        assert_ne!(second, first);
        // A gone endpoint loses its clients.
        b.retain(&[a[0]]);
        assert_eq!(b.pick(&[a[0]], &p), Some(a[0]));
        assert_eq!(b.pick(&[], &p), None);
    }

    #[test]
    fn busy_replicas_are_chosen_last() {
        let now = Instant::now();
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        for alg in [Algorithm::RoundRobin, Algorithm::LeastRequest] {
            let mut bal = Balancer::default();
            for i in 0..20u64 {
                let mut p = pick(alg, now, (i, i * 7 + 3));
                p.busy = vec![a];
                assert_eq!(bal.pick(&[a, b], &p), Some(b));
            }
            let mut p = pick(alg, now, (1, 2));
            p.busy = vec![a, b];
            assert!(bal.pick(&[a, b], &p).is_some(), "all busy: still one of them");
        }
    }
}
