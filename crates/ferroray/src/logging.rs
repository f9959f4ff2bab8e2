//! Where the runtime's diagnostics go.
//!
//! The crates below the facade report through `tracing` (refused
//! connections, spill failures, worker start failures, ...). A program that
//! installs its own `tracing` subscriber gets them there. Otherwise the first
//! `init` (and every worker process at start-up) installs a plain one that
//! writes to stderr, at the level `FERRORAY_LOG` names (`error`, `warn`,
//! `info`, `debug`, `trace` or `off`; default `warn`), so that nothing the
//! node has to say is lost silently.

use tracing_subscriber::filter::LevelFilter;

/// The environment variable that sets the default subscriber's level.
pub const LOG_ENV: &str = "FERRORAY_LOG";

/// Installs the stderr subscriber unless the program has one already.
pub(crate) fn install_default() {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let level = match std::env::var(LOG_ENV).ok().as_deref().map(str::trim) {
        Some("off") => LevelFilter::OFF,
        Some("error") => LevelFilter::ERROR,
        Some("info") => LevelFilter::INFO,
        Some("debug") => LevelFilter::DEBUG,
        Some("trace") => LevelFilter::TRACE,
        _ => LevelFilter::WARN,
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .with_target(true)
        .without_time()
        .finish();
    // Another thread may have installed one meanwhile: theirs stays.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
