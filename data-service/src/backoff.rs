//! The one retry delay of the data-service: its background tasks (the revocation watchers'
//! reconnects, the signing-key refresher's retries) and BatchGetItems' unprocessed keys;
//! exponential with jitter.

use std::time::Duration;

/// Exponential backoff with jitter: each delay is drawn from the upper half of a window that
/// doubles up to the maximum, so replicas that lost the same auth-service do not retry in
/// step.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    window: Duration,
}

impl Backoff {
    /// Starting at `first`, never beyond `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.min(max);
        Self {
            first,
            max,
            window: first,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let window = self.window;
        self.window = (window * 2).min(self.max);
        window / 2 + window.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// Starts over after an attempt that worked.
    pub fn reset(&mut self) {
        self.window = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum_and_starts_over() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut backoff = Backoff::new(first, max);
        let mut window = first;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(
                delay >= window / 2 && delay <= window,
                "{delay:?} in {window:?}"
            );
            window = (window * 2).min(max);
        }
        assert_eq!(window, max);
        backoff.reset();
        assert!(backoff.next_delay() <= first);
    }

    #[test]
    fn a_first_delay_past_the_maximum_is_the_maximum() {
        let max = Duration::from_millis(500);
        let mut backoff = Backoff::new(Duration::from_secs(1), max);
        assert!(backoff.next_delay() <= max);
    }
}
