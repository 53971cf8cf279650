//! Small helpers with no MCM logic of their own.

pub mod finalizers;
pub mod go_duration;
pub mod similarity;
