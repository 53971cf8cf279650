//! The process around the reconcilers: flags, clients, leader election, the HTTP
//! endpoint, metrics, and `run`, which wires the controllers together.

pub mod clients;
pub mod driver_metrics;
pub mod go_flags;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod options;
pub mod process_metrics;
pub mod request_counts;
pub mod run;
pub mod token_bucket;
