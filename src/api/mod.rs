//! Pieces of the HTTP API that serves job artifacts the way GitLab's Job Artifacts API does:
//! checking the requested path ([`artifact_path`]) and streaming one file out of an archive in
//! object storage ([`zip_entry`]).

pub mod artifact_path;
pub mod zip_entry;
