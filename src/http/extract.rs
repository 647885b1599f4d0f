//! Extractors that answer every rejection in our error shape.

use super::error::{ApiError, ApiResult};
use crate::db::merchants;
use crate::domain::api_key::ApiKey;
use crate::domain::ids::SubMerchantCode;
use crate::service::{self, Caller, Field, Page, PageRequest};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use axum::Json;
use serde_json::{Map, Value};
use std::fmt::Display;
use std::str::FromStr;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        // Already authenticated by the rate limiter (or the idempotency layer).
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let key = bearer_key(&parts.headers)?;
        authenticate(state, &key).await
    }
}

/// The API key in the `Authorization` header, by its shape only (no database).
pub fn bearer_key(headers: &HeaderMap) -> ApiResult<ApiKey> {
    let header = headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthenticated("no API key: send the header 'Authorization: Bearer sk_test_…'")
    })?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthenticated("the Authorization header is not valid text"))?;
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            ApiError::unauthenticated("the Authorization header must be 'Bearer <API key>'")
        })?;
    ApiKey::parse(token).ok_or_else(|| {
        ApiError::unauthenticated("malformed API key: keys look like sk_test_… or sk_live_…")
    })
}

/// The merchant behind an active key: one indexed lookup, or none for a key that
/// authenticated within the last few seconds (`live_status::AuthCache`).
pub async fn authenticate(state: &AppState, key: &ApiKey) -> ApiResult<Caller> {
    let hash = key.hash();
    // The hash covers the key's text, mode prefix included: one entry serves one mode.
    let merchant = match state.live.auth.get(&hash) {
        Some(merchant) => merchant,
        None => {
            let merchant = merchants::authenticate(&state.db, &hash, key.mode())
                .await?
                .ok_or_else(|| ApiError::unauthenticated("invalid or revoked API key"))?;
            state.live.auth.insert(hash, merchant.clone());
            merchant
        }
    };
    tracing::Span::current().record("merchant.id", tracing::field::display(merchant.id));
    Ok(Caller {
        state: state.clone(),
        merchant,
        mode: key.mode(),
    })
}

/// The sub-merchant a session is created for.
pub const SUB_MERCHANT_HEADER: HeaderName = HeaderName::from_static("x-sub-merchant-code");
/// The header's name as the API documents it, in errors.
const SUB_MERCHANT_PARAM: &str = "X-Sub-Merchant-Code";

/// The sub-merchant code in the request's header, if any.
pub fn sub_merchant_code(headers: &HeaderMap) -> ApiResult<Option<SubMerchantCode>> {
    let Some(value) = headers.get(SUB_MERCHANT_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid(SUB_MERCHANT_PARAM, "must be printable ASCII"))?;
    SubMerchantCode::parse(text)
        .map(Some)
        .map_err(|m| ApiError::invalid(SUB_MERCHANT_PARAM, m))
}

/// A service's error for a request whose sub-merchant code came in the header: a refused
/// code names the header.
pub fn sub_merchant_from_header(e: service::Error) -> ApiError {
    match e {
        service::Error::Invalid {
            field: Field::SubMerchantCode,
            reason,
        } => ApiError::invalid(SUB_MERCHANT_PARAM, reason),
        e => e.into(),
    }
}

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON object body, with its fields taken one by one.
#[derive(Debug)]
pub struct JsonObject(pub Fields);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::invalid(
                "Content-Type",
                "the request body must be JSON: send 'Content-Type: application/json'",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(format!(
                    "the request body is larger than {} KiB",
                    BODY_LIMIT / 1024
                ))
            } else {
                ApiError::bad_request("the request body could not be read")
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "the request body is empty: send a JSON object",
            ));
        }
        let value = parse_strict(&bytes)?;
        match value {
            Value::Object(map) => {
                for (name, v) in &map {
                    if holds_control_character(v) {
                        return Err(ApiError::invalid(
                            name,
                            format!("{name} must not contain control characters"),
                        ));
                    }
                }
                Ok(JsonObject(Fields(map)))
            }
            _ => Err(ApiError::bad_request(
                "the request body must be a JSON object",
            )),
        }
    }
}

/// U+0000–U+001F and U+007F, refused in every text input.
pub fn has_control_character(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_control())
}

fn holds_control_character(v: &Value) -> bool {
    match v {
        Value::String(s) => has_control_character(s),
        Value::Array(items) => items.iter().any(holds_control_character),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| has_control_character(k) || holds_control_character(v)),
        _ => false,
    }
}

/// JSON where a key given twice in one object is an error (`parameter_duplicated`), not
/// "the last one wins".
fn parse_strict(bytes: &[u8]) -> ApiResult<Value> {
    let duplicate = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde::de::DeserializeSeed::deserialize(StrictValue(&duplicate), &mut de)
        .and_then(|v| de.end().map(|()| v));
    match (parsed, duplicate.into_inner()) {
        (_, Some(key)) => Err(ApiError::duplicated(
            &key,
            format!("'{key}' is given more than once"),
        )),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// Deserializes any JSON value, recording the first key repeated within an object.
struct StrictValue<'a>(&'a std::cell::RefCell<Option<String>>);

impl<'de> serde::de::DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictValue(self.0))?;
            if out.contains_key(&key) {
                self.0.borrow_mut().get_or_insert(key);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The fields of a JSON object, taken by name; what is left over is an unknown parameter.
#[derive(Debug)]
pub struct Fields(Map<String, Value>);

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A parsed value, or its refusal naming the parameter.
fn named<T, E: Display>(name: &str, parsed: Result<T, E>) -> ApiResult<T> {
    parsed.map_err(|e| ApiError::invalid(name, e.to_string()))
}

impl Fields {
    /// The raw value; an explicit `null` reads as absent.
    fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|v| !v.is_null())
    }

    pub fn optional_string(&mut self, name: &str) -> ApiResult<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ApiError::invalid(
                name,
                format!("must be a string, not {}", type_name(&other)),
            )),
        }
    }

    pub fn required_string(&mut self, name: &str) -> ApiResult<String> {
        self.optional_string(name)?
            .ok_or_else(|| ApiError::invalid(name, format!("{name} is required")))
    }

    /// A required string field, parsed; a refusal names the field.
    pub fn required<T: FromStr>(&mut self, name: &str) -> ApiResult<T>
    where
        T::Err: Display,
    {
        self.required_with(name, str::parse)
    }

    pub fn required_with<T, E: Display>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> ApiResult<T> {
        let text = self.required_string(name)?;
        named(name, parse(&text))
    }

    /// An optional string field, parsed when present.
    pub fn optional<T: FromStr>(&mut self, name: &str) -> ApiResult<Option<T>>
    where
        T::Err: Display,
    {
        self.optional_string(name)?
            .map(|text| named(name, text.parse()))
            .transpose()
    }

    /// An optional array of strings.
    pub fn optional_string_list(&mut self, name: &str) -> ApiResult<Option<Vec<String>>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) if items.len() <= 100 => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(ApiError::invalid(
                        name,
                        format!("must hold strings, not {}", type_name(&other)),
                    )),
                })
                .collect::<ApiResult<Vec<_>>>()
                .map(Some),
            Some(Value::Array(_)) => Err(ApiError::invalid(name, "has too many entries")),
            Some(other) => Err(ApiError::invalid(
                name,
                format!("must be an array of strings, not {}", type_name(&other)),
            )),
        }
    }

    /// An optional string that may not be `null` (a PATCH field that cannot be cleared).
    pub fn optional_non_null_string(&mut self, name: &str) -> ApiResult<Option<String>> {
        if self.0.get(name).is_some_and(Value::is_null) {
            return Err(ApiError::invalid(
                name,
                format!("{name} cannot be null: omit it to leave it unchanged"),
            ));
        }
        self.optional_string(name)
    }

    /// `Some(None)` when the field is present as `null` (clear it), `None` when absent.
    pub fn nullable_string(&mut self, name: &str) -> ApiResult<Option<Option<String>>> {
        match self.0.remove(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s))),
            Some(other) => Err(ApiError::invalid(
                name,
                format!("must be a string or null, not {}", type_name(&other)),
            )),
        }
    }

    /// Fails on the first field nobody asked for.
    pub fn finish(self) -> ApiResult<()> {
        match self.0.keys().next() {
            Some(unknown) => Err(ApiError::invalid(
                unknown.clone(),
                format!("unknown parameter '{unknown}'"),
            )),
            None => Ok(()),
        }
    }
}

/// Decoded query parameters; unknown names are refused by `finish`.
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::parse(parts.uri.query())
    }
}

impl QueryParams {
    /// Control characters in a name or value are refused here, before anything reads them.
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        if let Some((name, _)) = pairs
            .iter()
            .find(|(k, v)| has_control_character(k) || has_control_character(v))
        {
            return Err(ApiError::invalid(
                name,
                format!("query parameter '{name}' must not contain control characters"),
            ));
        }
        Ok(Self(pairs))
    }

    /// The last value given for `name`, removed from the set.
    /// The parameter, parsed when present; a refusal names it.
    pub fn parsed<T: FromStr>(&mut self, name: &str) -> ApiResult<Option<T>>
    where
        T::Err: Display,
    {
        self.take(name)
            .map(|text| named(name, text.parse()))
            .transpose()
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        let mut found = None;
        self.0.retain(|(k, v)| {
            if k == name {
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        found
    }

    pub fn take_int(&mut self, name: &str, default: i64, min: i64, max: i64) -> ApiResult<i64> {
        match self.take(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(name, format!("must be an integer from {min} to {max}"))
                }),
        }
    }

    pub fn finish(self) -> ApiResult<()> {
        match self.0.first() {
            Some((unknown, _)) => Err(ApiError::invalid(
                unknown.clone(),
                format!("unknown query parameter '{unknown}'"),
            )),
            None => Ok(()),
        }
    }
}

/// `page` and `page_size` of a list request.
pub struct Paging {
    pub page: i64,
    pub page_size: i64,
}

impl Paging {
    pub fn take(q: &mut QueryParams) -> ApiResult<Self> {
        Ok(Self {
            page: q.take_int("page", 1, 1, 1_000_000)?,
            page_size: q.take_int("page_size", 20, 1, 100)?,
        })
    }

    /// The rows of this page.
    pub fn request(&self) -> PageRequest {
        PageRequest {
            limit: self.page_size,
            offset: (self.page - 1).saturating_mul(self.page_size),
        }
    }

    /// The list answer: the page's objects and where the page stands.
    pub fn respond<T>(&self, page: &Page<T>, to_json: impl Fn(&T) -> Value) -> Json<Value> {
        let total_pages = (page.total + self.page_size - 1) / self.page_size;
        Json(serde_json::json!({
            "data": page.items.iter().map(to_json).collect::<Vec<_>>(),
            "meta": {
                "total": page.total,
                "page": self.page,
                "page_size": self.page_size,
                "total_pages": total_pages,
            },
        }))
    }
}
