//! The gRPC handlers: take the caller from the request extensions (never from the body),
//! validate, run the store operation with the caller's own client within the deadline, and
//! translate the result.

use std::{sync::Arc, time::Duration};

use common::{
    deadline,
    proto::data::v1::{
        BatchGetItemsRequest, BatchGetItemsResponse, BatchWriteItemsRequest,
        BatchWriteItemsResponse, DeleteItemRequest, DeleteItemResponse, ExportItemsRequest,
        GetItemRequest, GetItemResponse, PutItemRequest, PutItemResponse, QueryItemsRequest,
        QueryItemsResponse, TransactWriteItemsRequest, TransactWriteItemsResponse,
        UpdateItemRequest, UpdateItemResponse, data_service_server::DataService,
    },
    tokens::{Principal, TokenError},
};
use tonic::{Request, Response, Status};

use crate::{
    credentials::{BearerToken, UserClients},
    error::DataError,
    export::{self, ExportStream, Exports},
    page_token::PageTokens,
    requests,
    revocations::Revocations,
    store::{ItemStore, StoredItem, UserDb},
};

/// The `dynagate.data.v1.DataService` implementation.
#[derive(Clone, Debug)]
pub struct DataApi {
    store: ItemStore,
    clients: UserClients,
    pages: Arc<PageTokens>,
    request_timeout: Duration,
    exports: Exports,
}

/// Who is calling, with what, and how long we have.
struct Caller {
    principal: Arc<Principal>,
    token: BearerToken,
    budget: Duration,
}

impl DataApi {
    /// The API over `store`, acting through each caller's client from `clients`; exports end
    /// when `revocations` ends their session.
    pub fn new(
        store: ItemStore,
        clients: UserClients,
        pages: Arc<PageTokens>,
        request_timeout: Duration,
        revocations: Revocations,
    ) -> Self {
        let exports = Exports::new(store.clone(), clients.clone(), revocations, request_timeout);
        Self {
            exports,
            store,
            clients,
            pages,
            request_timeout,
        }
    }

    /// Splits a request into the caller the interceptor attached (its absence fails closed)
    /// and the message.
    fn accept<T>(&self, request: Request<T>) -> Result<(Caller, T), DataError> {
        let (metadata, mut extensions, message) = request.into_parts();
        let principal = extensions.remove::<Arc<Principal>>();
        let token = extensions.remove::<BearerToken>();
        let (Some(principal), Some(token)) = (principal, token) else {
            return Err(DataError::Unauthenticated(TokenError::Missing));
        };
        let caller = Caller {
            principal,
            token,
            budget: deadline::budget(&metadata, self.request_timeout),
        };
        Ok((caller, message))
    }

    /// Runs `operation` with the caller's DynamoDB client, all within the caller's budget.
    async fn run<T>(
        &self,
        caller: &Caller,
        operation: impl AsyncFnOnce(&UserDb, &str) -> Result<T, DataError>,
    ) -> Result<T, DataError> {
        let owner = caller.principal.user_id.as_str();
        let work = async {
            let client = self
                .clients
                .client_for(&caller.principal, &caller.token)
                .await?;
            operation(&client.dynamodb, owner).await
        };
        let result = tokio::time::timeout(caller.budget, work)
            .await
            .unwrap_or_else(|_| {
                Err(DataError::Unavailable(format!(
                    "no answer within {:?}",
                    caller.budget
                )))
            });
        if let Err(DataError::CredentialsExpired(_)) = &result {
            self.clients.forget(owner).await;
        }
        result
    }
}

#[tonic::async_trait]
impl DataService for DataApi {
    async fn put_item(
        &self,
        request: Request<PutItemRequest>,
    ) -> Result<Response<PutItemResponse>, Status> {
        let (caller, request) = self.accept(request)?;
        let put = requests::put(&request)?;
        let item = self
            .run(&caller, async |db, owner| {
                self.store.put(db, owner, put).await
            })
            .await?;
        Ok(Response::new(PutItemResponse {
            item: Some(item.into_proto()),
        }))
    }

    async fn get_item(
        &self,
        request: Request<GetItemRequest>,
    ) -> Result<Response<GetItemResponse>, Status> {
        let (caller, request) = self.accept(request)?;
        requests::key(&request.key)?;
        let projection = requests::attributes_to_get(&request.attributes_to_get)?;
        let item = self
            .run(&caller, async |db, owner| {
                self.store
                    .get(
                        db.reads(),
                        owner,
                        &request.key,
                        request.consistent_read,
                        &projection,
                    )
                    .await
            })
            .await?
            .ok_or(DataError::NotFound)?;
        Ok(Response::new(GetItemResponse {
            item: Some(item.into_proto()),
        }))
    }

    async fn update_item(
        &self,
        request: Request<UpdateItemRequest>,
    ) -> Result<Response<UpdateItemResponse>, Status> {
        let (caller, request) = self.accept(request)?;
        let update = requests::update(&request)?;
        let item = self
            .run(&caller, async |db, owner| {
                self.store.update(db, owner, update).await
            })
            .await?;
        Ok(Response::new(UpdateItemResponse {
            item: Some(item.into_proto()),
        }))
    }

    async fn delete_item(
        &self,
        request: Request<DeleteItemRequest>,
    ) -> Result<Response<DeleteItemResponse>, Status> {
        let (caller, request) = self.accept(request)?;
        requests::key(&request.key)?;
        let item = self
            .run(&caller, async |db, owner| {
                self.store
                    .delete(db, owner, &request.key, request.expected_version)
                    .await
            })
            .await?;
        Ok(Response::new(DeleteItemResponse {
            item: Some(item.into_proto()),
        }))
    }

    async fn batch_get_items(
        &self,
        request: Request<BatchGetItemsRequest>,
    ) -> Result<Response<BatchGetItemsResponse>, Status> {
        let (caller, request) = self.accept(request)?;
        let projection = requests::batch_get(&request)?;
        let consistent = request.consistent_read;
        let mut found = self
            .run(&caller, async |db, owner| {
                (self.store)
                    .batch_get(db.reads(), owner, &request.keys, consistent, &projection)
                    .await
            })
            .await?;
        let (mut items, mut missing_keys) = (Vec::new(), Vec::new());
        for key in request.keys {
            match found.remove(&key) {
                Some(item) => items.push(item.into_proto()),
                None => missing_keys.push(key),
            }
        }
        Ok(Response::new(BatchGetItemsResponse {
            items,
            missing_keys,
        }))
    }

    async fn batch_write_items(
        &self,
        request: Request<BatchWriteItemsRequest>,
    ) -> Result<Response<BatchWriteItemsResponse>, Status> {
        let (caller, request) = self.accept(request)?;
        let entries = requests::batch_write(&request)?;
        // The batch settles every entry by then, leaving a tenth of the budget to answer.
        let deadline = tokio::time::Instant::now() + caller.budget.mul_f64(0.9);
        let report = self
            .run(&caller, async |db, owner| {
                Ok(self.store.batch_write(db, owner, entries, deadline).await)
            })
            .await?;
        if report.credentials_expired() {
            self.clients.forget(&caller.principal.user_id).await;
        }
        if !report.complete() {
            return Err(DataError::BatchIncomplete(report).into());
        }
        Ok(Response::new(BatchWriteItemsResponse {}))
    }

    async fn transact_write_items(
        &self,
        request: Request<TransactWriteItemsRequest>,
    ) -> Result<Response<TransactWriteItemsResponse>, Status> {
        let (caller, request) = self.accept(request)?;
        let transaction = requests::transact(&request)?;
        let versions = self
            .run(&caller, async |db, owner| {
                self.store.transact(db, owner, &transaction).await
            })
            .await?;
        Ok(Response::new(TransactWriteItemsResponse { versions }))
    }

    async fn query_items(
        &self,
        request: Request<QueryItemsRequest>,
    ) -> Result<Response<QueryItemsResponse>, Status> {
        let (caller, request) = self.accept(request)?;
        let owner = caller.principal.user_id.as_str();
        let query = requests::query(&request, owner, &self.pages)?;
        let page = self
            .run(&caller, async |db, owner| {
                self.store.query(db.reads(), owner, &query).await
            })
            .await?;
        let next_page_token = match &page.last_key {
            Some(last) => self.pages.seal(&requests::shape(&request, owner), last)?,
            None => String::new(),
        };
        Ok(Response::new(QueryItemsResponse {
            items: page.items.into_iter().map(StoredItem::into_proto).collect(),
            next_page_token,
            count: page.count,
        }))
    }

    type ExportItemsStream = ExportStream;

    async fn export_items(
        &self,
        request: Request<ExportItemsRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let deadline = export::deadline(request.metadata());
        let (caller, request) = self.accept(request)?;
        let stream = (self.exports).start(
            Arc::unwrap_or_clone(caller.principal),
            caller.token,
            request,
            deadline,
            StoredItem::into_proto,
        )?;
        Ok(Response::new(stream))
    }
}
