//! How the node lease keep-alive retries while etcd cannot be reached: pauses that grow, and
//! warnings that do not flood the log (sans-IO: the caller passes the time).

use std::time::{Duration, Instant};

/// Pause after a failed attempt: 20 ms at first (one member down: the next one answers at
/// once), doubling up to the keep-alive interval; [`reset`](Self::reset) after a renewal.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(20);

    pub(super) fn new(max: Duration) -> Self {
        Self {
            next: Self::FIRST.min(max),
            max,
        }
    }

    pub(super) fn pause(&mut self) -> Duration {
        let p = self.next;
        self.next = (self.next * 2).min(self.max);
        p
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }
}

/// Which failures are logged as warnings: the first of a run, then one per `every` with the
/// count of those in between.
#[derive(Debug)]
pub(super) struct FailureLog {
    every: Duration,
    /// Start of the current run of failures, and when the last warning went out.
    run: Option<(Instant, Instant)>,
    /// Failures since the last warning.
    quiet: u64,
}

/// What to log for one failure.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Warn; `quiet` failures were not logged since the previous warning.
    Warn { quiet: u64 },
    /// Log at debug level only.
    Quiet,
}

impl FailureLog {
    pub(super) fn new(every: Duration) -> Self {
        Self {
            every,
            run: None,
            quiet: 0,
        }
    }

    pub(super) fn failed(&mut self, now: Instant) -> Verdict {
        match &mut self.run {
            None => {
                self.run = Some((now, now));
                Verdict::Warn { quiet: 0 }
            }
            Some((_, warned)) if now.duration_since(*warned) >= self.every => {
                *warned = now;
                Verdict::Warn {
                    quiet: std::mem::take(&mut self.quiet),
                }
            }
            Some(_) => {
                self.quiet += 1;
                Verdict::Quiet
            }
        }
    }

    /// A renewal worked: how long the run of failures lasted, if there was one.
    pub(super) fn recovered(&mut self, now: Instant) -> Option<Duration> {
        self.quiet = 0;
        self.run.take().map(|(start, _)| now.duration_since(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_interval_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(300));
        let got: Vec<u64> = (0..6).map(|_| b.pause().as_millis() as u64).collect();
        assert_eq!(got, [20, 40, 80, 160, 300, 300]);
        b.reset();
        assert_eq!(b.pause(), Duration::from_millis(20));
        // An interval below the first pause caps it.
        assert_eq!(
            Backoff::new(Duration::from_millis(5)).pause(),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn a_run_of_failures_warns_once_per_period_with_the_quiet_count() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut log = FailureLog::new(Duration::from_secs(10));
        assert_eq!(log.failed(ms(0)), Verdict::Warn { quiet: 0 });
        for n in 1..=50 {
            assert_eq!(log.failed(ms(n * 100)), Verdict::Quiet);
        }
        assert_eq!(log.failed(ms(10_000)), Verdict::Warn { quiet: 50 });
        assert_eq!(log.failed(ms(10_100)), Verdict::Quiet);
        assert_eq!(log.recovered(ms(12_000)), Some(Duration::from_secs(12)));
        assert_eq!(log.recovered(ms(13_000)), None);
        // A new run warns at once again.
        assert_eq!(log.failed(ms(13_100)), Verdict::Warn { quiet: 0 });
    }
}
