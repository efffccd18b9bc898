//! What the driver needs of a runtime: spawning a task, sleeping, timeouts and the clock.
//! Natively that is tokio and the system clock; in a browser (wasm32, the `web` feature)
//! the page's event loop, `setTimeout` and `Date.now()`. The driver and the `Client` API
//! above it are the same code on both.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Milliseconds since the Unix epoch.
#[cfg(native_io)]
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch (`Date.now()`: `SystemTime` is not available on
/// wasm32-unknown-unknown).
#[cfg(web_io)]
pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Sleeps for `d`.
#[cfg(native_io)]
pub(crate) async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Sleeps for `d`, on the page's timer (`setTimeout`, in a window or a worker); a sleep
/// dropped before it ends clears its timer.
#[cfg(web_io)]
pub(crate) async fn sleep(d: Duration) {
    use wasm_bindgen::{JsCast as _, JsValue};
    fn global_fn(name: &str) -> Option<js_sys::Function> {
        js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str(name))
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
    }
    /// Clears the timer when dropped (harmless once it has fired).
    struct Timer(JsValue);
    impl Drop for Timer {
        fn drop(&mut self) {
            if let Some(clear) = global_fn("clearTimeout") {
                let _ = clear.call1(&js_sys::global(), &self.0);
            }
        }
    }
    let ms = d.as_millis().min(i32::MAX as u128) as i32;
    let mut id = JsValue::UNDEFINED;
    let promise = js_sys::Promise::new(&mut |resolve, _reject| match global_fn("setTimeout") {
        Some(set) => {
            id = set
                .call2(&js_sys::global(), &resolve, &JsValue::from(ms))
                .unwrap_or(JsValue::UNDEFINED);
        }
        // No timer on this global: resolve at once rather than hang.
        None => {
            let _ = resolve.call0(&JsValue::NULL);
        }
    });
    let _timer = Timer(id);
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// A monotonic clock in milliseconds, for intervals (the wall clock may step back).
#[cfg(native_io)]
pub(crate) fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A monotonic clock in milliseconds (`performance.now()`), for intervals.
#[cfg(web_io)]
pub(crate) fn monotonic_ms() -> u64 {
    use wasm_bindgen::JsCast as _;
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &"performance".into())
        .ok()
        .and_then(|p| {
            let now = js_sys::Reflect::get(&p, &"now".into())
                .ok()?
                .dyn_into::<js_sys::Function>()
                .ok()?;
            now.call0(&p).ok()?.as_f64()
        })
        .map_or_else(now_ms, |ms| ms as u64)
}

/// `f` did not finish in time.
#[derive(Debug)]
pub(crate) struct Elapsed;

/// Runs `f` for at most `d`.
pub(crate) async fn timeout<F: Future>(d: Duration, f: F) -> Result<F::Output, Elapsed> {
    tokio::select! {
        out = f => Ok(out),
        () = sleep(d) => Err(Elapsed),
    }
}

/// `Send` where tasks move between threads (tokio); anything in a browser, where every task
/// runs on the page's one thread.
#[cfg(native_io)]
pub(crate) trait MaybeSend: Send {}
#[cfg(native_io)]
impl<T: Send> MaybeSend for T {}
/// `Send` where tasks move between threads (tokio); anything in a browser, where every task
/// runs on the page's one thread.
#[cfg(web_io)]
pub(crate) trait MaybeSend {}
#[cfg(web_io)]
impl<T> MaybeSend for T {}

/// A spawned task: whether it has finished, and waiting for it.
pub(crate) struct Task {
    done: watch::Receiver<bool>,
}

impl Task {
    pub(crate) fn is_finished(&self) -> bool {
        // A task that panicked dropped its sender without saying so.
        *self.done.borrow() || self.done.has_changed().is_err()
    }

    pub(crate) async fn join(mut self) {
        let _ = self.done.wait_for(|d| *d).await;
    }
}

/// Runs `f` in the background (a tokio task; a browser microtask chain).
pub(crate) fn spawn<F: Future<Output = ()> + MaybeSend + 'static>(f: F) -> Task {
    let (tx, done) = watch::channel(false);
    let run = async move {
        f.await;
        let _ = tx.send(true);
    };
    #[cfg(native_io)]
    tokio::spawn(run);
    #[cfg(web_io)]
    wasm_bindgen_futures::spawn_local(run);
    Task { done }
}

/// What must be durable before a frame leaves. Natively nothing: the SQLite store's commits
/// are durable when they return. In a browser, the store's [`crate::Durability`] (IndexedDB
/// writes its commits later), awaited before every frame so that the relay never hears of a
/// state a reload would lose (a registration with an identity key not yet kept, a
/// ciphertext of a ratchet step a reload would take again, an acknowledgement of a message
/// not yet stored).
#[derive(Clone, Default)]
pub(crate) struct Flush {
    #[cfg(web_io)]
    pub(crate) durability: Option<std::rc::Rc<dyn crate::Durability>>,
}

impl Flush {
    /// Waits until every commit so far is durable.
    #[cfg(native_io)]
    #[allow(clippy::unused_async)]
    pub(crate) async fn wait(&self) -> Result<(), crate::ClientError> {
        Ok(())
    }

    /// Waits until every commit so far is durable.
    #[cfg(web_io)]
    pub(crate) async fn wait(&self) -> Result<(), crate::ClientError> {
        match &self.durability {
            Some(d) => d.flush().await.map_err(crate::ClientError::Store),
            None => Ok(()),
        }
    }
}
