//! When a failed delivery is tried again, and when it is given up.

use std::time::Duration;

use eddy_service::config::parse_duration;

/// Svix's default schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_SCHEDULE: &str = "0s,5s,5m,30m,2h,5h,10h,10h";

/// The retry schedule: the wait before each attempt (the first is normally 0), randomised by
/// ±`jitter` so that a receiver coming back is not hit by every retry at once.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
    /// Fraction of each delay added or taken at random (0.2: ±20 %).
    pub jitter: f64,
    /// How long after its creation (or its redelivery request) an event may still be retried,
    /// for subscriptions that do not say.
    pub default_max_age: Duration,
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// Attempts or age ran out: dead-letter the event.
    GiveUp,
}

/// Parses `0s,5s,5m,…` (at least one delay).
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let delays = text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() {
        return Err("a retry schedule needs at least one delay, e.g. 0s,5s,5m".to_owned());
    }
    Ok(delays)
}

impl RetrySchedule {
    /// The attempts an event gets in one round: the subscription's `max_attempts`, else the
    /// schedule's length.
    pub fn max_attempts(&self, subscription_max: Option<i32>) -> u32 {
        subscription_max
            .and_then(|max| u32::try_from(max).ok())
            .filter(|max| *max > 0)
            .unwrap_or(self.delays.len() as u32)
    }

    /// After attempt `attempt` (1-based, within the round) failed at `now`: when to try again,
    /// or give up when the attempts are used or the next one would come after
    /// `round_started_at + max_age`. `random` is uniform in [0, 1) (the jitter's draw).
    pub fn after_failure(
        &self,
        attempt: u32,
        max_attempts: u32,
        max_age: Duration,
        round_started_at: i64,
        now: i64,
        random: f64,
    ) -> AfterFailure {
        if attempt >= max_attempts {
            return AfterFailure::GiveUp;
        }
        let index = (attempt as usize).min(self.delays.len() - 1);
        let delay = self.delays[index].as_millis() as f64;
        let factor = 1.0 + self.jitter * (2.0 * random - 1.0);
        let next = now + (delay * factor).round() as i64;
        let deadline = round_started_at.saturating_add(max_age.as_millis() as i64);
        if next > deadline {
            AfterFailure::GiveUp
        } else {
            AfterFailure::RetryAt(next)
        }
    }
}

/// A uniform draw in [0, 1) for the jitter.
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        RetrySchedule {
            delays: parse_schedule(DEFAULT_SCHEDULE).expect("parses"),
            jitter: 0.2,
            default_max_age: Duration::from_secs(3 * 24 * 3600),
        }
    }

    #[test]
    fn the_default_schedule_is_svix_and_backs_off_to_hours() {
        let schedule = schedule();
        assert_eq!(schedule.delays.len(), 8);
        assert_eq!(schedule.max_attempts(None), 8);
        assert_eq!(schedule.max_attempts(Some(3)), 3);
        let max_age = schedule.default_max_age;
        // Without jitter (random 0.5): attempt 1 failed → 5 s, attempt 3 failed → 30 min.
        assert_eq!(
            schedule.after_failure(1, 8, max_age, 0, 1_000, 0.5),
            AfterFailure::RetryAt(6_000)
        );
        assert_eq!(
            schedule.after_failure(3, 8, max_age, 0, 0, 0.5),
            AfterFailure::RetryAt(30 * 60 * 1000)
        );
        assert_eq!(
            schedule.after_failure(8, 8, max_age, 0, 0, 0.5),
            AfterFailure::GiveUp
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let schedule = schedule();
        let low = schedule.after_failure(1, 8, schedule.default_max_age, 0, 0, 0.0);
        let high = schedule.after_failure(1, 8, schedule.default_max_age, 0, 0, 0.999_999);
        assert_eq!(low, AfterFailure::RetryAt(4_000));
        assert!(matches!(high, AfterFailure::RetryAt(at) if (5_999..=6_000).contains(&at)));
        let draw = random_unit();
        assert!((0.0..1.0).contains(&draw));
    }

    #[test]
    fn an_event_is_given_up_when_the_next_attempt_would_come_after_its_max_age() {
        let schedule = schedule();
        let max_age = Duration::from_secs(60);
        assert_eq!(
            schedule.after_failure(2, 8, max_age, 0, 10_000, 0.5),
            AfterFailure::GiveUp,
            "5 min after 10 s is past a 60 s maximum age"
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(parse_schedule("").is_err());
        assert!(parse_schedule("5s,soon").is_err());
        assert_eq!(
            parse_schedule("0s, 100ms").expect("parses"),
            vec![Duration::ZERO, Duration::from_millis(100)]
        );
    }
}
