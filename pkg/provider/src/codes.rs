//! MCM machine codes and the error every driver call answers with.
//!
//! MCM's machine controller decides retries, phases and autoscaler back-off from the
//! code alone, and stores the code's name in `lastOperation.errorCode`, so the names
//! printed here must be exactly MCM's.

use std::fmt;

use crate::driver::GetMachineStatusResponse;

/// MCM's `machinecodes/codes.Code`, numbered as MCM numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum MachineCode {
    Ok = 0,
    Canceled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
    Uninitialized = 17,
}

impl MachineCode {
    pub const ALL: [MachineCode; 18] = [
        MachineCode::Ok,
        MachineCode::Canceled,
        MachineCode::Unknown,
        MachineCode::InvalidArgument,
        MachineCode::DeadlineExceeded,
        MachineCode::NotFound,
        MachineCode::AlreadyExists,
        MachineCode::PermissionDenied,
        MachineCode::ResourceExhausted,
        MachineCode::FailedPrecondition,
        MachineCode::Aborted,
        MachineCode::OutOfRange,
        MachineCode::Unimplemented,
        MachineCode::Internal,
        MachineCode::Unavailable,
        MachineCode::DataLoss,
        MachineCode::Unauthenticated,
        MachineCode::Uninitialized,
    ];

    /// The name MCM prints (`Code.String()`), stored in `lastOperation.errorCode`.
    pub fn name(self) -> &'static str {
        match self {
            MachineCode::Ok => "OK",
            MachineCode::Canceled => "Canceled",
            MachineCode::Unknown => "Unknown",
            MachineCode::InvalidArgument => "InvalidArgument",
            MachineCode::DeadlineExceeded => "DeadlineExceeded",
            MachineCode::NotFound => "NotFound",
            MachineCode::AlreadyExists => "AlreadyExists",
            MachineCode::PermissionDenied => "PermissionDenied",
            MachineCode::ResourceExhausted => "ResourceExhausted",
            MachineCode::FailedPrecondition => "FailedPrecondition",
            MachineCode::Aborted => "Aborted",
            MachineCode::OutOfRange => "OutOfRange",
            MachineCode::Unimplemented => "Unimplemented",
            MachineCode::Internal => "Internal",
            MachineCode::Unavailable => "Unavailable",
            MachineCode::DataLoss => "DataLoss",
            MachineCode::Unauthenticated => "Unauthenticated",
            MachineCode::Uninitialized => "Uninitialized",
        }
    }

    /// Numeric value, as carried on the wire by MCM and the cmi.v1 protocol.
    pub fn value(self) -> u32 {
        self as u32
    }

    pub fn from_value(value: u32) -> Option<MachineCode> {
        MachineCode::ALL.get(value as usize).copied()
    }

    pub fn from_name(name: &str) -> Option<MachineCode> {
        MachineCode::ALL
            .into_iter()
            .find(|code| code.name() == name)
    }
}

impl fmt::Display for MachineCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed driver call: MCM's `status.Status`.
///
/// `Uninitialized` from GetMachineStatus carries the status response, because MCM then
/// runs InitializeMachine with the providerID and node name it reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("machine codes error: code = [{code}] message = [{message}]")]
pub struct MachineError {
    pub code: MachineCode,
    pub message: String,
    pub uninitialized: Option<Box<GetMachineStatusResponse>>,
}

impl MachineError {
    pub fn new(code: MachineCode, message: impl Into<String>) -> Self {
        MachineError {
            code,
            message: message.into(),
            uninitialized: None,
        }
    }

    /// An `Uninitialized` error carrying the status MCM needs for InitializeMachine.
    pub fn uninitialized(message: impl Into<String>, status: GetMachineStatusResponse) -> Self {
        MachineError {
            code: MachineCode::Uninitialized,
            message: message.into(),
            uninitialized: Some(Box::new(status)),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(MachineCode::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(MachineCode::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(MachineCode::Internal, message)
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(MachineCode::Unimplemented, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_names_match_mcm() {
        let expected = [
            (0, "OK"),
            (1, "Canceled"),
            (2, "Unknown"),
            (3, "InvalidArgument"),
            (4, "DeadlineExceeded"),
            (5, "NotFound"),
            (6, "AlreadyExists"),
            (7, "PermissionDenied"),
            (8, "ResourceExhausted"),
            (9, "FailedPrecondition"),
            (10, "Aborted"),
            (11, "OutOfRange"),
            (12, "Unimplemented"),
            (13, "Internal"),
            (14, "Unavailable"),
            (15, "DataLoss"),
            (16, "Unauthenticated"),
            (17, "Uninitialized"),
        ];
        for (value, name) in expected {
            let code = MachineCode::from_value(value).unwrap();
            assert_eq!(code.value(), value);
            assert_eq!(code.to_string(), name);
            assert_eq!(MachineCode::from_name(name), Some(code));
        }
        assert_eq!(MachineCode::from_value(18), None);
        assert_eq!(MachineCode::from_name("Ok"), None);
    }

    #[test]
    fn error_display_matches_mcm_status_format() {
        let err = MachineError::not_found("machine \"m\" not found");
        assert_eq!(
            err.to_string(),
            "machine codes error: code = [NotFound] message = [machine \"m\" not found]"
        );
    }
}
