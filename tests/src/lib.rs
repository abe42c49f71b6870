//! Multi-peer integration tests of idlegrid live in `tests/`; this library is empty on purpose.
