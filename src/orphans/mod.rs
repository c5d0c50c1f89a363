//! Finding what the database and the stores disagree on.

pub mod verify;
