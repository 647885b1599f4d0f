//! The hosted payment page (`GET /{id}`), its public view JSON, its live status stream
//! (server-sent events) and its two assets. No external requests, a strict CSP.

use super::error::{ApiError, ApiResult};
use super::i18n::{self, Text};
use super::Routes;
use crate::domain::ids::SessionId;
use crate::domain::session::{SessionStatus, TransactionStatus};
use crate::service::hosted::{self as service, network_label, PageView};
use crate::service::live_status::LiveView;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{
    ACCEPT_LANGUAGE, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use futures_util::stream::{self, Stream};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CSS: &str = include_str!("../../assets/checkout.css");
const JS: &str = include_str!("../../assets/checkout.js");
/// How often a live stream looks for a change while no notifications arrive, and how long
/// one stream lasts.
const STREAM_POLL: Duration = Duration::from_secs(1);
const STREAM_LIFETIME: Duration = Duration::from_secs(600);

pub fn routes(r: Routes) -> Routes {
    r.add("GET", "/{id}", get(page))
        .add("GET", "/v1/checkout/sessions/{id}/view", get(view))
        .add("GET", "/v1/checkout/sessions/{id}/events", get(events))
        .add("GET", "/v1/checkout/sessions/{id}/logo", get(logo))
        .add("GET", "/assets/checkout.css", get(css))
        .add("GET", "/assets/checkout.js", get(js))
}

#[derive(Template)]
#[template(path = "page.html")]
struct PageTemplate<'a> {
    t: &'static Text,
    v: &'a PageView,
    embed: bool,
    state: &'static str,
    open: bool,
    confirmations: u64,
    network_label: &'static str,
    qr_svg: String,
    initial: String,
    other_lang: &'static str,
    server_time_unix: i64,
    expires_unix: i64,
    expires_iso: String,
    expires_text: String,
    remaining: String,
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundTemplate {
    t: &'static Text,
}

/// The state the page shows: the session status, "Confirming" while a payment to a pending
/// session waits for its confirmations, or "TimeUp" once `expires_at` has passed on a session
/// still open (expired: do not pay; payments made in time are still being looked for).
pub fn page_state(v: &PageView) -> &'static str {
    match (v.status, v.confirming(), v.time_up) {
        (SessionStatus::Pending, Some(_), _) => "Confirming",
        (SessionStatus::Pending | SessionStatus::Underpaid, None, true) => "TimeUp",
        (status, _, _) => status.as_str(),
    }
}

/// The QR code as inline SVG, scalable by CSS.
pub fn qr_svg(data: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(data.as_bytes()) else {
        return String::new();
    };
    let modules = code.width() + 8; // with the quiet zone
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .module_dimensions(1, 1)
        .quiet_zone(true)
        .build();
    let start = svg.find("<svg").unwrap_or(0);
    svg[start..].replacen(
        "<svg ",
        &format!(
            "<svg viewBox=\"0 0 {modules} {modules}\" focusable=\"false\" aria-hidden=\"true\" "
        ),
        1,
    )
}

fn page_headers(state: &AppState, html: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    let ancestors = &state.config.hosted.frame_ancestors;
    let frame = if ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        ancestors.join(" ")
    };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {frame}"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(CONTENT_SECURITY_POLICY, v);
    }
    if ancestors.is_empty() {
        h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if html {
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    h
}

struct PageQuery {
    lang: Option<String>,
    embed: bool,
}

fn page_query(raw: Option<&str>) -> ApiResult<PageQuery> {
    let mut q = super::extract::QueryParams::parse(raw)?;
    Ok(PageQuery {
        lang: q.take("lang"),
        embed: q.take("embed").is_some_and(|v| v == "1" || v == "true"),
    })
}

fn render_not_found(state: &AppState, t: &'static Text) -> Response {
    let body = NotFoundTemplate { t }.render().unwrap_or_default();
    (StatusCode::NOT_FOUND, page_headers(state, true), body).into_response()
}

fn format_remaining(seconds: i64) -> String {
    let s = seconds.max(0);
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = page_query(raw.as_deref())?;
    let accept = headers.get(ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    let t = i18n::choose(q.lang.as_deref(), accept);
    let Some(id) = SessionId::parse(&id) else {
        return Ok(render_not_found(&state, t));
    };
    let Some(v) = PageView::load(&state, id.as_str()).await? else {
        return Ok(render_not_found(&state, t));
    };
    let state_name = page_state(&v);
    let page = PageTemplate {
        t,
        embed: q.embed,
        state: state_name,
        open: matches!(state_name, "Pending" | "Confirming" | "Underpaid") && !v.time_up,
        confirmations: v.confirming().and_then(|c| c.confirmations).unwrap_or(0),
        network_label: network_label(v.network),
        qr_svg: qr_svg(&v.payment_uri),
        initial: v
            .merchant_name
            .chars()
            .next()
            .map(|c| c.to_uppercase().to_string())
            .unwrap_or_default(),
        other_lang: if t.lang == "en" { "zh" } else { "en" },
        server_time_unix: v.server_time.timestamp(),
        expires_unix: v.expires_at.timestamp(),
        expires_iso: crate::views::timestamp(v.expires_at),
        expires_text: v.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        remaining: format_remaining((v.expires_at - v.server_time).num_seconds()),
        v: &v,
    };
    let body = page.render().map_err(ApiError::internal)?;
    Ok((page_headers(&state, true), Html(body)).into_response())
}

fn no_session(id: &str) -> ApiError {
    ApiError::not_found(format!("no checkout session '{id}'"))
}

/// `id` if it has a session id's form: a malformed one is as missing as an unknown one.
fn public_id(id: &str) -> ApiResult<SessionId> {
    SessionId::parse(id).ok_or_else(|| no_session(id))
}

async fn load_public(state: &AppState, id: &str) -> ApiResult<PageView> {
    PageView::load(state, public_id(id)?.as_str())
        .await?
        .ok_or_else(|| no_session(id))
}

async fn view(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let v = load_public(&state, &id).await?;
    Ok((page_headers(&state, false), Json(v.to_json())).into_response())
}

/// `session` events with the view whenever it changes; ends after a terminal status or ten
/// minutes (the browser reconnects). Woken by Postgres's announcements (the session, and the
/// chain head while a transfer awaits confirmations) and when the session's time runs out;
/// it polls only while this process cannot listen.
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    public_id(&id)?;
    // Subscribed before the first read, so no change after it goes unseen; the read is shared
    // with the session's other streams (a burst of pages opening costs one or two reads).
    let subscription = state.live.subscribe(&id);
    let first = subscription
        .view(&state, Instant::now())
        .await?
        .ok_or_else(|| no_session(&id))?;
    let head = state.live.head(first.view.network, first.view.livemode);
    let stream = LiveStream {
        state,
        subscription,
        head,
        started: Instant::now(),
        shown: Shown::Nothing,
        watch_head: false,
        time_up_at: None,
    };
    let s = stream::unfold((stream, Some(first)), |(mut live, pending)| async move {
        let event = live.next(pending).await?;
        Some((Ok(event), (live, None)))
    });
    Ok(Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One page's live-status stream.
struct LiveStream {
    state: AppState,
    subscription: crate::service::live_status::Subscription,
    head: tokio::sync::watch::Receiver<()>,
    started: Instant,
    /// The last view sent (shared with the session's other streams, not copied).
    shown: Shown,
    /// A transfer awaits confirmations: each new head changes the view.
    watch_head: bool,
    /// When the page's time runs out, if it has not yet.
    time_up_at: Option<Instant>,
}

enum Shown {
    Nothing,
    View(Arc<LiveView>),
    /// A terminal status was sent: nothing more will be.
    Closed,
}

impl LiveStream {
    /// The next changed view as an event; `None` ends the stream.
    async fn next(&mut self, mut pending: Option<Arc<LiveView>>) -> Option<Event> {
        if matches!(self.shown, Shown::Closed) {
            return None;
        }
        loop {
            let live = match pending.take() {
                Some(live) => live,
                None => {
                    self.wait().await?;
                    self.load(Instant::now()).await?
                }
            };
            let v = &live.view;
            self.watch_head = v
                .transfers
                .iter()
                .any(|t| t.status == TransactionStatus::Unconfirmed);
            self.time_up_at = (!v.time_up).then(|| {
                let left = (v.expires_at - v.server_time).to_std().unwrap_or_default();
                Instant::now() + left + Duration::from_millis(50)
            });
            // Changes are judged without the clock, which differs on every read.
            if let Shown::View(shown) = &self.shown {
                if Arc::ptr_eq(shown, &live) || shown.comparable == live.comparable {
                    continue;
                }
            }
            let event = Event::default().event("session").data(live.data.as_str());
            self.shown = if v.status.is_open() {
                Shown::View(live)
            } else {
                Shown::Closed
            };
            return Some(event);
        }
    }

    /// The view as of `woken` (shared with the session's other streams), read again after a
    /// second while the database fails.
    async fn load(&self, woken: Instant) -> Option<Arc<LiveView>> {
        loop {
            match self.subscription.view(&self.state, woken).await {
                Ok(view) => return view,
                Err(e) => tracing::warn!(error = %e, "page stream: database error"),
            }
            tokio::select! {
                _ = tokio::time::sleep(STREAM_POLL) => {}
                _ = self.state.stopping.cancelled() => return None,
            }
        }
    }

    /// Until something may have changed; `None` when the stream should end.
    async fn wait(&mut self) -> Option<()> {
        let end = self.started + STREAM_LIFETIME;
        let mut wake = if self.state.live.listening() {
            end
        } else {
            Instant::now() + STREAM_POLL
        };
        if let Some(at) = self.time_up_at {
            wake = wake.min(at);
        }
        tokio::select! {
            _ = self.subscription.changed.changed() => {}
            _ = self.head.changed(), if self.watch_head => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
            // Shutting down: end the stream; the browser reconnects elsewhere.
            _ = self.state.stopping.cancelled() => return None,
        }
        (Instant::now() < end).then_some(())
    }
}

/// The merchant's logo, from this origin (see `service::logos`).
async fn logo(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let missing = || ApiError::not_found("no logo");
    let id = SessionId::parse(&id).ok_or_else(missing)?;
    let logo = service::logo(&state, &id).await?.ok_or_else(missing)?;
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(logo.content_type)),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; sandbox"),
            ),
        ],
        logo.bytes,
    )
        .into_response())
}

async fn css() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        JS,
    )
}
