//! A condition that lasts until someone changes the cluster (a CRD that is
//! not installed) is logged in full the first time, then repeated at a low
//! rate: the log neither floods (one line per retry) nor loses it (one line
//! at start-up, rotated away by the time someone looks).

use std::time::{Duration, Instant};

/// How often a lasting condition is logged again.
pub const REMINDER_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct Reminder {
    said_at: Option<Instant>,
}

impl Reminder {
    /// Whether to log the condition at `now`: the first time, then once per
    /// [`REMINDER_INTERVAL`].
    pub fn due(&mut self, now: Instant) -> bool {
        let due = self
            .said_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REMINDER_INTERVAL);
        if due {
            self.said_at = Some(now);
        }
        due
    }

    /// The condition is over: a new occurrence is logged at once.
    pub fn clear(&mut self) {
        self.said_at = None;
    }

    /// Whether the condition was logged since the last [`Reminder::clear`].
    pub fn said(&self) -> bool {
        self.said_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn said_first_then_once_per_interval() {
        let start = Instant::now();
        let mut reminder = Reminder::default();
        // Retries every 10 s for 25 minutes: said at 0, 10 and 20 minutes.
        let said: Vec<u64> = (0..150)
            .map(|i| start + Duration::from_secs(10 * i))
            .filter(|&at| reminder.due(at))
            .map(|at| at.duration_since(start).as_secs())
            .collect();
        assert_eq!(said, [0, 600, 1200]);
    }

    #[test]
    fn a_new_occurrence_after_clear_is_said_at_once() {
        let start = Instant::now();
        let mut reminder = Reminder::default();
        assert!(reminder.due(start));
        assert!(!reminder.due(start + Duration::from_secs(10)));
        reminder.clear();
        assert!(!reminder.said());
        assert!(reminder.due(start + Duration::from_secs(20)));
    }
}
