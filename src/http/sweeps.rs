use super::error::ApiResult;
use super::extract::{Paging, QueryParams};
use super::Routes;
use crate::service::{sweeps as service, Caller};
use axum::extract::Path;
use axum::routing::get;
use axum::Json;
use serde_json::Value;

pub fn routes(r: Routes) -> Routes {
    r.add("GET", "/v1/sweeps", get(list))
        .add("GET", "/v1/sweeps/{id}", get(retrieve))
}

async fn list(caller: Caller, mut q: QueryParams) -> ApiResult<Json<Value>> {
    let paging = Paging::take(&mut q)?;
    q.finish()?;
    let page = service::list(&caller, paging.request()).await?;
    Ok(paging.respond(&page, Value::clone))
}

async fn retrieve(caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(service::find(&caller, &id).await?))
}
