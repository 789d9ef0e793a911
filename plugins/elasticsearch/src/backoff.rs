//! How long to wait before retrying a request the cluster refused with 429
//! (too many requests): exponential, capped, bounded in number.

use std::time::Duration;

/// Retries after the first attempt.
pub const MAX_RETRIES: u32 = 8;
const FIRST: Duration = Duration::from_millis(250);
const CAP: Duration = Duration::from_secs(30);

/// The wait before retry number `retry` (0-based), or None when the
/// attempts are used up.
pub fn delay(retry: u32) -> Option<Duration> {
    if retry >= MAX_RETRIES {
        return None;
    }
    Some(FIRST.saturating_mul(1u32 << retry.min(16)).min(CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_then_stops() {
        let all: Vec<_> = (0..).map_while(delay).map(|d| d.as_millis()).collect();
        assert_eq!(all, [250, 500, 1000, 2000, 4000, 8000, 16000, 30000]);
        assert_eq!(delay(MAX_RETRIES), None);
        assert_eq!(delay(u32::MAX), None);
    }
}
