//! Deadlines: how long a request may still take, from the caller's `grpc-timeout` and our
//! own cap, so outbound calls give up in time to report UNAVAILABLE instead of the client
//! seeing only DEADLINE_EXCEEDED.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// Time kept back from the caller's deadline to build and send our error response.
const RESPONSE_MARGIN: Duration = Duration::from_millis(20);

/// The time budget for the work of one request: the caller's deadline minus a small margin,
/// never more than `cap`.
pub fn budget(metadata: &MetadataMap, cap: Duration) -> Duration {
    match metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(timeout) => timeout.saturating_sub(RESPONSE_MARGIN).min(cap),
        None => cap,
    }
}

/// Parses a `grpc-timeout` header value: at most 8 digits and a unit (H, M, S, m, u, n),
/// as the gRPC over HTTP/2 spec defines it.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount * 3600),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "S", "123", "123456789S", "12x", "-1S", "1.5S", "1é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn budget_is_the_smaller_of_deadline_and_cap() {
        let mut metadata = MetadataMap::new();
        assert_eq!(
            budget(&metadata, Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        metadata.insert("grpc-timeout", "500m".parse().unwrap());
        assert_eq!(
            budget(&metadata, Duration::from_secs(3)),
            Duration::from_millis(480)
        );
        assert_eq!(
            budget(&metadata, Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }
}
