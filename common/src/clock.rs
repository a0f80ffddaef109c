//! Time as the services store it: Unix seconds and milliseconds of the one wall clock, with
//! saturating and checked conversions so no stored or hostile value can overflow.

use time::OffsetDateTime;

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> i64 {
    unix_millis(OffsetDateTime::now_utc())
}

/// `t` in Unix milliseconds (saturating far outside any date we store).
pub fn unix_millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(if t.year() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The point in time `millis` Unix milliseconds name, if `time` can represent it.
pub fn from_unix_millis(millis: i64) -> Option<OffsetDateTime> {
    let nanos = i128::from(millis).checked_mul(1_000_000)?;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let t = t + time::Duration::milliseconds(123);
        assert_eq!(unix_millis(t), 1_700_000_000_123);
        assert_eq!(from_unix_millis(1_700_000_000_123), Some(t));
    }

    #[test]
    fn values_no_date_can_hold_are_refused_not_overflowed() {
        assert_eq!(from_unix_millis(i64::MAX), None);
        assert_eq!(from_unix_millis(i64::MIN), None);
    }
}
