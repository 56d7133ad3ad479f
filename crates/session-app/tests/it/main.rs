//! session-app's tests: in-process router tests, and end-to-end tests that
//! run the real binary.

mod router;
