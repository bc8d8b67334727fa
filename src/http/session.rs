//! The session routes: pairing, state, logout. The tenant's own under
//! `/session`, and the same for any tenant under `/admin/tenants/{id}`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::admin::find_tenant;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{AdminAuth, ApiJson, ApiPath, ApiQuery, TenantAuth};
use crate::sessions::{Phone, Qr, SessionError, SessionView};
use crate::store::now_ms;
use crate::tenants::TenantId;

pub fn tenant_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tenant_status))
        .routes(routes!(tenant_qr))
        .routes(routes!(tenant_pair_code))
        .routes(routes!(tenant_logout))
}

pub fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_status))
        .routes(routes!(admin_qr))
        .routes(routes!(admin_pair_code))
        .routes(routes!(admin_logout))
}

/// `GET /session/qr` as JSON.
#[derive(Serialize, ToSchema)]
struct QrBody {
    /// The string the QR code encodes: draw it, or pass it to a scanner.
    qr: String,
    /// Seconds until the code is replaced.
    expires_in: u64,
}

/// `POST /session/pair-code`.
#[derive(Serialize, ToSchema)]
struct PairCodeBody {
    /// The code to type on the phone, `ABCD-EFGH`.
    #[schema(example = "ABCD-EFGH")]
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

/// The number to link by pair code.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PairCodeRequest {
    /// The phone number the code is for, digits with an optional `+`.
    #[schema(example = "62811000001")]
    phone: String,
}

/// The session: state, number, push name, node.
#[utoipa::path(
    get,
    path = "/session",
    tag = "session",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    responses(
        (status = 200, description = "The session's state.", body = SessionView),
    ),
)]
async fn tenant_status(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> ApiResult<Json<SessionView>> {
    Ok(Json(state.sessions.status(&auth.tenant_id).await?))
}

/// A tenant's session.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}/session",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id.")),
    responses(
        (status = 200, description = "The session's state.", body = SessionView),
        (status = 404, description = "No such tenant (`not_found`).", body = ErrorBody),
    ),
)]
async fn admin_status(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SessionView>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    Ok(Json(state.sessions.status(&tenant).await?))
}

/// The QR code to link the number: starts the session if it is unpaired.
#[utoipa::path(
    get,
    path = "/session/qr",
    tag = "session",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    params(("format" = Option<QrFormat>, Query, description = "How to draw the code (default `json`).")),
    responses(
        (status = 200, description = "The current QR code; a new one replaces it every `expires_in` seconds.", content(
            (QrBody = "application/json"),
            (String = "text/plain"),
            (String = "image/svg+xml"),
            (Vec<u8> = "image/png"),
        )),
        (status = 409, description = "The session is already paired (`conflict`).", body = ErrorBody),
        (status = 422, description = "An unknown `format` (`invalid_field`).", body = ErrorBody),
        (status = 503, description = "No QR code can be shown now (`session_not_connected`).", body = ErrorBody),
        (status = 504, description = "The node that runs the session did not answer in time (`timeout`).", body = ErrorBody),
    ),
)]
async fn tenant_qr(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<QrQuery>,
) -> ApiResult<Response> {
    qr(&state, &auth.tenant_id, q.format.as_deref()).await
}

/// A tenant's QR code.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}/session/qr",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id."), ("format" = Option<QrFormat>, Query, description = "How to draw the code (default `json`).")),
    responses(
        (status = 200, description = "The current QR code; a new one replaces it every `expires_in` seconds.", content(
            (QrBody = "application/json"),
            (String = "text/plain"),
            (String = "image/svg+xml"),
            (Vec<u8> = "image/png"),
        )),
        (status = 409, description = "The session is already paired (`conflict`).", body = ErrorBody),
        (status = 422, description = "An unknown `format` (`invalid_field`).", body = ErrorBody),
        (status = 503, description = "No QR code can be shown now (`session_not_connected`).", body = ErrorBody),
        (status = 504, description = "The node that runs the session did not answer in time (`timeout`).", body = ErrorBody),
        (status = 404, description = "No such tenant (`not_found`).", body = ErrorBody),
    ),
)]
async fn admin_qr(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<QrQuery>,
) -> ApiResult<Response> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    qr(&state, &tenant, q.format.as_deref()).await
}

/// Link by phone code instead of QR: the code to enter on the phone.
#[utoipa::path(
    post,
    path = "/session/pair-code",
    tag = "session",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    request_body = PairCodeRequest,
    responses(
        (status = 200, description = "The code to enter on the phone.", body = PairCodeBody),
        (status = 400, description = "WhatsApp refused the pair code (`bad_request`).", body = ErrorBody),
        (status = 409, description = "The session is already paired (`conflict`).", body = ErrorBody),
        (status = 503, description = "The session cannot pair now (`session_not_connected`).", body = ErrorBody),
        (status = 504, description = "The node that runs the session did not answer in time (`timeout`).", body = ErrorBody),
    ),
)]
async fn tenant_pair_code(
    auth: TenantAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PairCodeRequest>,
) -> ApiResult<Json<PairCodeBody>> {
    pair_code(&state, &auth.tenant_id, &body.phone).await
}

/// A tenant's pair code.
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/session/pair-code",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id.")),
    request_body = PairCodeRequest,
    responses(
        (status = 200, description = "The code to enter on the phone.", body = PairCodeBody),
        (status = 400, description = "WhatsApp refused the pair code (`bad_request`).", body = ErrorBody),
        (status = 409, description = "The session is already paired (`conflict`).", body = ErrorBody),
        (status = 503, description = "The session cannot pair now (`session_not_connected`).", body = ErrorBody),
        (status = 504, description = "The node that runs the session did not answer in time (`timeout`).", body = ErrorBody),
        (status = 404, description = "No such tenant (`not_found`).", body = ErrorBody),
    ),
)]
async fn admin_pair_code(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PairCodeRequest>,
) -> ApiResult<Json<PairCodeBody>> {
    let tenant = find_tenant(&state, &id).await?.tenant_id();
    pair_code(&state, &tenant, &body.phone).await
}

/// Unlink the device from the number.
#[utoipa::path(
    post,
    path = "/session/logout",
    tag = "session",
    security(("tenant_key" = []), ("tenant_bearer" = [])),
    responses(
        (status = 200, description = "Logged out: the device is unlinked; the session's state after it.", body = SessionView),
        (status = 503, description = "The session is not connected (`session_not_connected`).", body = ErrorBody),
        (status = 504, description = "The node that runs the session did not answer in time (`timeout`).", body = ErrorBody),
    ),
)]
async fn tenant_logout(
    auth: TenantAuth,
    State(state): State<AppState>,
) -> ApiResult<Json<SessionView>> {
    logout(&state, &auth.tenant_id).await
}

/// Log a tenant's session out.
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/session/logout",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The tenant's id.")),
    responses(
        (status = 200, description = "Logged out: the device is unlinked; the session's state after it.", body = SessionView),
        (status = 503, description = "The session is not connected (`session_not_connected`).", body = ErrorBody),
        (status = 504, description = "The node that runs the session did not answer in time (`timeout`).", body = ErrorBody),
        (status = 404, description = "No such tenant (`not_found`).", body = ErrorBody),
    ),
)]
async fn admin_logout(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
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

crate::text_enum! {
    /// How `GET /session/qr` draws the code.
    pub(super) enum QrFormat {
        /// `{"qr", "expires_in"}`.
        Json = "json",
        /// Block characters, for a terminal.
        Text = "text",
        Png = "png",
        Svg = "svg",
    }
}

impl QrFormat {
    fn parse(raw: Option<&str>) -> ApiResult<Self> {
        match raw.map(str::trim) {
            None | Some("") => Ok(QrFormat::Json),
            Some(name) => name
                .parse()
                .map_err(|_| ApiError::invalid("format", "must be one of: json, text, png, svg")),
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
