-- housekeep's own state, in schema `housekeep` (created before this runs). Nothing here alters or
-- adds to a GitLab table: on a live GitLab database this schema is all housekeep creates.

-- One row per task run (`housekeep_runs` of earlier versions). backend_pid is the PostgreSQL
-- backend that holds the run's connection and advisory lock: a run whose backend is gone was
-- interrupted, and the next run closes it as such.
CREATE TABLE housekeep.runs (
    id          bigserial PRIMARY KEY,
    task        text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text,
    dry_run     boolean NOT NULL DEFAULT false,
    stats       jsonb NOT NULL DEFAULT '{}'::jsonb,
    host        text,
    backend_pid integer
);
CREATE INDEX index_runs_on_task_and_started_at ON housekeep.runs (task, started_at);
CREATE INDEX index_runs_unfinished ON housekeep.runs (id) WHERE finished_at IS NULL;

-- The unlock queue GitLab keeps in Redis (`ci_unlock_pipeline_requests:queue`).
CREATE TABLE housekeep.unlock_requests (
    pipeline_id  bigint PRIMARY KEY,
    partition_id bigint NOT NULL,
    enqueued_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX index_unlock_requests_on_enqueued_at ON housekeep.unlock_requests (enqueued_at, pipeline_id);

-- Pending direct uploads, kept in Redis by GitLab (`pending_direct_uploads`). object_key is the
-- key as written, without the store prefix.
CREATE TABLE housekeep.pending_direct_uploads (
    object_key text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX index_pending_direct_uploads_on_created_at ON housekeep.pending_direct_uploads (created_at);

-- What housekeep knows of a queued object beyond GitLab's columns, keyed by the queue row
-- (`ci_deleted_objects.id`; no foreign key: GitLab's own delete worker removes queue rows too,
-- and what it leaves behind here is swept). size: bytes, for metrics and audit. attempts and
-- last_error: failed deletions, which back off. leased_until: a lease this process set, so that
-- `expedite` never shortens it.
CREATE TABLE housekeep.deleted_object_state (
    deleted_object_id bigint PRIMARY KEY,
    size              bigint,
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text,
    leased_until      timestamptz
);
CREATE INDEX index_deleted_object_state_failing ON housekeep.deleted_object_state (attempts) WHERE attempts > 0;
CREATE INDEX index_deleted_object_state_leased ON housekeep.deleted_object_state (leased_until) WHERE leased_until IS NOT NULL;

-- Object keys computed in SQL, so that moving rows to the deletion queue is one set-based
-- statement. They match src/store/layout.rs (a test checks both agree).

-- H[0..2]/H[2..4]/H, H = hex SHA-256 of the decimal project id.
CREATE FUNCTION housekeep.project_dir(project_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT substr(h, 1, 2) || '/' || substr(h, 3, 2) || '/' || h
  FROM (SELECT encode(sha256(project_id::text::bytea), 'hex') AS h) s
$$;

-- The directory of an artifact's object, as GitLab's uploader builds it: dirname(file_final_path)
-- for direct uploads; `YYYY_MM/<project_id>/<job_id>` for the legacy layout (file_location 1);
-- `P/YYYY_MM_DD/<job_id>/<id>` otherwise (hashed, file_location 2 or NULL). Dates are UTC.
CREATE FUNCTION housekeep.artifact_store_dir(project_id bigint, created_at timestamptz, job_id bigint, id bigint,
                                             file_final_path text, file_location smallint)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN file_final_path IS NOT NULL THEN regexp_replace(file_final_path, '/[^/]*$', '')
              WHEN file_location = 1 THEN to_char(created_at AT TIME ZONE 'UTC', 'YYYY_MM') || '/' || project_id || '/' || job_id
              ELSE housekeep.project_dir(project_id) || '/' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY_MM_DD')
                   || '/' || job_id || '/' || id END
$$;

-- The file name of an artifact's object: basename(file_final_path), or file.
CREATE FUNCTION housekeep.artifact_file(file text, file_final_path text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN file_final_path IS NOT NULL THEN regexp_replace(file_final_path, '^.*/', '') ELSE file END
$$;
