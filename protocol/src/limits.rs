//! Size limits shared by both ends of every protocol. A peer enforces them when it
//! reads, whatever the other side claims, so no message can exhaust its memory.

/// Largest `/idlegrid/task/1` request: a TaskSpec with its params (the change kernel's
/// look-up tables travel as a blob, not here).
pub const MAX_TASK_REQUEST: usize = 256 * 1024;
/// Largest `/idlegrid/task/1` response: small results travel inline, larger ones as a
/// blob fetched in pieces.
pub const MAX_TASK_RESPONSE: usize = 2 * 1024 * 1024;
/// Largest inline result in a task response.
pub const MAX_INLINE_RESULT: usize = 1024 * 1024;
/// Largest `/idlegrid/blob/1` request.
pub const MAX_BLOB_REQUEST: usize = 4 * 1024;
/// Largest piece of a blob in one `/idlegrid/blob/1` response.
pub const BLOB_PIECE: usize = 1024 * 1024;
/// Largest `/idlegrid/blob/1` response (one piece plus framing).
pub const MAX_BLOB_RESPONSE: usize = BLOB_PIECE + 4 * 1024;
/// Largest blob a peer will fetch or store (one input or one result).
pub const MAX_BLOB: u64 = 1024 * 1024 * 1024;
/// Most chunks in one `RunMany` (and answers in one `Many`). The batch must also fit
/// [`MAX_TASK_REQUEST`] and its answers [`MAX_TASK_RESPONSE`].
pub const MAX_BATCH: usize = 256;
/// Most inputs a TaskSpec may name.
pub const MAX_TASK_INPUTS: usize = 4096;
/// Longest kernel name.
pub const MAX_KERNEL_NAME: usize = 32;
/// Largest kernel params in a TaskSpec.
pub const MAX_TASK_PARAMS: usize = 64 * 1024;
/// Longest free-text reason or agent string a peer may send.
pub const MAX_TEXT: usize = 1024;
