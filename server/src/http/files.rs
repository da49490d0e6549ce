//! `/files`: users' stored files. Metadata in the `files` table; content on disk under the
//! files dir, addressed by account and SHA-256 (so one account's identical uploads are stored
//! once, and no account can tell from an upload's timing whether another has the same content),
//! written atomically.
//!
//! An upload and a delete change the blob's reference count and the file row in one database
//! transaction, and write or remove the bytes while it holds the count's lock (see
//! [`crate::db::BlobTx`]): a failed upload leaves neither bytes nor row, and a delete racing an
//! upload of the same content never leaves a row without its bytes.
//!
//! Content is served as an attachment, with `nosniff` and a `default-src 'none'` content
//! security policy, so an uploaded HTML or SVG file never runs as a page of this server.

use std::path::{Path, PathBuf};

use aniate_proto::{
    api::FileMeta,
    error::{ErrorBody, ErrorCode},
};
use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
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

/// Content-addressed storage on disk: `<dir>/<first two hex digits>/<account>-<sha256>`, or
/// `<dir>/<first two hex digits>/<sha256>` for a blob shared by every account before migration
/// 0005 (blob owner 0).
#[derive(Debug, Clone)]
pub struct FileStore {
    pub dir: PathBuf,
}

impl FileStore {
    fn path(&self, blob_owner_id: i64, sha256: &str) -> PathBuf {
        let shard = self.dir.join(&sha256[..2]);
        if blob_owner_id == 0 { shard.join(sha256) } else { shard.join(format!("{blob_owner_id}-{sha256}")) }
    }

    /// A name of its own next to `path`, for a write or a delete in progress.
    fn temporary_path(path: &Path, suffix: &str) -> PathBuf {
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("blob");
        path.with_file_name(format!(".{name}.{}.{:016x}.{suffix}", std::process::id(), rand::random::<u64>()))
    }

    /// Stores `bytes` as the blob; a blob already on disk is not written again.
    fn put(&self, blob_owner_id: i64, sha256: &str, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.path(blob_owner_id, sha256);
        if path.is_file() {
            return Ok(());
        }
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        // A name of its own per write: two replicas writing the same blob at once must not write
        // into (and rename away) the same temporary file.
        let temp = Self::temporary_path(&path, "tmp");
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

    fn get(&self, blob_owner_id: i64, sha256: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(blob_owner_id, sha256))
    }

    fn remove(&self, blob_owner_id: i64, sha256: &str) {
        let _ = std::fs::remove_file(self.path(blob_owner_id, sha256));
    }

    /// Moves the blob aside, to be removed once the delete commits ([`Self::finish_removal`]) or
    /// put back if it does not ([`Self::undo_removal`]). `None` when there was no blob.
    fn set_aside(&self, blob_owner_id: i64, sha256: &str) -> Option<PathBuf> {
        let path = self.path(blob_owner_id, sha256);
        let aside = Self::temporary_path(&path, "deleted");
        std::fs::rename(&path, &aside).ok().map(|()| aside)
    }

    fn finish_removal(aside: &Path) {
        let _ = std::fs::remove_file(aside);
    }

    fn undo_removal(&self, blob_owner_id: i64, sha256: &str, aside: &Path) {
        if let Err(err) = std::fs::rename(aside, self.path(blob_owner_id, sha256)) {
            tracing::error!(cause = %err, "could not put back the content of a file whose delete failed");
        }
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

/// Counts an upload against the per-minute limit (429), then refuses it with 413 when it would
/// take the user past their plan's stored bytes or files, saying what is used and allowed.
/// Checked before the upload's transaction: parallel uploads can overshoot the quota by at most
/// one file each.
async fn enforce_storage_quota(state: &AppState, user: &AuthUser, size: u64) -> ApiResult<()> {
    super::run::enforce_limits(state, user, "upload").await?;
    let plan = state.limiter.plan(&state.db, &user.plan).await?;
    let (bytes, files) = state.db.stored_by(user.user_id).await?;
    if files + 1 > plan.max_stored_files || bytes + size > plan.max_stored_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "storage quota: the {} plan allows {} bytes in at most {} files; you store {bytes} bytes in {files} files \
                 and this upload is {size} bytes; delete files with `ant files rm`",
                plan.name, plan.max_stored_bytes, plan.max_stored_files
            ),
        ));
    }
    Ok(())
}

/// `POST /files?name=NAME` with the content as the body (`curl --data-binary @app.py`).
#[utoipa::path(post, path = "/files", tag = "files", operation_id = "upload_file",
    params(("name" = String, Query, description = "The file's name: a name, not a path (1 to 255 bytes, no `/`, `\\` or control characters)", example = "app.py")),
    request_body(content = inline(Binary), content_type = "application/octet-stream", description = "The content; an empty or missing body is an empty file"), security(("token" = [])),
    responses((status = 201, body = FileMeta), (status = 400, description = "The body could not be read", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
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
    enforce_storage_quota(&state, &user, bytes.len() as u64).await?;
    let content_type = upload_content_type(&headers);
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let owner_id = user.user_id;
    let (mut tx, refs) = state.db.reference_blob(owner_id, &sha256).await?;
    let store = state.files.clone();
    let hash = sha256.clone();
    let to_store = bytes.clone();
    // Written while the transaction holds the blob's count: no delete of the same content can
    // remove it before the row is committed.
    tokio::task::spawn_blocking(move || store.put(owner_id, &hash, &to_store))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|err| {
            tracing::error!(cause = %err, "could not store a file");
            ApiError::new(ErrorCode::Unavailable, "could not store the file; try again")
        })?;
    let file = match tx.insert_file(owner_id, &name, bytes.len() as i64, &content_type, &sha256).await {
        Ok(file) => file,
        Err(err) => {
            // Leave no content that no row names: the bytes are new (the count was 1), and the
            // transaction, still holding the count, rolls back when dropped.
            if refs == 1 {
                state.files.remove(owner_id, &sha256);
            }
            return Err(err.into());
        }
    };
    // A failed commit can leave bytes no row names (the next upload of them reuses them), never
    // a row without its bytes.
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(meta(&file))))
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

/// `GET /files/{id}/content`: the bytes, with the stored content type, as an attachment that a
/// browser never sniffs or runs.
#[utoipa::path(get, path = "/files/{id}/content", tag = "files", operation_id = "file_content", params(("id" = i64, Path)), security(("token" = [])),
    responses((status = 200, description = "The bytes, with the content type they were uploaded with, as an attachment (`Content-Disposition`), with `X-Content-Type-Options: nosniff` and `Content-Security-Policy: default-src 'none'`", body = inline(Binary), content_type = "*/*"),
        (status = 404, body = ErrorBody)))]
pub async fn content(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let file = owned(&state, user.user_id, &id).await?;
    let bytes = read_blob(&state, &file).await?;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_str(&file.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
        ),
        (header::CONTENT_DISPOSITION, content_disposition(&file.name)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'")),
    ];
    Ok((headers, bytes).into_response())
}

/// `attachment` with the file's name: a plain ASCII `filename` for old clients (every byte that
/// is not printable ASCII, and `"`, `\`, `%`, becomes `_`) and the exact name as
/// `filename*=UTF-8''…` (RFC 6266, RFC 8187 percent-encoding).
fn content_disposition(name: &str) -> HeaderValue {
    let fallback: String = name
        .chars()
        .map(|c| if (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%')) || c == ' ' { c } else { '_' })
        .collect();
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or(HeaderValue::from_static("attachment"))
}

#[utoipa::path(delete, path = "/files/{id}", tag = "files", operation_id = "delete_file", params(("id" = i64, Path)), security(("token" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let file = owned(&state, user.user_id, &id).await?;
    let Some((tx, remaining)) = state.db.delete_file(&file).await? else {
        return Err(ApiError::not_found("no such file"));
    };
    // The last row naming the blob: its bytes go while the transaction holds the blob's count,
    // so an upload of the same content waits and then writes them again.
    let aside = if remaining == 0 { state.files.set_aside(file.blob_owner_id(), &file.sha256) } else { None };
    match tx.commit().await {
        Ok(()) => {
            if let Some(aside) = aside {
                FileStore::finish_removal(&aside);
            }
            Ok(StatusCode::NO_CONTENT)
        }
        Err(err) => {
            if let Some(aside) = aside {
                state.files.undo_removal(file.blob_owner_id(), &file.sha256, &aside);
            }
            Err(err.into())
        }
    }
}

async fn read_blob(state: &AppState, file: &StoredFile) -> ApiResult<Vec<u8>> {
    let store = state.files.clone();
    let (blob_owner_id, hash) = (file.blob_owner_id(), file.sha256.clone());
    tokio::task::spawn_blocking(move || store.get(blob_owner_id, &hash))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|err| {
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

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn content_disposition_is_an_attachment_with_a_safe_and_an_exact_name() {
        assert_eq!(content_disposition("app.py"), "attachment; filename=\"app.py\"; filename*=UTF-8''app.py");
        assert_eq!(
            content_disposition("résumé \"v2\" 100%.html"),
            "attachment; filename=\"r_sum_ _v2_ 100_.html\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22%20100%25.html"
        );
        assert_eq!(content_disposition("a;b\\c"), "attachment; filename=\"a;b_c\"; filename*=UTF-8''a%3Bb%5Cc");
    }
}
