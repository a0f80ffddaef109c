//! The credential-vending settings checked together: role and table, and a lifetime STS
//! accepts with the refresh margin inside it.

use std::time::Duration;

use anyhow::bail;

use super::Settings;
use crate::{credentials::VendingConfig, policy::TableArn};

/// Credential lifetimes STS accepts: 15 minutes to 12 hours.
const STS_DURATION_SECS: std::ops::RangeInclusive<u64> = 900..=43_200;
/// The one-hour cap STS puts on role-chained sessions, our default maximum.
const CHAINED_MAX_SECS: u64 = 3600;

impl Settings {
    /// The credential-vending configuration, checked here because STS emulators accept
    /// anything: `None` when vending is not configured.
    pub fn vending(&self) -> anyhow::Result<Option<VendingConfig>> {
        let (role_arn, table_arn) = match (&self.credentials_role_arn, &self.items_table_arn) {
            (None, None) => return Ok(None),
            (Some(role), Some(table)) => (role, table),
            _ => bail!("--credentials-role-arn and --items-table-arn go together"),
        };
        let role_ok = role_arn.starts_with("arn:")
            && role_arn.contains(":iam::")
            && role_arn.contains(":role/");
        if !role_ok {
            bail!("--credentials-role-arn {role_arn:?} is not an IAM role ARN");
        }
        let table =
            TableArn::parse(table_arn).map_err(|e| anyhow::anyhow!("--items-table-arn: {e}"))?;
        let max = if self.allow_long_credentials {
            *STS_DURATION_SECS.end()
        } else {
            CHAINED_MAX_SECS
        };
        let duration = self.credentials_duration_secs;
        if !(*STS_DURATION_SECS.start()..=max).contains(&duration) {
            bail!(
                "--credentials-duration-secs {duration} is outside {}..={max}{}",
                STS_DURATION_SECS.start(),
                if self.allow_long_credentials {
                    ""
                } else {
                    " (see --allow-long-credentials)"
                }
            );
        }
        let margin = self.credentials_refresh_margin_secs;
        if margin >= duration {
            bail!(
                "--credentials-refresh-margin-secs {margin} must be below the duration {duration}"
            );
        }
        Ok(Some(VendingConfig {
            role_arn: role_arn.clone(),
            table,
            duration: Duration::from_secs(duration),
            refresh_margin: Duration::from_secs(margin),
            cache_capacity: self.credentials_cache_capacity,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_vending(duration: u64, margin: u64, long: bool) -> Settings {
        let mut settings = Settings::defaults();
        settings.credentials_role_arn = Some("arn:aws:iam::123456789012:role/dynagate-data".into());
        settings.items_table_arn =
            Some("arn:aws:dynamodb:us-east-1:123456789012:table/dynagate-items".into());
        settings.credentials_duration_secs = duration;
        settings.credentials_refresh_margin_secs = margin;
        settings.allow_long_credentials = long;
        settings
    }

    #[test]
    fn credential_durations_are_limited_to_an_hour_unless_allowed() {
        assert!(with_vending(900, 300, false).vending().unwrap().is_some());
        assert!(with_vending(3600, 300, false).vending().unwrap().is_some());
        assert!(with_vending(899, 300, false).vending().is_err());
        assert!(with_vending(3601, 300, false).vending().is_err());
        assert!(with_vending(43_200, 300, true).vending().unwrap().is_some());
        assert!(with_vending(43_201, 300, true).vending().is_err());
        assert!(with_vending(899, 300, true).vending().is_err());
    }

    #[test]
    fn credentials_last_an_access_tokens_lifetime_by_default() {
        let overridden = [
            "DYNAGATE_CREDENTIALS_DURATION_SECS",
            "DYNAGATE_CREDENTIALS_REFRESH_MARGIN_SECS",
            "DYNAGATE_ACCESS_TOKEN_TTL_SECS",
        ]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
        if overridden {
            return;
        }
        let defaults = Settings::defaults();
        assert_eq!(defaults.credentials_duration_secs, 900);
        assert_eq!(
            defaults.credentials_duration_secs,
            defaults.access_token_ttl_secs
        );
        let mut settings = with_vending(900, 300, false);
        settings.credentials_duration_secs = defaults.credentials_duration_secs;
        settings.credentials_refresh_margin_secs = defaults.credentials_refresh_margin_secs;
        assert!(
            settings.vending().unwrap().is_some(),
            "the defaults validate"
        );
    }

    #[test]
    fn the_margin_must_leave_some_lifetime() {
        assert!(with_vending(900, 900, false).vending().is_err());
        assert!(with_vending(900, 899, false).vending().is_ok());
    }

    #[test]
    fn vending_needs_a_role_and_a_table_or_neither() {
        let mut settings = with_vending(3600, 300, false);
        settings.items_table_arn = None;
        assert!(settings.vending().is_err());
        settings.credentials_role_arn = None;
        assert!(settings.vending().unwrap().is_none());
        let mut bad_role = with_vending(3600, 300, false);
        bad_role.credentials_role_arn = Some("dynagate-data".into());
        assert!(bad_role.vending().is_err());
    }
}
