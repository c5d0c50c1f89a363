-- Object keys computed in SQL, so that moving rows to the deletion queue is one set-based
-- statement. They match src/store/layout.rs (a test checks both agree).

-- H[0..2]/H[2..4]/H, H = hex SHA-256 of the decimal project id.
CREATE FUNCTION housekeep_project_dir(project_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT substr(h, 1, 2) || '/' || substr(h, 3, 2) || '/' || h
  FROM (SELECT encode(sha256(project_id::text::bytea), 'hex') AS h) s
$$;

-- The directory of an artifact's object: dirname(file_final_path), or P/<date>/<job_id>/<id>.
CREATE FUNCTION housekeep_artifact_store_dir(project_id bigint, created_at timestamptz, job_id bigint, id bigint, file_final_path text)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN file_final_path IS NOT NULL THEN regexp_replace(file_final_path, '/[^/]*$', '')
              ELSE housekeep_project_dir(project_id) || '/' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY_MM_DD')
                   || '/' || job_id || '/' || id END
$$;

-- The file name of an artifact's object: basename(file_final_path), or file.
CREATE FUNCTION housekeep_artifact_file(file text, file_final_path text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN file_final_path IS NOT NULL THEN regexp_replace(file_final_path, '^.*/', '') ELSE file END
$$;

-- Retries of the deletion queue are spread by attempts; failing rows are easy to find.
CREATE INDEX index_ci_deleted_objects_failing ON ci_deleted_objects (attempts) WHERE attempts > 0;
