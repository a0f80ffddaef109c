//! A `google.protobuf.Timestamp` read as a point in time, the one way both services read
//! them (the other way is [`crate::proto::timestamp`]).

use prost_types::Timestamp;
use time::OffsetDateTime;

/// The point in time `at` names; `None` for one no date can hold, or whose `nanos` lie
/// outside `0..1_000_000_000` (not a valid protobuf timestamp).
pub fn to_time(at: &Timestamp) -> Option<OffsetDateTime> {
    if !(0..1_000_000_000).contains(&at.nanos) {
        return None;
    }
    let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proto::timestamp;

    #[test]
    fn timestamps_no_date_can_hold_are_refused() {
        let far = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(to_time(&far), None);
        let negative_nanos = Timestamp {
            seconds: 1_700_000_000,
            nanos: -1,
        };
        assert_eq!(to_time(&negative_nanos), None);
        let too_many_nanos = Timestamp {
            seconds: 1_700_000_000,
            nanos: 1_000_000_000,
        };
        assert_eq!(to_time(&too_many_nanos), None);
    }

    proptest! {
        #[test]
        fn a_point_in_time_round_trips(nanos in -10i128.pow(18)..10i128.pow(18)) {
            let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            prop_assert_eq!(to_time(&timestamp(at)), Some(at));
        }
    }
}
