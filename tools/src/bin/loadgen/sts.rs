//! STS calls for first requests: U new users each send C GetItem calls at once to a
//! data-service that has never seen them, and moto's own records say how many AssumeRole
//! calls that made (DESIGN: one per user per credential lifetime).

use std::{collections::HashSet, sync::Arc};

use anyhow::Context;
use common::proto::{
    auth::v1::auth_service_client::AuthServiceClient,
    data::v1::{GetItemRequest, data_service_client::DataServiceClient},
};
use tests::auth::{TestUser, with_bearer};
use tokio::{sync::Barrier, task::JoinSet};
use tonic::{Code, transport::Channel};

use crate::report::{Row, row, times};

/// The row: AssumeRole calls against one per user.
pub async fn first_requests(
    auth: Channel,
    data: Channel,
    moto: &str,
    users: usize,
    concurrent: usize,
) -> anyhow::Result<Row> {
    let mut auth = AuthServiceClient::new(auth);
    let mut signed_in = Vec::new();
    for _ in 0..users {
        let user = TestUser::register(&mut auth).await;
        let token = user.login(&mut auth).await.access_token;
        signed_in.push((format!("dynagate-{}", user.user_id), token));
    }
    let names: HashSet<String> = signed_in.iter().map(|(name, _)| name.clone()).collect();
    let before = assume_roles(moto, names.clone()).await?;

    let start = Arc::new(Barrier::new(users * concurrent));
    let mut calls = JoinSet::new();
    for (_, token) in &signed_in {
        for _ in 0..concurrent {
            let (start, token) = (Arc::clone(&start), token.clone());
            let mut client = DataServiceClient::new(data.clone());
            calls.spawn(async move {
                let request = with_bearer(
                    GetItemRequest {
                        key: "never-written".to_owned(),
                        ..Default::default()
                    },
                    &token,
                );
                start.wait().await;
                match client.get_item(request).await {
                    Ok(_) => Code::Ok,
                    Err(status) => status.code(),
                }
            });
        }
    }
    let mut unexpected = 0;
    while let Some(code) = calls.join_next().await {
        if !matches!(code, Ok(Code::NotFound)) {
            unexpected += 1;
        }
    }
    let made = assume_roles(moto, names).await? - before;
    let answered = if unexpected == 0 {
        format!("all {} answered NOT_FOUND", users * concurrent)
    } else {
        format!("**{unexpected} of {} calls failed**", users * concurrent)
    };
    Ok(row(
        format!("STS AssumeRole calls, {users} users × {concurrent} concurrent first GetItem"),
        format!("{users} (one per user)"),
        format!("**{made}** (moto's /moto-api/data.json); {answered}"),
        times(made as f64 / users.max(1) as f64),
        "exactly one per user",
    ))
}

/// AssumeRole calls moto recorded for these RoleSessionNames.
async fn assume_roles(moto: &str, names: HashSet<String>) -> anyhow::Result<usize> {
    let moto = moto.to_owned();
    tokio::task::spawn_blocking(move || {
        tests::moto::assumed_roles(&moto)
            .iter()
            .filter(|role| {
                role["session_name"]
                    .as_str()
                    .is_some_and(|name| names.contains(name))
            })
            .count()
    })
    .await
    .context("reading moto's records")
}
