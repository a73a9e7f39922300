//! A registration that lives as long as a value: registered on start, kept alive by TTL
//! heartbeats in a background task, deregistered on shutdown or drop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::{DynRegistrar, Error, Registration};

/// Share of the TTL between two heartbeats: a third, so one lost heartbeat (or a slow agent)
/// still leaves a full third of the TTL before the check turns critical.
pub const DEFAULT_HEARTBEAT_FRACTION: f64 = 1.0 / 3.0;

/// Registers an instance on start and deregisters it on [`shutdown`](Self::shutdown) (or, on
/// a best-effort basis, on drop). With a TTL check it passes the check at once and then every
/// `ttl * DEFAULT_HEARTBEAT_FRACTION` from a background task; when the registry has forgotten
/// the instance (an agent restarted), the task registers it again.
///
/// ```
/// use meshwork_discovery::{
///     Check, Discover, Instance, Registration, RegistrationGuard, StaticDiscovery,
/// };
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_discovery::Error> {
/// let registry = StaticDiscovery::default();
/// let registration = Registration::new(Instance::new("web-1", "web", "127.0.0.1", 8080))
///     .with_check(Check::ttl(Duration::from_secs(10)));
/// let guard = RegistrationGuard::start(Arc::new(registry.clone()), registration).await?;
/// assert_eq!(registry.resolve("web").await?.len(), 1);
/// guard.shutdown().await?;
/// assert!(registry.resolve("web").await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RegistrationGuard {
    registrar: Arc<dyn DynRegistrar>,
    id: String,
    heartbeat: Option<JoinHandle<()>>,
    last_error: Arc<Mutex<Option<String>>>,
    done: bool,
}

impl std::fmt::Debug for dyn DynRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn DynRegistrar")
    }
}

impl RegistrationGuard {
    /// Registers `registration` and, for a TTL check, starts heartbeating at
    /// [`DEFAULT_HEARTBEAT_FRACTION`] of the TTL.
    pub async fn start(
        registrar: Arc<dyn DynRegistrar>,
        registration: Registration,
    ) -> Result<Self, Error> {
        let every = registration
            .check
            .as_ref()
            .and_then(|c| c.ttl_duration())
            .map(|ttl| ttl.mul_f64(DEFAULT_HEARTBEAT_FRACTION));
        Self::start_with_interval(registrar, registration, every).await
    }

    /// Like [`start`](Self::start) with an explicit heartbeat interval (`None`: no heartbeat).
    pub async fn start_with_interval(
        registrar: Arc<dyn DynRegistrar>,
        registration: Registration,
        heartbeat_every: Option<Duration>,
    ) -> Result<Self, Error> {
        registration.validate()?;
        registrar.register_dyn(&registration).await?;
        let id = registration.instance.id.clone();
        let last_error = Arc::new(Mutex::new(None));
        let heartbeat = match heartbeat_every {
            Some(every) => {
                registrar.heartbeat_dyn(&id).await?;
                let every = every.max(Duration::from_millis(1));
                let registrar = registrar.clone();
                let last_error = last_error.clone();
                Some(tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(every);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    ticker.tick().await;
                    loop {
                        ticker.tick().await;
                        let id = &registration.instance.id;
                        let mut result = registrar.heartbeat_dyn(id).await;
                        if matches!(result, Err(Error::NotFound { .. })) {
                            result = match registrar.register_dyn(&registration).await {
                                Ok(()) => registrar.heartbeat_dyn(id).await,
                                Err(e) => Err(e),
                            };
                        }
                        let mut slot = last_error.lock().unwrap_or_else(|p| p.into_inner());
                        match result {
                            Ok(()) => *slot = None,
                            Err(e) => {
                                #[cfg(feature = "tracing")]
                                tracing::warn!(instance = %id, error = %e, "heartbeat failed");
                                *slot = Some(e.to_string());
                            }
                        }
                    }
                }))
            }
            None => None,
        };
        Ok(RegistrationGuard {
            registrar,
            id,
            heartbeat,
            last_error,
            done: false,
        })
    }

    /// The registered instance's id.
    pub fn instance_id(&self) -> &str {
        &self.id
    }

    /// The error of the last heartbeat, if it failed (cleared by the next success).
    pub fn last_heartbeat_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops heartbeating and deregisters (an instance the registry has already forgotten
    /// counts as deregistered).
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        self.done = true;
        self.registrar.deregister_dyn(&self.id).await
    }
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        if !self.done
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let registrar = self.registrar.clone();
            let id = std::mem::take(&mut self.id);
            handle.spawn(async move {
                let _ = registrar.deregister_dyn(&id).await;
            });
        }
    }
}
