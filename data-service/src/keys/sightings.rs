//! Which signing keys to trust when several auth-service replicas publish them. During a
//! rotation the replicas' listings differ for a while (one has loaded the changed keys file,
//! another not yet), and a replica may miss a refresh. So a key is trusted while **any**
//! replica has listed it within the withdrawal grace, and withdrawn only when none has for
//! longer: a lagging or unreachable replica can neither hide a new key nor wipe the token
//! cache by leaving one out.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use common::tokens::VerifyingKeys;
use pasetors::{keys::AsymmetricPublicKey, version4::V4};

/// When each published key was last listed by some replica.
#[derive(Debug)]
pub struct Sightings {
    grace: Duration,
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    key: AsymmetricPublicKey<V4>,
    last: Instant,
}

impl Sightings {
    /// No key seen yet; a key stays trusted `grace` after the last listing that had it.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            seen: HashMap::new(),
        }
    }

    /// One replica's listing, received at `now`.
    pub fn record(&mut self, listed: &VerifyingKeys, now: Instant) {
        for kid in listed.kids() {
            let Some(key) = listed.get(kid) else { continue };
            let seen = self.seen.entry(kid.to_owned()).or_insert_with(|| Seen {
                key: key.clone(),
                last: now,
            });
            seen.last = seen.last.max(now);
        }
    }

    /// The keys to trust at `now`: every key some replica listed within the grace. The others
    /// are forgotten (withdrawn).
    pub fn trusted(&mut self, now: Instant) -> VerifyingKeys {
        let grace = self.grace;
        self.seen
            .retain(|_, seen| now.saturating_duration_since(seen.last) <= grace);
        let mut keys = VerifyingKeys::default();
        for seen in self.seen.values() {
            keys.insert(seen.key.clone());
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pasetors::keys::{AsymmetricKeyPair, Generate};

    fn listing(keys: &[&AsymmetricPublicKey<V4>]) -> VerifyingKeys {
        let mut listed = VerifyingKeys::default();
        for key in keys {
            listed.insert((*key).clone());
        }
        listed
    }

    fn key() -> AsymmetricPublicKey<V4> {
        AsymmetricKeyPair::<V4>::generate().unwrap().public
    }

    fn kids(keys: &VerifyingKeys) -> Vec<String> {
        let mut kids: Vec<String> = keys.kids().map(str::to_owned).collect();
        kids.sort();
        kids
    }

    const GRACE: Duration = Duration::from_secs(90);

    #[test]
    fn a_key_one_replica_lists_is_trusted_though_another_leaves_it_out() {
        let (old, new) = (key(), key());
        let mut sightings = Sightings::new(GRACE);
        let t0 = Instant::now();
        sightings.record(&listing(&[&old, &new]), t0);
        // The lagging replica has not loaded the new key; its listing hides nothing.
        sightings.record(&listing(&[&old]), t0 + Duration::from_secs(1));
        let trusted = sightings.trusted(t0 + Duration::from_secs(1));
        assert_eq!(kids(&trusted), kids(&listing(&[&old, &new])));
    }

    #[test]
    fn a_key_no_replica_lists_is_withdrawn_only_after_the_grace() {
        let (old, new) = (key(), key());
        let mut sightings = Sightings::new(GRACE);
        let t0 = Instant::now();
        sightings.record(&listing(&[&old, &new]), t0);
        let later = |secs| t0 + Duration::from_secs(secs);
        for at in [30, 60, 90] {
            sightings.record(&listing(&[&new]), later(at));
            let trusted = sightings.trusted(later(at));
            assert!(
                trusted.get(&common::tokens::key_id(&old)).is_some(),
                "{at} s"
            );
        }
        sightings.record(&listing(&[&new]), later(91));
        let trusted = sightings.trusted(later(91));
        assert_eq!(
            kids(&trusted),
            kids(&listing(&[&new])),
            "withdrawn after 90 s"
        );
    }

    #[test]
    fn one_listing_within_the_grace_keeps_a_key_and_time_without_listings_withdraws_it() {
        let key = key();
        let mut sightings = Sightings::new(GRACE);
        let t0 = Instant::now();
        sightings.record(&listing(&[&key]), t0);
        sightings.record(&listing(&[&key]), t0 + Duration::from_secs(80));
        assert_eq!(sightings.trusted(t0 + Duration::from_secs(170)).len(), 1);
        // Every replica unreachable: no listing at all for longer than the grace.
        assert!(sightings.trusted(t0 + Duration::from_secs(171)).is_empty());
    }

    #[test]
    fn an_out_of_order_listing_does_not_move_a_sighting_back() {
        let key = key();
        let mut sightings = Sightings::new(GRACE);
        let t0 = Instant::now();
        sightings.record(&listing(&[&key]), t0 + Duration::from_secs(50));
        sightings.record(&listing(&[&key]), t0);
        assert_eq!(sightings.trusted(t0 + Duration::from_secs(140)).len(), 1);
    }
}
