//! A shared shutdown flag, set by SIGTERM/SIGINT or by the embedding program.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Cloneable handle: every stage loop checks it between batches.
#[derive(Clone, Default, Debug)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every loop sharing this flag to drain and stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sets the flag on the first SIGTERM or SIGINT (needs a Tokio runtime).
    pub fn trigger_on_signals(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let mut term = match signal(SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "Cannot listen for SIGTERM.");
                        return;
                    }
                };
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received; draining."),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; draining."),
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            me.trigger();
        });
    }
}
