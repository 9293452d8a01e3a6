//! batch-job: counts the primes below `LIMIT` (default 100000), prints the count, exits 0.

fn main() {
    let limit: usize = std::env::var("LIMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let mut sieve = vec![true; limit.max(2)];
    sieve[0] = false;
    sieve[1] = false;
    let mut i = 2;
    while i * i < limit {
        if sieve[i] {
            let mut j = i * i;
            while j < limit {
                sieve[j] = false;
                j += i;
            }
        }
        i += 1;
    }
    let count = sieve.iter().filter(|p| **p).count();
    println!("primes below {limit}: {count}");
}
