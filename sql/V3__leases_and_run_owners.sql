-- A queue row's lease, as delete-objects set it: `pick_up_at` alone cannot tell a lease from a
-- row queued to be picked up later, and `expedite` must never shorten a lease another worker holds.
ALTER TABLE ci_deleted_objects ADD COLUMN leased_until timestamptz;

-- The backend that holds a run's connection (and its advisory lock): a run whose backend is gone
-- was interrupted (SIGKILL, lost connection), and the next run closes it as such.
ALTER TABLE housekeep_runs ADD COLUMN backend_pid integer;
CREATE INDEX index_housekeep_runs_unfinished ON housekeep_runs (id) WHERE finished_at IS NULL;
