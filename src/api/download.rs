//! Downloads: a job's archive (`GET …/jobs/:job_id/artifacts`, or by ref and job name) and one
//! file out of it (`…/artifacts/*artifact_path`, `…/raw/*artifact_path`), streamed from the store.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;

use super::artifact_path::validate_artifact_path;
use super::auth::{Need, Principal, may_download};
use super::error::ApiError;
use super::lookup::{self, Archive, Job};
use super::zip_entry::{ZipEntryError, open_entry};
use super::Api;
use crate::store::Store;

/// Read size of a local file: large enough that a download costs few system calls.
const LOCAL_CHUNK: usize = 256 * 1024;

type Answer = Result<Response, ApiError>;

/// `GET /projects/:id/jobs/:job_id/artifacts`.
pub async fn archive(State(api): State<Api>, Path((id, job_id)): Path<(String, String)>, headers: HeaderMap, RawQuery(q): RawQuery) -> Answer {
    let (job, access) = job_by_id(&api, &headers, q.as_deref(), &id, &job_id).await?;
    send_archive(&api, downloadable(&job, access)?, "download").await
}

/// `GET /projects/:id/jobs/artifacts/:ref_name/download?job=NAME`.
pub async fn archive_for_ref(
    State(api): State<Api>,
    Path((id, ref_name)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Answer {
    let (job, access) = job_for_ref(&api, &headers, q.as_deref(), &id, &ref_name, &params).await?;
    send_archive(&api, archive_of(&job, access)?, "download_by_ref").await
}

/// `GET /projects/:id/jobs/:job_id/artifacts/*artifact_path`.
pub async fn file(
    State(api): State<Api>,
    Path((id, job_id, path)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Answer {
    let entry = validate_artifact_path(&path).map_err(|_| ApiError::BadRequest("Bad request".into()))?;
    let (job, access) = job_by_id(&api, &headers, q.as_deref(), &id, &job_id).await?;
    send_entry(&api, downloadable(&job, access)?, &entry, "file").await
}

/// `GET /projects/:id/jobs/artifacts/:ref_name/raw/*artifact_path?job=NAME`.
pub async fn file_for_ref(
    State(api): State<Api>,
    Path((id, ref_name, path)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Answer {
    let entry = validate_artifact_path(&path).map_err(|_| ApiError::BadRequest("Bad request".into()))?;
    let (job, access) = job_for_ref(&api, &headers, q.as_deref(), &id, &ref_name, &params).await?;
    send_entry(&api, archive_of(&job, access)?, &entry, "file_by_ref").await
}

/// Who reads, and their access level in the project.
type Access = (Principal, i16);

/// The job of the project, for a reader; 404 for a job id that is not one of the project's.
async fn job_by_id(api: &Api, headers: &HeaderMap, q: Option<&str>, id: &str, job_id: &str) -> Result<(Job, Access), ApiError> {
    let (a, job) = api.admit_job(headers, q, id, job_id, Need::Read).await?;
    Ok((job, (a.who, a.level)))
}

/// The job named `?job=` of the latest successful pipeline of the ref; expiry is not checked
/// (GitLab does not either: the pipeline is the ref's latest, so its artifacts are locked).
async fn job_for_ref(
    api: &Api,
    headers: &HeaderMap,
    q: Option<&str>,
    id: &str,
    ref_name: &str,
    params: &HashMap<String, String>,
) -> Result<(Job, Access), ApiError> {
    let a = api.admit(headers, q, id, Need::Read).await?;
    let name = params.get("job").filter(|n| !n.is_empty()).ok_or_else(|| ApiError::BadRequest("job is missing".into()))?;
    let job = lookup::latest_for_ref(&a.client, a.project.id, ref_name, name).await?.ok_or(ApiError::NotFound("Not Found"))?;
    Ok((job, (a.who, a.level)))
}

/// The job's archive, unless it has none or it expired (and its pipeline is not locked), or
/// its accessibility keeps it from the reader.
fn downloadable(job: &Job, (who, level): Access) -> Result<&Archive, ApiError> {
    let archive = job.downloadable_archive(chrono::Utc::now()).ok_or(ApiError::NotFound("Not Found"))?;
    may_download(archive.accessibility, who, level)?;
    Ok(archive)
}

/// The job's archive, whatever its expiry, unless its accessibility keeps it from the reader.
fn archive_of(job: &Job, (who, level): Access) -> Result<&Archive, ApiError> {
    let archive = job.archive.as_ref().ok_or(ApiError::NotFound("Not Found"))?;
    may_download(archive.accessibility, who, level)?;
    Ok(archive)
}

/// The archive's object, streamed; 404 when the row is there but the object is not. The bytes
/// sent are counted for `endpoint`.
async fn send_archive(api: &Api, archive: &Archive, endpoint: &str) -> Answer {
    let store = api.ctx.stores.for_file_store(archive.file_store);
    let full = store.full_key(&archive.key);
    let sent = api.ctx.metrics.api_sent_bytes.with_label_values(&[endpoint]);
    let count = move |chunk: &bytes::Bytes| sent.inc_by(chunk.len() as u64);
    let (body, size) = if store.is_local() {
        // Read in large chunks (object_store's local stream reads 8 KiB at a time), and never
        // through a symbolic link.
        let (file, size) = store.open_local(&full).await?.ok_or(ApiError::NotFound("Not Found"))?;
        let reader = tokio::fs::File::from_std(file).take(size);
        (Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, LOCAL_CHUNK).inspect_ok(count)), size)
    } else {
        let got = store.get(&full).await?.ok_or(ApiError::NotFound("Not Found"))?;
        let size = got.meta.size;
        (Body::from_stream(got.into_stream().inspect_ok(count)), size)
    };
    Ok(attachment(body, size, "application/octet-stream", &archive.file))
}

/// One file of the archive, streamed out of it; the bytes sent are counted for `endpoint`.
async fn send_entry(api: &Api, archive: &Archive, entry: &str, endpoint: &str) -> Answer {
    let store: &Store = api.ctx.stores.for_file_store(archive.file_store);
    let full = store.full_key(&archive.key);
    // On local disk, the archive must be a regular file reached through no symbolic link (the
    // ranged reads below go through object_store, which would follow one).
    if store.is_local() && store.open_local(&full).await?.is_none() {
        return Err(ApiError::NotFound("Not Found"));
    }
    let location = Store::path(&full)?;
    let found = match open_entry(store.inner().clone(), &location, entry).await {
        Ok(found) => found,
        Err(ZipEntryError::Store { source: object_store::Error::NotFound { .. }, .. }) => None,
        Err(e) => return Err(ApiError::Internal(crate::error::Error::other(format!("archive {}: {e}", archive.key)))),
    };
    let entry_found = found.ok_or(ApiError::NotFound("Not Found"))?;
    let name = entry.rsplit('/').next().unwrap_or(entry);
    let content_type = content_type(name);
    let size = entry_found.size;
    let sent = api.ctx.metrics.api_sent_bytes.with_label_values(&[endpoint]);
    let counted = entry_found.stream.inspect_ok(move |chunk| sent.inc_by(chunk.len() as u64));
    let body = Body::from_stream(counted.map(|r| r.map_err(std::io::Error::other)));
    Ok(attachment(body, size, content_type, name))
}

/// A 200 with the body as a download named `filename`.
fn attachment(body: Body, size: u64, content_type: &'static str, filename: &str) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&disposition(filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `attachment; filename="…"; filename*=UTF-8''…`: quotes and backslashes escaped, control
/// characters and non-ASCII left to the encoded form.
fn disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '_' })
        .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
        .collect();
    let encoded = percent_encoding::utf8_percent_encode(filename, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The content type of a file by its extension, as Workhorse gives it (the common ones).
fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "json" => "application/json",
        "xml" => "text/xml; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_escape_quotes_and_encode_the_rest() {
        assert_eq!(disposition("artifacts.zip"), "attachment; filename=\"artifacts.zip\"; filename*=UTF-8''artifacts%2Ezip");
        let d = disposition("a\"b\\c\r\né.txt");
        assert!(d.starts_with("attachment; filename=\"a\\\"b\\\\c___.txt\""), "{d}");
        assert!(HeaderValue::from_str(&d).is_ok());
    }
}
