//! Sans-IO: when `encryption.wireguard.rotate_every` wants the next rotation. The key's age is
//! the key file's mtime (the file is replaced on every rotation, never edited), so a restarted
//! meshd neither resets the schedule nor rotates twice.

use std::time::{Duration, SystemTime};

/// After a failed scheduled rotation, the next attempt waits this long (no retry storm).
pub const RETRY: Duration = Duration::from_secs(60);

/// An mtime this far in the future means the clock went back: the age is unknown.
pub const FUTURE_SLACK: Duration = Duration::from_secs(60);

/// What the schedule says at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// No schedule configured.
    Off,
    /// Not yet: the next rotation in this long.
    In(Duration),
    /// Rotate now.
    Now,
}

/// `written`: the key file's mtime (`None`: unreadable); `failed`: the last failed scheduled
/// attempt. A key older than `every` is due; so is one whose mtime is more than
/// [`FUTURE_SLACK`] ahead (rotating rewrites the mtime, which ends the confusion).
pub fn decide(
    every: Option<Duration>,
    written: Option<SystemTime>,
    failed: Option<SystemTime>,
    now: SystemTime,
) -> Due {
    let Some(every) = every else {
        return Due::Off;
    };
    if let Some(f) = failed {
        let since = now.duration_since(f).unwrap_or_default();
        if since < RETRY {
            return Due::In(RETRY - since);
        }
    }
    let Some(written) = written else {
        return Due::Now;
    };
    match now.duration_since(written) {
        Ok(age) if age >= every => Due::Now,
        Ok(age) => Due::In(every - age),
        Err(e) if e.duration() > FUTURE_SLACK => Due::Now,
        Err(_) => Due::In(every),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn off_without_a_schedule() {
        assert_eq!(decide(None, Some(t(0)), None, t(10 * 86_400)), Due::Off);
    }

    #[test]
    fn due_once_the_key_is_old_enough() {
        assert_eq!(decide(Some(DAY), Some(t(0)), None, t(0)), Due::In(DAY));
        assert_eq!(
            decide(Some(DAY), Some(t(0)), None, t(86_399)),
            Due::In(Duration::from_secs(1))
        );
        assert_eq!(decide(Some(DAY), Some(t(0)), None, t(86_400)), Due::Now);
        assert_eq!(decide(Some(DAY), Some(t(0)), None, t(999_999)), Due::Now);
    }

    /// A restart is just another call with the same mtime: an hour into a day's key, a
    /// restarted meshd waits the remaining 23 h (no reset), and right after a rotation (new
    /// mtime) it waits a whole period (no second rotation).
    #[test]
    fn restarts_neither_reset_nor_repeat() {
        let every = Some(DAY);
        assert_eq!(
            decide(every, Some(t(0)), None, t(3600)),
            Due::In(DAY - Duration::from_secs(3600))
        );
        // Rotated at t(86_400): the file's mtime is now that; a restart 2 s later.
        assert_eq!(
            decide(every, Some(t(86_400)), None, t(86_402)),
            Due::In(DAY - Duration::from_secs(2))
        );
        // Down for two periods: one rotation at start, not two.
        assert_eq!(decide(every, Some(t(0)), None, t(3 * 86_400)), Due::Now);
        assert_eq!(
            decide(every, Some(t(3 * 86_400)), None, t(3 * 86_400 + 1)),
            Due::In(DAY - Duration::from_secs(1))
        );
    }

    #[test]
    fn a_failure_is_retried_after_a_minute() {
        let every = Some(Duration::from_secs(10));
        assert_eq!(
            decide(every, Some(t(0)), Some(t(100)), t(130)),
            Due::In(Duration::from_secs(30))
        );
        assert_eq!(decide(every, Some(t(0)), Some(t(100)), t(160)), Due::Now);
    }

    #[test]
    fn clock_going_back_or_no_mtime() {
        let every = Some(DAY);
        // mtime slightly ahead (coarse clocks): wait a whole period.
        assert_eq!(decide(every, Some(t(10)), None, t(0)), Due::In(DAY));
        // Far ahead: the age is unknown, rotate (which rewrites the mtime).
        assert_eq!(decide(every, Some(t(3600)), None, t(0)), Due::Now);
        assert_eq!(decide(every, None, None, t(0)), Due::Now);
    }
}
