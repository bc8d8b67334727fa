//! The session routes: pairing, state, logout. The tenant's own under
//! `/session`, and the same for any tenant under `/admin/tenants/{id}`.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::admin::find_tenant;
use super::error::{ApiError, ApiResult};
use super::extract::{AdminAuth, ApiJson, TenantAuth};
use crate::sessions::{Phone, Qr, SessionError, SessionView};
use crate::store::now_ms;
use crate::tenants::TenantId;

pub fn tenant_routes() -> Router<AppState> {
    Router::new()
        .route("/session", get(tenant_status))
        .route("/session/qr", get(tenant_qr))
        .route("/session/pair-code", post(tenant_pair_code))
        .route("/session/logout", post(tenant_logout))
}

pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/tenants/{id}/session", get(admin_status))
        .route("/admin/tenants/{id}/session/qr", get(admin_qr))
        .route(
            "/admin/tenants/{id}/session/pair-code",
            post(admin_pair_code),
        )
        .route("/admin/tenants/{id}/session/logout", post(admin_logout))
}

/// `GET /session/qr` as JSON.
#[derive(Serialize)]
struct QrBody {
    qr: String,
    /// Seconds until the code is replaced.
    expires_in: u64,
}

/// `POST /session/pair-code`.
#[derive(Serialize)]
struct PairCodeBody {
    code: String,
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::AlreadyPaired => ApiError::Conflict(
                "the session is already paired; log it out first to pair another number".into(),
            ),
            SessionError::NotConnected | SessionError::Stopped => {
                ApiError::SessionNotConnected(e.to_string())
            }
            SessionError::NotASandbox | SessionError::NoQr(_) | SessionError::Client(_) => {
                ApiError::SessionNotConnected(e.to_string())
            }
            SessionError::PairCode(m) => ApiError::BadRequest(format!("pair code refused: {m}")),
            SessionError::Timeout(m) => ApiError::Timeout(m),
            SessionError::Store(e) => e.into(),
        }
    }
}

#[derive(Deserialize)]
struct QrQuery {
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PairCodeRequest {
    phone: String,
}

async fn tenant_status(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> ApiResult<Json<SessionView>> {
    Ok(Json(state.sessions.status(&auth.tenant_id).await?))
}

async fn admin_status(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    Ok(Json(state.sessions.status(&tenant).await?))
}

async fn tenant_qr(
    auth: TenantAuth,
    State(state): State<AppState>,
    Query(q): Query<QrQuery>,
) -> ApiResult<Response> {
    qr(&state, &auth.tenant_id, q.format.as_deref()).await
}

async fn admin_qr(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<QrQuery>,
) -> ApiResult<Response> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    qr(&state, &tenant, q.format.as_deref()).await
}

async fn tenant_pair_code(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PairCodeRequest>,
) -> ApiResult<Json<PairCodeBody>> {
    pair_code(&state, &auth.tenant_id, &body.phone).await
}

async fn admin_pair_code(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PairCodeRequest>,
) -> ApiResult<Json<PairCodeBody>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    pair_code(&state, &tenant, &body.phone).await
}

async fn tenant_logout(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> ApiResult<Json<SessionView>> {
    logout(&state, &auth.tenant_id).await
}

async fn admin_logout(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    logout(&state, &tenant).await
}

async fn qr(state: &AppState, tenant: &TenantId, format: Option<&str>) -> ApiResult<Response> {
    let format = QrFormat::parse(format)?;
    let qr = state.sessions.qr(tenant).await?;
    render(&qr, format)
}

async fn pair_code(
    state: &AppState,
    tenant: &TenantId,
    phone: &str,
) -> ApiResult<Json<PairCodeBody>> {
    let phone = Phone::parse(phone).map_err(|e| ApiError::invalid("phone", e))?;
    let code = state.sessions.pair_code(tenant, phone.to_string()).await?;
    Ok(Json(PairCodeBody {
        code: display_code(&code),
    }))
}

async fn logout(state: &AppState, tenant: &TenantId) -> ApiResult<Json<SessionView>> {
    state.sessions.logout(tenant).await?;
    Ok(Json(state.sessions.status(tenant).await?))
}

/// `ABCDEFGH` as `ABCD-EFGH`, the way WhatsApp shows it.
fn display_code(code: &str) -> String {
    if code.len() == 8 && code.is_ascii() {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_owned()
    }
}

#[derive(Clone, Copy)]
enum QrFormat {
    Json,
    Text,
    Png,
    Svg,
}

impl QrFormat {
    fn parse(raw: Option<&str>) -> ApiResult<Self> {
        match raw.map(str::trim) {
            None | Some("") | Some("json") => Ok(QrFormat::Json),
            Some("text") => Ok(QrFormat::Text),
            Some("png") => Ok(QrFormat::Png),
            Some("svg") => Ok(QrFormat::Svg),
            Some(_) => Err(ApiError::invalid(
                "format",
                "must be one of: json, text, png, svg",
            )),
        }
    }
}

fn render(qr: &Qr, format: QrFormat) -> ApiResult<Response> {
    let expires_in = u64::try_from((qr.expires_at_ms - now_ms()).max(0) / 1000).unwrap_or(0);
    if let QrFormat::Json = format {
        let body = QrBody {
            qr: qr.code.clone(),
            expires_in,
        };
        return Ok(Json(body).into_response());
    }
    let code = qrcode::QrCode::new(qr.code.as_bytes())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("cannot encode the QR code: {e}")))?;
    Ok(match format {
        QrFormat::Text => {
            let text = code
                .render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build();
            (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                text + "\n",
            )
                .into_response()
        }
        QrFormat::Svg => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(256, 256)
                .build();
            ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
        }
        QrFormat::Png => {
            let png = png_of(&code).map_err(|e| ApiError::Internal(e.into()))?;
            ([(header::CONTENT_TYPE, "image/png")], png).into_response()
        }
        QrFormat::Json => unreachable!("answered above"),
    })
}

/// The code as a black-on-white greyscale PNG: 8 pixels a module, with the
/// four-module quiet zone scanners need.
fn png_of(code: &qrcode::QrCode) -> Result<Vec<u8>, png::EncodingError> {
    const SCALE: usize = 8;
    const QUIET: usize = 4;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (mx, my) = (i % modules + QUIET, i / modules + QUIET);
            for y in my * SCALE..(my + 1) * SCALE {
                pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}
