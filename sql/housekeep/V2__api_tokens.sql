-- Authentication of the Job Artifacts API on a standalone database (on a live GitLab database,
-- GitLab's own personal_access_tokens, project_authorizations and job tokens are read instead,
-- and these tables stay empty). Tokens are stored only as the hex SHA-256 of the token: the
-- token itself is shown once, by `housekeep token create`, and never again.

-- A user of the API (GitLab's `users`, reduced to what authorisation needs).
CREATE TABLE housekeep.api_users (
    id         bigserial PRIMARY KEY,
    username   text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A user's role in a project, with GitLab's access levels: 10 guest, 20 reporter,
-- 30 developer, 40 maintainer, 50 owner (GitLab's `project_authorizations`).
CREATE TABLE housekeep.project_members (
    user_id      bigint NOT NULL REFERENCES housekeep.api_users (id) ON DELETE CASCADE,
    project_id   bigint NOT NULL,
    access_level smallint NOT NULL CHECK (access_level IN (10, 15, 20, 30, 40, 50)),
    PRIMARY KEY (user_id, project_id)
);
CREATE INDEX index_project_members_on_project_id ON housekeep.project_members (project_id);

-- Personal access tokens (GitLab's `personal_access_tokens`): valid until expires_at (NULL:
-- never) and unless revoked.
CREATE TABLE housekeep.personal_access_tokens (
    id           bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES housekeep.api_users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    token_digest text NOT NULL UNIQUE,
    expires_at   timestamptz,
    revoked      boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX index_personal_access_tokens_on_user_id ON housekeep.personal_access_tokens (user_id);

-- Job tokens (GitLab's CI_JOB_TOKEN): a job's token authenticates only while the job is running.
CREATE TABLE housekeep.job_tokens (
    token_digest text PRIMARY KEY,
    job_id       bigint NOT NULL,
    partition_id bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX index_job_tokens_on_job_id ON housekeep.job_tokens (job_id);
