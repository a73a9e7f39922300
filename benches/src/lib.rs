//! Shared helpers for the meshwork benchmark suites (criterion, `harness = false`).
//!
//! Every suite builds its runtime once, outside the measured loop, and uses the same
//! criterion settings, so a whole run fits in a few minutes on a 2-core machine.

use std::time::Duration;

use criterion::Criterion;

/// The criterion settings every suite uses: 50 samples, 1 s warm-up, 3 s measurement.
///
/// ```
/// let _criterion = meshwork_benches::bench_config();
/// ```
pub fn bench_config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// A current-thread tokio runtime for async benchmarks, built once per suite.
///
/// ```
/// let rt = meshwork_benches::runtime();
/// assert_eq!(rt.block_on(async { 1 + 1 }), 2);
/// ```
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
