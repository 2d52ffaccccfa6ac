//! Where the runtime's messages and reload events go: the host's closures,
//! the C callbacks of `RuntimeConfig`, or stderr. This module owns delivery
//! only (level filtering, catching a panicking callback); it never decides
//! when an event fires.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use holdfast_plugin_abi::{
    LogCallbackFn, LogLevel, ReloadCallbackFn, ReloadPhase, RuntimeConfig, StringView,
};

/// A host closure receiving log lines.
pub(crate) type LogClosure = Box<dyn Fn(LogLevel, &str) + Send + Sync>;
/// A host closure receiving reload events (with `on_reload_user_data`).
pub(crate) type ReloadClosure = Box<dyn Fn(*mut c_void, ReloadPhase) + Send + Sync>;

enum LogSink {
    Closure(LogClosure),
    Callback {
        function: LogCallbackFn,
        user_data: usize,
    },
    Stderr,
}

/// Delivers log lines up to the configured level.
pub(crate) struct Logger {
    sink: LogSink,
    level: LogLevel,
}

impl Logger {
    /// The builder's closure if given, else `config.log`, else stderr.
    pub(crate) fn new(config: &RuntimeConfig, closure: Option<LogClosure>) -> Self {
        let sink = match (closure, config.log) {
            (Some(closure), _) => LogSink::Closure(closure),
            (None, Some(function)) => LogSink::Callback {
                function,
                user_data: config.log_user_data as usize,
            },
            (None, None) => LogSink::Stderr,
        };
        Self {
            sink,
            level: config.log_level,
        }
    }

    /// Logs `message` if `level` is within the configured verbosity. A
    /// panicking closure is caught: logging never takes the runtime down.
    pub(crate) fn log(&self, level: LogLevel, message: &str) {
        if level > self.level {
            return;
        }
        match &self.sink {
            LogSink::Closure(closure) => {
                let _ = catch_unwind(AssertUnwindSafe(|| closure(level, message)));
            }
            LogSink::Callback { function, user_data } => {
                // SAFETY: the host installed this callback with this user
                // data in its configuration; the view borrows `message` for
                // the call only.
                unsafe { function(*user_data as *mut c_void, level, StringView::borrowed(message)) };
            }
            LogSink::Stderr => eprintln!("[holdfast-plugin] {level:?}: {message}"),
        }
    }
}

enum ReloadSink {
    Closure(ReloadClosure),
    Callback(ReloadCallbackFn),
    None,
}

/// Delivers reload events to the host.
pub(crate) struct ReloadEvents {
    sink: ReloadSink,
    user_data: usize,
}

impl ReloadEvents {
    /// The builder's closure if given, else `config.on_reload`.
    pub(crate) fn new(config: &RuntimeConfig, closure: Option<ReloadClosure>) -> Self {
        let sink = match (closure, config.on_reload) {
            (Some(closure), _) => ReloadSink::Closure(closure),
            (None, Some(function)) => ReloadSink::Callback(function),
            (None, None) => ReloadSink::None,
        };
        Self {
            sink,
            user_data: config.on_reload_user_data as usize,
        }
    }

    /// Fires `phase`. A panicking closure is caught and logged; the
    /// operation goes on (spec §6.5).
    pub(crate) fn fire(&self, phase: ReloadPhase, logger: &Logger) {
        let user_data = self.user_data as *mut c_void;
        match &self.sink {
            ReloadSink::Closure(closure) => {
                if catch_unwind(AssertUnwindSafe(|| closure(user_data, phase))).is_err() {
                    logger.log(
                        LogLevel::Error,
                        "a reload callback panicked; the operation goes on",
                    );
                }
            }
            // SAFETY: the host installed this callback with this user data.
            ReloadSink::Callback(function) => unsafe { function(user_data, phase) },
            ReloadSink::None => {}
        }
    }
}
