//! The kernels' integration tests, one test binary: the change kernel's chunk layout
//! (`change_chunks`) and bit-exactness against its reference (`change_reference`), the
//! video kernel's encoding (`video_encode`) and its refusal of bad input
//! (`video_bad_input`), with `video_common` making frames and segments for the two
//! video modules; every kernel's input and result limits and its cancellation
//! (`limits_and_cancel`). Fixtures are found from `CARGO_MANIFEST_DIR` (`tests/fixtures`).

mod change_chunks;
mod change_reference;
mod limits_and_cancel;
mod video_bad_input;
mod video_common;
mod video_encode;
mod wasm;
