//! Why a store could not be opened. A leaf module: [`crate::error`] wraps it without depending on
//! the store.

/// Why a store whose URL is valid could not be opened (reported with the URL, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("directory {} does not exist", .0.display())]
    NoDirectory(std::path::PathBuf),
    #[error("cannot open {}: {source}", .root.display())]
    Root {
        root: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// object_store refused the configuration (credentials, region, endpoint).
    #[error("{0}")]
    Build(#[source] object_store::Error),
}

