//! `/files`: users' stored files. Metadata in the `files` table; content on disk under the
//! files dir, addressed by SHA-256 (so identical uploads are stored once), written atomically.
//!
//! An upload writes the content first and the row second; if the row cannot be written, content
//! no row names is removed again, so a failed upload leaves neither.

use std::path::{Path, PathBuf};

use aniate_proto::{
    api::FileMeta,
    error::{ErrorBody, ErrorCode},
};
use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use super::{
    AppState,
    error::{ApiError, ApiResult},
    extract::{ApiPath, ApiQuery},
    openapi::Binary,
};
use crate::{
    auth::AuthUser,
    db::{StoredFile, rfc3339},
};

/// Content-addressed storage on disk.
#[derive(Debug, Clone)]
pub struct FileStore {
    pub dir: PathBuf,
}

impl FileStore {
    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(&sha256[..2]).join(sha256)
    }

    /// Stores `bytes` under their hash; a second copy of the same content is not written again.
    fn put(&self, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.path(sha256);
        if path.is_file() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        // A name of its own per write: two uploads of the same content at once must not write
        // into (and rename away) the same temporary file.
        let temp = dir.join(format!(".{sha256}.{}.{:016x}.tmp", std::process::id(), rand::random::<u64>()));
        let result = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    fn get(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(sha256))
    }

    fn remove(&self, sha256: &str) {
        let _ = std::fs::remove_file(self.path(sha256));
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct UploadQuery {
    name: Option<String>,
}

fn meta(file: &StoredFile) -> FileMeta {
    FileMeta {
        id: file.id,
        name: file.name.clone(),
        size: file.size.max(0) as u64,
        content_type: file.content_type.clone(),
        sha256: file.sha256.clone(),
        created_at: rfc3339(file.created_at),
    }
}

/// A file name as given by the user: a name, not a path.
fn check_name(name: &str) -> ApiResult<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        return Err(ApiError::invalid("name: a file name (not a path), 1 to 255 bytes, without control characters"));
    }
    Ok(())
}

/// The media type to store for an upload: the request's `Content-Type` when it is a well-formed
/// media type (it is served back as the `Content-Type` of the content), else
/// `application/octet-stream`.
fn upload_content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| v.len() <= 128 && is_media_type(v) && !v.starts_with("application/x-www-form-urlencoded"))
        .unwrap_or("application/octet-stream")
        .to_owned()
}

/// Whether `value` is `type/subtype` with optional `; name=value` parameters (RFC 9110 8.3.1).
fn is_media_type(value: &str) -> bool {
    fn is_token(text: &str) -> bool {
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }
    fn is_parameter_value(text: &str) -> bool {
        match text.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')) {
            Some(quoted) => !quoted.contains(['"', '\\']) && quoted.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            None => is_token(text),
        }
    }
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    is_token(kind)
        && is_token(subtype)
        && parts.all(|parameter| {
            parameter.trim().split_once('=').is_some_and(|(name, value)| is_token(name) && is_parameter_value(value))
        })
}

/// `POST /files?name=NAME` with the content as the body (`curl --data-binary @app.py`).
#[utoipa::path(post, path = "/files", tag = "files", operation_id = "upload_file",
    params(("name" = String, Query, description = "The file's name: a name, not a path (1 to 255 bytes, no `/`, `\\` or control characters)", example = "app.py")),
    request_body(content = inline(Binary), content_type = "application/octet-stream", description = "The content; an empty or missing body is an empty file"), security(("token" = [])),
    responses((status = 201, body = FileMeta), (status = 400, description = "The body could not be read", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<FileMeta>)> {
    let name = query
        .name
        .or_else(|| headers.get("x-filename").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .ok_or_else(|| ApiError::invalid("name: give the file's name as ?name=… (or an x-filename header)"))?;
    check_name(&name)?;
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the file is over this server's limit of {} bytes", state.limits.max_file_bytes),
            )
        } else {
            ApiError::bad_request(format!("could not read the upload: {rejection}"))
        }
    })?;
    if bytes.len() > state.limits.max_file_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the file is over this server's limit of {} bytes", state.limits.max_file_bytes),
        ));
    }
    let content_type = upload_content_type(&headers);
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let store = state.files.clone();
    let hash = sha256.clone();
    let to_store = bytes.clone();
    tokio::task::spawn_blocking(move || store.put(&hash, &to_store)).await.map_err(|_| ApiError::internal())?.map_err(
        |err| {
            tracing::error!(cause = %err, "could not store a file");
            ApiError::new(ErrorCode::Unavailable, "could not store the file; try again")
        },
    )?;
    match state.db.create_file(user.user_id, &name, bytes.len() as i64, &content_type, &sha256).await {
        Ok(file) => Ok((StatusCode::CREATED, Json(meta(&file)))),
        Err(err) => {
            // Leave no content that no row names.
            if state.db.files_with_content(&sha256).await.unwrap_or(1) == 0 {
                state.files.remove(&sha256);
            }
            Err(err.into())
        }
    }
}

#[utoipa::path(get, path = "/files", tag = "files", operation_id = "list_files", security(("token" = [])), responses((status = 200, body = [FileMeta])))]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Vec<FileMeta>>> {
    Ok(Json(state.db.files_of(user.user_id).await?.iter().map(meta).collect()))
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| ApiError::not_found("no such file"))
}

async fn owned(state: &AppState, user_id: i64, id: &str) -> ApiResult<StoredFile> {
    state.db.file_of(user_id, parse_id(id)?).await?.ok_or_else(|| ApiError::not_found("no such file"))
}

#[utoipa::path(get, path = "/files/{id}", tag = "files", operation_id = "show_file", params(("id" = i64, Path)), security(("token" = [])),
    responses((status = 200, body = FileMeta), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<FileMeta>> {
    Ok(Json(meta(&owned(&state, user.user_id, &id).await?)))
}

/// `GET /files/{id}/content`: the bytes, with the stored content type.
#[utoipa::path(get, path = "/files/{id}/content", tag = "files", operation_id = "file_content", params(("id" = i64, Path)), security(("token" = [])),
    responses((status = 200, description = "The bytes, with the content type they were uploaded with", body = inline(Binary), content_type = "*/*"),
        (status = 404, body = ErrorBody)))]
pub async fn content(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let file = owned(&state, user.user_id, &id).await?;
    let bytes = read_blob(&state, &file).await?;
    Ok(([(header::CONTENT_TYPE, file.content_type)], bytes).into_response())
}

#[utoipa::path(delete, path = "/files/{id}", tag = "files", operation_id = "delete_file", params(("id" = i64, Path)), security(("token" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let file = owned(&state, user.user_id, &id).await?;
    if state.db.delete_file(&file).await? == 0 {
        state.files.remove(&file.sha256);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn read_blob(state: &AppState, file: &StoredFile) -> ApiResult<Vec<u8>> {
    let store = state.files.clone();
    let hash = file.sha256.clone();
    tokio::task::spawn_blocking(move || store.get(&hash)).await.map_err(|_| ApiError::internal())?.map_err(|err| {
        tracing::error!(cause = %err, file = file.id, "stored file content is missing");
        ApiError::new(ErrorCode::Unavailable, "the file's content is unavailable on this server")
    })
}

/// A stored file as text, for a tool run (`file_id`): its name and content.
pub async fn load_text(state: &AppState, user_id: i64, id: i64) -> ApiResult<(String, String)> {
    let file = state.db.file_of(user_id, id).await?.ok_or_else(|| ApiError::not_found("file_id: no such file"))?;
    let bytes = read_blob(state, &file).await?;
    let text = String::from_utf8(bytes).map_err(|_| ApiError::invalid("file_id: the file is not UTF-8 text"))?;
    Ok((file.name, text))
}
