//! The interceptor's cost per request, against raw pasetors measured in the same run:
//! - `pasetors_verify`: `public::verify` with the same claim rules (the baseline),
//! - `fresh_verify`: our verifier on a token it has not seen (kid lookup, footer parse,
//!   signature, claims, Principal),
//! - `cached_check`: the interceptor's path for a token verified before,
//! - `cached_admit`: the same plus the revocation checks (feed freshness, then the token's
//!   session looked up in a set holding 10,000 revocations).
//!
//! Run: `cargo bench -p data-service --bench token_check`

use std::{hint::black_box, sync::Arc, time::Duration};

use common::tokens::{TokenVerifier, VerifyingKeys, key_id};
use criterion::{Criterion, criterion_group, criterion_main};
use data_service::{
    interceptor::AuthInterceptor,
    keys::{KeyStore, KeyStoreConfig},
    revocations::{Revocations, RevocationsConfig},
};
use pasetors::{
    Public,
    claims::ClaimsValidationRules,
    keys::{AsymmetricKeyPair, Generate},
    public,
    token::UntrustedToken,
    version4::{PublicToken, V4},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

fn token(pair: &AsymmetricKeyPair<V4>, jti: usize) -> String {
    let now = OffsetDateTime::now_utc();
    let at = |t: OffsetDateTime| t.format(&Rfc3339).unwrap();
    let claims = serde_json::json!({
        "iss": "dynagate-auth", "aud": "dynagate", "sub": "6f1c2a7e-9b1d-4c3e-8f00-0123456789ab",
        "sid": "0d4f7f0e-1111-4c3e-8f00-0123456789ab", "jti": format!("token-{jti}"),
        "iat": at(now), "nbf": at(now), "exp": at(now + time::Duration::hours(1)),
    });
    let footer = format!(r#"{{"kid":"{}"}}"#, key_id(&pair.public));
    PublicToken::sign(
        &pair.secret,
        claims.to_string().as_bytes(),
        Some(footer.as_bytes()),
        None,
    )
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
    let mut keys = VerifyingKeys::default();
    keys.insert(pair.public.clone());
    let endpoint = tonic::transport::Endpoint::from_static("http://127.0.0.1:9");
    let channel = data_service::auth_channel::AuthChannel::new(
        &[("http://127.0.0.1:9".to_owned(), endpoint)],
        Duration::from_secs(1),
    );
    let config = KeyStoreConfig {
        token_cache_capacity: 100_000,
        timeout: Duration::from_secs(1),
        min_on_demand_interval: Duration::from_secs(1),
        withdrawal_grace: Duration::from_secs(90),
    };
    let store = KeyStore::new(&channel, config, Arc::default());
    store.install(keys.clone());
    let verifier = TokenVerifier::new("dynagate-auth", "dynagate");
    let interceptor = AuthInterceptor::new(
        verifier.clone(),
        store.clone(),
        Revocations::off(),
        Arc::default(),
    );
    let revocations = Revocations::new(
        RevocationsConfig {
            max_staleness: Duration::from_secs(86_400),
            index_capacity: 100_000,
        },
        Arc::new(common::clock::SystemClock),
    );
    let not_after = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    for i in 0..10_000 {
        revocations.revoke("user", &format!("revoked-{i}"), not_after);
    }
    revocations.freshness().heard(std::time::Duration::ZERO);
    let watched = AuthInterceptor::new(verifier.clone(), store, revocations, Arc::default());
    let cached = token(&pair, 0);
    interceptor.authenticate(&cached).unwrap();
    watched.admit(&cached).unwrap();
    let fresh: Vec<String> = (1..=2000).map(|i| token(&pair, i)).collect();

    let mut rules = ClaimsValidationRules::new();
    rules.validate_issuer_with("dynagate-auth");
    rules.validate_audience_with("dynagate");
    let mut group = c.benchmark_group("token_check");
    let mut i = 0;
    group.bench_function("pasetors_verify", |b| {
        b.iter(|| {
            i = (i + 1) % fresh.len();
            let untrusted = UntrustedToken::<Public, V4>::try_from(fresh[i].as_str()).unwrap();
            black_box(public::verify(&pair.public, &untrusted, &rules, None, None).unwrap());
        })
    });
    group.bench_function("fresh_verify", |b| {
        b.iter(|| {
            i = (i + 1) % fresh.len();
            black_box(verifier.verify(&keys, &fresh[i]).unwrap());
        })
    });
    group.bench_function("cached_check", |b| {
        b.iter(|| black_box(interceptor.authenticate(black_box(&cached)).unwrap()))
    });
    group.bench_function("cached_admit", |b| {
        b.iter(|| black_box(watched.admit(black_box(&cached)).unwrap()))
    });
    group.finish();
}

criterion_group!(token_check, benches);
criterion_main!(token_check);
