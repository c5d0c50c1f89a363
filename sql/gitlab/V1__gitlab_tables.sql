-- GitLab's own tables, for a standalone database: the columns housekeep uses, with GitLab's
-- names, types, defaults, checks, keys, partitions, id triggers and indexes, as in GitLab's
-- db/structure.sql (late 2025). Never applied to a database that already has GitLab's tables.
-- Enum values: file_type archive 1, metadata 2, trace 3, junit 4, …; file_format raw 1, zip 2,
-- gzip 3; file_location legacy 1, hashed 2 (NULL = hashed); file_store local 1, remote 2;
-- locked unlocked 0, artifacts_locked 1, unknown 2 (pipelines: 0 or 1).

CREATE SCHEMA IF NOT EXISTS gitlab_partitions_dynamic;

-- Ids of the partitioned tables come from the legacy sequences, assigned by a trigger (an id
-- given explicitly is ignored, as in GitLab).
CREATE SEQUENCE ci_pipelines_id_seq;
CREATE SEQUENCE ci_builds_id_seq;
CREATE SEQUENCE ci_job_artifacts_id_seq;

CREATE FUNCTION assign_p_ci_pipelines_id_value() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
IF NEW."id" IS NOT NULL THEN
  RAISE WARNING 'Manually assigning ids is not allowed, the value will be ignored';
END IF;
NEW."id" := nextval('ci_pipelines_id_seq'::regclass);
RETURN NEW;
END
$$;

CREATE FUNCTION assign_p_ci_builds_id_value() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
IF NEW."id" IS NOT NULL THEN
  RAISE WARNING 'Manually assigning ids is not allowed, the value will be ignored';
END IF;
NEW."id" := nextval('ci_builds_id_seq'::regclass);
RETURN NEW;
END
$$;

CREATE FUNCTION assign_p_ci_job_artifacts_id_value() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
IF NEW."id" IS NOT NULL THEN
  RAISE WARNING 'Manually assigning ids is not allowed, the value will be ignored';
END IF;
NEW."id" := nextval('ci_job_artifacts_id_seq'::regclass);
RETURN NEW;
END
$$;

CREATE TABLE projects (
    id bigserial PRIMARY KEY,
    name character varying,
    path character varying,
    created_at timestamp without time zone,
    updated_at timestamp without time zone,
    namespace_id bigint NOT NULL,
    visibility_level integer DEFAULT 0 NOT NULL,
    archived boolean DEFAULT false NOT NULL
);

CREATE TABLE routes (
    id bigserial PRIMARY KEY,
    source_id bigint NOT NULL,
    source_type character varying NOT NULL,
    path character varying NOT NULL,
    created_at timestamp without time zone,
    updated_at timestamp without time zone,
    name character varying,
    namespace_id bigint,
    CONSTRAINT check_af84c6c93f CHECK ((namespace_id IS NOT NULL))
);
CREATE UNIQUE INDEX index_routes_on_path ON routes USING btree (path);
CREATE UNIQUE INDEX index_routes_on_source_type_and_source_id ON routes USING btree (source_type, source_id);

CREATE TABLE project_ci_cd_settings (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL,
    keep_latest_artifact boolean DEFAULT true NOT NULL
);
CREATE UNIQUE INDEX index_project_ci_cd_settings_on_project_id ON project_ci_cd_settings USING btree (project_id);

CREATE TABLE project_statistics (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL,
    namespace_id bigint NOT NULL,
    storage_size bigint DEFAULT 0 NOT NULL,
    repository_size bigint DEFAULT 0 NOT NULL,
    build_artifacts_size bigint DEFAULT 0 NOT NULL,
    pipeline_artifacts_size bigint DEFAULT 0 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE UNIQUE INDEX index_project_statistics_on_project_id ON project_statistics USING btree (project_id);
CREATE INDEX index_project_statistics_on_namespace_id ON project_statistics USING btree (namespace_id);

CREATE TABLE ci_refs (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL,
    lock_version integer DEFAULT 0 NOT NULL,
    status smallint DEFAULT 0 NOT NULL,
    ref_path text NOT NULL
);
CREATE UNIQUE INDEX index_ci_refs_on_project_id_and_ref_path ON ci_refs USING btree (project_id, ref_path);

-- status: created, pending, running, success, failed, canceled, skipped, manual, scheduled, …
-- source: push 1, web 2, trigger 3, schedule 4, api 5, external 6, pipeline 7, chat 8, webide 9,
-- merge_request_event 10, external_pull_request_event 11, parent_pipeline 12, …
CREATE TABLE p_ci_pipelines (
    ref character varying,
    sha character varying,
    created_at timestamp without time zone,
    updated_at timestamp without time zone,
    tag boolean DEFAULT false,
    project_id bigint,
    status character varying,
    finished_at timestamp without time zone,
    source integer,
    merge_request_id bigint,
    ci_ref_id bigint,
    locked smallint DEFAULT 1 NOT NULL,
    partition_id bigint NOT NULL,
    id bigint NOT NULL,
    CONSTRAINT check_2ba2a044b9 CHECK ((project_id IS NOT NULL)),
    PRIMARY KEY (id, partition_id)
)
PARTITION BY LIST (partition_id);
ALTER SEQUENCE ci_pipelines_id_seq OWNED BY p_ci_pipelines.id;
CREATE TABLE ci_pipelines PARTITION OF p_ci_pipelines FOR VALUES IN ('100', '101');
ALTER TABLE p_ci_pipelines ADD CONSTRAINT fk_d80e161c54 FOREIGN KEY (ci_ref_id) REFERENCES ci_refs(id) ON DELETE SET NULL;
CREATE TABLE gitlab_partitions_dynamic.ci_pipelines_102 PARTITION OF p_ci_pipelines FOR VALUES IN ('102');
CREATE TRIGGER assign_p_ci_pipelines_id_trigger BEFORE INSERT ON p_ci_pipelines FOR EACH ROW EXECUTE FUNCTION assign_p_ci_pipelines_id_value();
CREATE INDEX p_ci_pipelines_ci_ref_id_id_idx ON p_ci_pipelines USING btree (ci_ref_id, id) WHERE (locked = 1);
CREATE INDEX p_ci_pipelines_ci_ref_id_id_source_status_idx ON p_ci_pipelines USING btree (ci_ref_id, id DESC, source, status) WHERE (ci_ref_id IS NOT NULL);
CREATE INDEX p_ci_pipelines_project_id_id_idx ON p_ci_pipelines USING btree (project_id, id DESC);
CREATE INDEX p_ci_pipelines_project_id_ref_id_idx ON p_ci_pipelines USING btree (project_id, ref, id DESC);
CREATE INDEX p_ci_pipelines_project_id_ref_status_id_idx ON p_ci_pipelines USING btree (project_id, ref, status, id);

-- type: 'Ci::Build', 'Ci::Bridge', …; commit_id is the pipeline id (same partition).
CREATE TABLE p_ci_builds (
    status character varying,
    finished_at timestamp without time zone,
    created_at timestamp without time zone,
    updated_at timestamp without time zone,
    name character varying,
    tag boolean,
    ref character varying,
    type character varying,
    erased_at timestamp without time zone,
    artifacts_expire_at timestamp without time zone,
    retried boolean,
    token_encrypted character varying,
    id bigint NOT NULL,
    partition_id bigint NOT NULL,
    commit_id bigint,
    erased_by_id bigint,
    project_id bigint,
    CONSTRAINT check_9aa9432137 CHECK ((project_id IS NOT NULL)),
    PRIMARY KEY (id, partition_id)
)
PARTITION BY LIST (partition_id);
ALTER SEQUENCE ci_builds_id_seq OWNED BY p_ci_builds.id;
CREATE TABLE ci_builds PARTITION OF p_ci_builds FOR VALUES IN ('100', '101');
CREATE TABLE gitlab_partitions_dynamic.ci_builds_102 PARTITION OF p_ci_builds FOR VALUES IN ('102');
CREATE TRIGGER assign_p_ci_builds_id_trigger BEFORE INSERT ON p_ci_builds FOR EACH ROW EXECUTE FUNCTION assign_p_ci_builds_id_value();
CREATE INDEX p_ci_builds_commit_id_status_type_idx ON p_ci_builds USING btree (commit_id, status, type);
CREATE INDEX p_ci_builds_project_id_id_idx ON p_ci_builds USING btree (project_id, id);
CREATE INDEX p_ci_builds_project_id_name_ref_idx ON p_ci_builds USING btree (project_id, name, ref)
    WHERE (((type)::text = 'Ci::Build'::text) AND ((status)::text = 'success'::text) AND ((retried = false) OR (retried IS NULL)));
CREATE UNIQUE INDEX p_ci_builds_token_encrypted_partition_id_idx ON p_ci_builds USING btree (token_encrypted, partition_id) WHERE (token_encrypted IS NOT NULL);

CREATE TABLE p_ci_job_artifacts (
    project_id bigint NOT NULL,
    file_type integer NOT NULL,
    size bigint,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    expire_at timestamp with time zone,
    file character varying,
    file_store integer DEFAULT 1,
    file_sha256 bytea,
    file_format smallint,
    file_location smallint,
    id bigint NOT NULL,
    job_id bigint NOT NULL,
    locked smallint DEFAULT 2,
    partition_id bigint NOT NULL,
    accessibility smallint DEFAULT 0 NOT NULL,
    file_final_path text,
    CONSTRAINT check_27f0f6dbab CHECK ((file_store IS NOT NULL)),
    CONSTRAINT check_9f04410cf4 CHECK ((char_length(file_final_path) <= 1024)),
    PRIMARY KEY (id, partition_id)
)
PARTITION BY LIST (partition_id);
ALTER SEQUENCE ci_job_artifacts_id_seq OWNED BY p_ci_job_artifacts.id;
CREATE TABLE ci_job_artifacts PARTITION OF p_ci_job_artifacts FOR VALUES IN ('100', '101');
CREATE TABLE gitlab_partitions_dynamic.ci_job_artifacts_102 PARTITION OF p_ci_job_artifacts FOR VALUES IN ('102');
CREATE TRIGGER assign_p_ci_job_artifacts_id_trigger BEFORE INSERT ON p_ci_job_artifacts FOR EACH ROW EXECUTE FUNCTION assign_p_ci_job_artifacts_id_value();
CREATE UNIQUE INDEX p_ci_job_artifacts_job_id_file_type_partition_id_idx ON p_ci_job_artifacts USING btree (job_id, file_type, partition_id);
CREATE INDEX p_ci_job_artifacts_partition_id_job_id_idx ON p_ci_job_artifacts USING btree (partition_id, job_id);
-- expire: expire_at < start AND locked = 0 AND file_type <> 3.
CREATE INDEX p_ci_job_artifacts_expire_at_idx ON p_ci_job_artifacts USING btree (expire_at)
    WHERE ((locked = 0) AND (file_type <> 3) AND (expire_at IS NOT NULL));
-- unknown: expire_at < start AND locked = 2 ORDER BY expire_at.
CREATE INDEX p_ci_job_artifacts_expire_at_job_id_idx1 ON p_ci_job_artifacts USING btree (expire_at, job_id)
    WHERE ((locked = 2) AND (expire_at IS NOT NULL));
CREATE INDEX p_ci_job_artifacts_expire_at_job_id_idx ON p_ci_job_artifacts USING btree (expire_at, job_id);
-- orphans: is this @final key referenced?
CREATE INDEX p_ci_job_artifacts_file_final_path_idx ON p_ci_job_artifacts USING btree (file_final_path) WHERE (file_final_path IS NOT NULL);
CREATE INDEX p_ci_job_artifacts_project_id_id_idx1 ON p_ci_job_artifacts USING btree (project_id, id);
CREATE INDEX p_ci_job_artifacts_project_id_created_at_id_idx ON p_ci_job_artifacts USING btree (project_id, created_at, id);
CREATE INDEX p_ci_job_artifacts_project_id_file_type_id_idx ON p_ci_job_artifacts USING btree (project_id, file_type, id);

-- A job's artifacts go with it, and a pipeline's jobs with the pipeline (within a partition).
ALTER TABLE p_ci_builds ADD CONSTRAINT fk_rails_d739f46384_p FOREIGN KEY (partition_id, commit_id)
    REFERENCES p_ci_pipelines(partition_id, id) ON UPDATE CASCADE ON DELETE CASCADE;
ALTER TABLE p_ci_job_artifacts ADD CONSTRAINT fk_rails_c5137cb2c1_p FOREIGN KEY (partition_id, job_id)
    REFERENCES p_ci_builds(partition_id, id) ON UPDATE CASCADE ON DELETE CASCADE;

-- Parent/child and multi-project pipeline links (not partitioned).
CREATE TABLE ci_sources_pipelines (
    id bigserial PRIMARY KEY,
    project_id bigint,
    source_project_id bigint,
    source_job_id bigint,
    partition_id bigint NOT NULL,
    source_partition_id bigint NOT NULL,
    pipeline_id bigint,
    source_pipeline_id bigint
);
CREATE INDEX index_ci_sources_pipelines_on_pipeline_id ON ci_sources_pipelines USING btree (pipeline_id);
CREATE INDEX index_ci_sources_pipelines_on_project_id ON ci_sources_pipelines USING btree (project_id);
CREATE INDEX index_ci_sources_pipelines_on_source_pipeline_id ON ci_sources_pipelines USING btree (source_pipeline_id);

-- Pipeline-level artifacts, stored under P/pipelines/…: never touched by job-artifact cleanup,
-- only unlocked with their pipeline.
CREATE TABLE ci_pipeline_artifacts (
    id bigserial PRIMARY KEY,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    pipeline_id bigint NOT NULL,
    project_id bigint NOT NULL,
    size integer NOT NULL,
    file_store smallint DEFAULT 1 NOT NULL,
    file_type smallint NOT NULL,
    file_format smallint NOT NULL,
    file text,
    expire_at timestamp with time zone,
    locked smallint DEFAULT 2,
    partition_id bigint NOT NULL,
    CONSTRAINT check_191b5850ec CHECK ((char_length(file) <= 255)),
    CONSTRAINT check_abeeb71caf CHECK ((file IS NOT NULL))
);
CREATE UNIQUE INDEX index_ci_pipeline_artifacts_on_pipeline_id_and_file_type ON ci_pipeline_artifacts USING btree (pipeline_id, file_type);
CREATE INDEX index_ci_pipeline_artifacts_on_project_id ON ci_pipeline_artifacts USING btree (project_id);

-- The queue of files to remove, exactly GitLab's: no foreign keys, no size, no attempts.
CREATE TABLE ci_deleted_objects (
    id bigserial PRIMARY KEY,
    file_store smallint DEFAULT 1 NOT NULL,
    pick_up_at timestamp with time zone DEFAULT now() NOT NULL,
    store_dir text NOT NULL,
    file text NOT NULL,
    project_id bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT check_5e151d6912 CHECK ((char_length(store_dir) <= 1024)),
    CONSTRAINT check_98f90d6c53 CHECK ((project_id IS NOT NULL))
);
CREATE INDEX index_ci_deleted_objects_on_pick_up_at ON ci_deleted_objects USING btree (pick_up_at);
CREATE INDEX index_ci_deleted_objects_on_project_id ON ci_deleted_objects USING btree (project_id);
