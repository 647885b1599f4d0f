use crate::db::sub_merchants::{self as db, SubMerchant, SubMerchantPatch};
use crate::domain::ids::SubMerchantCode;
use crate::domain::urls::HttpUrl;
use crate::service::{Caller, ConflictKind, Error, Field, Page, PageRequest};

pub fn check_display_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(Error::invalid(
            Field::DisplayName,
            "must be 1 to 200 characters",
        ));
    }
    Ok(())
}

pub async fn create(
    caller: &Caller,
    code: SubMerchantCode,
    display_name: &str,
    logo_url: Option<HttpUrl>,
) -> Result<SubMerchant, Error> {
    check_display_name(display_name)?;
    let inserted = db::insert(
        &caller.state.db,
        caller.scope(),
        code.as_str(),
        display_name,
        logo_url.as_ref().map(HttpUrl::as_str),
    )
    .await;
    match inserted {
        Ok(sub) => Ok(sub),
        Err(e) if crate::db::is_constraint(&e, db::PK) => Err(Error::conflict(
            ConflictKind::AlreadyExists(Field::SubMerchantCode),
            format!(
                "a sub-merchant with code '{}' already exists",
                code.as_str()
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

fn not_found(code: &str) -> Error {
    Error::NotFound(format!("no sub-merchant '{code}'"))
}

pub async fn retrieve(caller: &Caller, code: &str) -> Result<SubMerchant, Error> {
    SubMerchantCode::parse(code).map_err(|_| not_found(code))?;
    db::find(&caller.state.db, caller.scope(), code)
        .await?
        .ok_or_else(|| not_found(code))
}

/// One page, oldest first.
pub async fn list(caller: &Caller, rows: PageRequest) -> Result<Page<SubMerchant>, Error> {
    let db = &caller.state.db;
    let (items, total) = db::list(db, caller.scope(), rows).await?;
    Ok(Page { items, total })
}

pub async fn update(
    caller: &Caller,
    code: &str,
    patch: &SubMerchantPatch<'_>,
) -> Result<SubMerchant, Error> {
    SubMerchantCode::parse(code).map_err(|_| not_found(code))?;
    if let Some(name) = patch.display_name {
        check_display_name(name)?;
    }
    db::update(&caller.state.db, caller.scope(), code, patch)
        .await?
        .ok_or_else(|| not_found(code))
}
