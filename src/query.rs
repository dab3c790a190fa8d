//! A read of the HTTP API, already validated, and its answer.

/// An answer's JSON body stops growing past about this many bytes: `/logs` gives fewer entries
/// than asked (clients page by `offset`, and Scratch's shape has no "more" marker), the
/// variables read lists fewer variables. One answer then costs the loop at most this much to
/// render and a connection at most this much to hold. The backend's read stops there too.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A validated read request of the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// `GET /logs?projectid=<project>&limit=<limit>&offset=<offset>`: history, newest first.
    Logs {
        project: String,
        offset: usize,
        limit: usize,
    },
    /// `GET /api/v1/projects/<project>/variables`: current values with last writer and time.
    Variables { project: String },
    /// A request of the admin API, from an authenticated operator (`operator` is the name the
    /// admin tokens file gives them; it is in the audit line and history records `@<name>`).
    Admin {
        operator: String,
        request: crate::admin::AdminRequest,
    },
}

/// What a query is answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200 with this JSON body.
    Json(String),
    /// The backend could not answer (store failing, Redis unreachable, its channel full):
    /// 503 with a JSON error.
    Unavailable,
    /// Another status with a JSON body (the admin API: 400, 404, 409, 501, ...).
    Status { status: u16, json: String },
}
