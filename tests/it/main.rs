//! The one integration-test binary (autotests = false).
