//! The OpenAPI document, generated from the handlers' annotations and the wire types, served
//! at `GET /v1/openapi.json`.

use utoipa::OpenApi;

use fieldvault_core::protocol::attachments::{AttachmentInfo, AttachmentUpload, ChunkReceipt};
use fieldvault_core::protocol::auth::{
    AckRequest, AckResponse, DeviceProof, DeviceReason, DeviceSelf, JwksResponse, LeaseBody, LoginRequest,
    LogoutRequest, LogoutResponse, RefreshRequest, TokenResponse,
};
use fieldvault_core::protocol::oidc::{OidcConfigResponse, OidcIssuerConfig, OidcLoginRequest};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Fieldvault sync server", description = "SPEC section 5; docs/protocol.md walks through it."),
    paths(
        crate::serve::healthz,
        crate::serve::server_pins,
        crate::auth::login::login,
        crate::auth::oidc::config,
        crate::auth::oidc::login,
        crate::auth::routes::refresh,
        crate::auth::routes::logout,
        crate::auth::routes::jwks,
        crate::auth::routes::device_self,
        crate::devices::ack,
        crate::attachments::put_metadata,
        crate::attachments::get_metadata,
        crate::attachments::put_chunk,
        crate::attachments::get_chunk,
        crate::sync::push,
        crate::sync::pull,
        openapi_json,
    ),
    components(schemas(
        LoginRequest,
        OidcConfigResponse,
        OidcIssuerConfig,
        OidcLoginRequest,
        DeviceProof,
        TokenResponse,
        DeviceReason,
        LeaseBody,
        RefreshRequest,
        LogoutRequest,
        LogoutResponse,
        DeviceSelf,
        JwksResponse,
        AckRequest,
        AckResponse,
        AttachmentUpload,
        AttachmentInfo,
        ChunkReceipt
    ))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
