//! The end-to-end suite lives in `tests/`; see README.md ("End-to-end tests").
