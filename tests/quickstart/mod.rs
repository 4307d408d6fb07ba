//! Helpers of tests/envtest_quickstart.rs: the page's convention (`page`)
//! and the chart's pod on loopback (`release`).

pub mod page;
pub mod release;
