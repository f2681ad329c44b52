//! Seeded randomness for the crash and soak tests: reproducible from the seed they print.

/// xorshift64: enough randomness for fault schedules and kill delays, and reproducible from
/// its seed (which must not be 0).
#[derive(Clone, Debug)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The seed in the environment variable `var` when it is set (and not empty), to replay a
/// run; otherwise a new one from the time and the process id. Never 0.
pub fn seed_from_env(var: &str) -> u64 {
    if let Some(seed) = std::env::var(var).ok().filter(|s| !s.is_empty()) {
        return seed
            .parse()
            .unwrap_or_else(|_| panic!("{var}={seed}: not a u64"));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    (nanos as u64 ^ u64::from(std::process::id())) | 1
}
