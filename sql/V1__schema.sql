-- The CI data model, with GitLab's table and column names, enum values and defaults (SPEC §1),
-- so that GitLab's documented queries run unchanged. Indexes serve each task's hot query.

CREATE TABLE projects (
    id                   bigserial PRIMARY KEY,
    full_path            text NOT NULL UNIQUE,
    keep_latest_artifact boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now()
);

-- status: created, pending, running, success, failed, canceled, skipped, manual, scheduled.
-- source: GitLab's enum (push 1, web 2, trigger 3, schedule 4, api 5, external 6, pipeline 7,
-- chat 8, merge_request_event 10, external_pull_request_event 11, parent_pipeline 12, ...).
-- locked: 0 unlocked, 1 artifacts_locked; it only ever moves 1 -> 0.
CREATE TABLE ci_pipelines (
    id          bigserial PRIMARY KEY,
    project_id  bigint NOT NULL,
    ref         text,
    tag         boolean NOT NULL DEFAULT false,
    sha         text,
    status      text NOT NULL DEFAULT 'created',
    source      smallint,
    locked      smallint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
-- Keep-latest: the pipelines of one ref, newest first.
CREATE INDEX index_ci_pipelines_on_project_id_and_ref_and_id ON ci_pipelines (project_id, ref, id);
-- Pipelines still holding their artifacts.
CREATE INDEX index_ci_pipelines_locked ON ci_pipelines (project_id, ref, id) WHERE locked = 1;

-- commit_id is the pipeline id (GitLab's name).
CREATE TABLE ci_builds (
    id                  bigserial PRIMARY KEY,
    project_id          bigint NOT NULL,
    commit_id           bigint,
    name                text,
    ref                 text,
    status              text NOT NULL DEFAULT 'created',
    created_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    erased_at           timestamptz,
    artifacts_expire_at timestamptz
);
CREATE INDEX index_ci_builds_on_commit_id ON ci_builds (commit_id);
CREATE INDEX index_ci_builds_on_project_id_and_id ON ci_builds (project_id, id);

-- file_type: archive 1, metadata 2, trace 3, junit 4, ... (GitLab's enum).
-- file_format: raw 1, zip 2, gzip 3. file_location: legacy 1, hashed 2 (NULL = hashed).
-- file_store: local 1, remote 2. locked: unlocked 0, artifacts_locked 1, unknown 2.
CREATE TABLE ci_job_artifacts (
    id              bigserial PRIMARY KEY,
    project_id      bigint NOT NULL,
    job_id          bigint NOT NULL,
    file_type       smallint NOT NULL,
    file_format     smallint,
    file_location   smallint,
    size            bigint,
    file_store      smallint NOT NULL DEFAULT 1,
    file            text,
    file_final_path text CHECK (char_length(file_final_path) <= 1024),
    file_sha256     bytea,
    expire_at       timestamptz,
    locked          smallint NOT NULL DEFAULT 2,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ci_job_artifacts_locked_check CHECK (locked IN (0, 1, 2)),
    CONSTRAINT ci_job_artifacts_file_store_check CHECK (file_store IN (1, 2))
);
CREATE UNIQUE INDEX index_ci_job_artifacts_on_job_id_and_file_type ON ci_job_artifacts (job_id, file_type);
CREATE INDEX index_ci_job_artifacts_on_project_id_and_id ON ci_job_artifacts (project_id, id);
-- expire: expire_at < start AND locked = 0 AND file_type <> 3.
CREATE INDEX index_ci_job_artifacts_expire_at_unlocked_non_trace
    ON ci_job_artifacts (expire_at) WHERE locked = 0 AND file_type <> 3;
-- unknown: expire_at < start AND locked = 2 ORDER BY expire_at.
CREATE INDEX index_ci_job_artifacts_expire_at_unknown
    ON ci_job_artifacts (expire_at) WHERE locked = 2 AND expire_at IS NOT NULL;
-- orphans: is this @final key referenced?
CREATE INDEX index_ci_job_artifacts_on_file_final_path
    ON ci_job_artifacts (file_final_path) WHERE file_final_path IS NOT NULL;

-- The queue of files to remove. No foreign keys: the artifact row is gone by the time this is.
-- size, attempts and last_error are housekeep's additions.
CREATE TABLE ci_deleted_objects (
    id         bigserial PRIMARY KEY,
    file_store smallint NOT NULL DEFAULT 1,
    pick_up_at timestamptz NOT NULL DEFAULT now(),
    store_dir  text NOT NULL CHECK (char_length(store_dir) <= 1024),
    file       text NOT NULL,
    project_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    size       bigint,
    attempts   integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX index_ci_deleted_objects_on_pick_up_at ON ci_deleted_objects (pick_up_at);
-- orphans: is this key already queued?
CREATE INDEX index_ci_deleted_objects_on_file_and_store_dir ON ci_deleted_objects (file, store_dir);

CREATE TABLE project_statistics (
    id                   bigserial PRIMARY KEY,
    project_id           bigint NOT NULL UNIQUE,
    build_artifacts_size bigint NOT NULL DEFAULT 0
);

-- Kept in Redis by GitLab.
CREATE TABLE ci_unlock_pipeline_requests (
    pipeline_id bigint PRIMARY KEY,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX index_ci_unlock_pipeline_requests_on_enqueued_at ON ci_unlock_pipeline_requests (enqueued_at);

-- Kept in Redis by GitLab. object_key is the full key as written, without the store prefix.
CREATE TABLE pending_direct_uploads (
    object_key text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX index_pending_direct_uploads_on_created_at ON pending_direct_uploads (created_at);

-- housekeep's own state.
CREATE TABLE housekeep_runs (
    id          bigserial PRIMARY KEY,
    task        text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text,
    dry_run     boolean NOT NULL DEFAULT false,
    stats       jsonb NOT NULL DEFAULT '{}'::jsonb,
    host        text
);
CREATE INDEX index_housekeep_runs_on_task_and_started_at ON housekeep_runs (task, started_at);
