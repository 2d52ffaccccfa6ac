//! The sandbox: the engine configuration (fuel metering on; multiple
//! memories and 64-bit memories off; threads are not compiled in), the
//! per-store state with its memory limiter, and the classification of
//! whatever ends a call into a typed [`WasmFault`].
//!
//! The store's data is all a module's host functions can reach. It never
//! holds anything that grants access outside the store: even log lines are
//! only kept, and the host delivers them after the call.

use holdfast_plugin_abi::LogLevel;
use wasmtime::{Config, Engine, Memory, ResourceLimiter, Trap};

use crate::error::WasmFault;
use crate::wasm::WasmConfig;
use crate::wasm::guest_abi::Declared;

/// The engine every module of a loader is compiled with.
///
/// # Errors
/// wasmtime's, when this configuration cannot run on the machine.
pub(crate) fn engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .wasm_multi_memory(false)
        .wasm_memory64(false)
        // The per-call fuel budget bounds time; a deep recursion ends as a
        // stack overflow within this much native stack.
        .max_wasm_stack(512 << 10);
    Engine::new(&config)
}

/// What a module's store holds: the limiter's state, the reply being
/// collected for the current call, and the declarations of `hf_init`.
pub(crate) struct HostState {
    config: WasmConfig,
    memory: Option<Memory>,
    /// The fault a host function or the limiter recorded for this call.
    fault: Option<WasmFault>,
    outputs: Vec<Vec<u8>>,
    reply_bytes: u64,
    message: Option<String>,
    /// `Some` only while `hf_init` runs.
    declared: Option<Vec<Declared>>,
    /// Lines the module logged during this call, delivered by the host
    /// once the call is over and the store unlocked (a logger that calls
    /// back into the module or the runtime must not find them held).
    logs: Vec<(u32, String)>,
}

/// The most log lines one call keeps; later ones are counted, not kept.
const MAX_LOG_LINES_PER_CALL: usize = 64;

impl HostState {
    pub(crate) fn new(config: WasmConfig) -> Self {
        Self {
            config,
            memory: None,
            fault: None,
            outputs: Vec::new(),
            reply_bytes: 0,
            message: None,
            declared: None,
            logs: Vec::new(),
        }
    }

    pub(crate) fn memory(&self) -> Option<Memory> {
        self.memory
    }

    pub(crate) fn set_memory(&mut self, memory: Memory) {
        self.memory = Some(memory);
    }

    /// Starts a call: clears the last call's reply, fault and log lines.
    #[inline]
    pub(crate) fn begin(&mut self) {
        self.fault = None;
        self.outputs.clear();
        self.reply_bytes = 0;
        self.message = None;
        self.logs.clear();
    }

    /// Whether this call's log lines are used up (later lines are dropped
    /// unread).
    pub(crate) fn log_is_full(&self) -> bool {
        self.logs.len() > MAX_LOG_LINES_PER_CALL
    }

    /// Keeps a line the module logged, for delivery after the call.
    pub(crate) fn push_log(&mut self, level: u32, message: String) {
        match self.logs.len() {
            length if length < MAX_LOG_LINES_PER_CALL => self.logs.push((level, message)),
            MAX_LOG_LINES_PER_CALL => self.logs.push((
                LogLevel::Warn as u32,
                format!("more than {MAX_LOG_LINES_PER_CALL} log lines in one call; the rest are dropped"),
            )),
            _ => {}
        }
    }

    /// The call's log lines, in order.
    pub(crate) fn take_logs(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.logs)
    }

    pub(crate) fn set_fault(&mut self, fault: WasmFault) {
        self.fault.get_or_insert(fault);
    }

    pub(crate) fn take_fault(&mut self) -> Option<WasmFault> {
        self.fault.take()
    }

    /// Why one more output of `len` bytes would break the limits, if it would.
    pub(crate) fn reply_refusal(&self, len: u32) -> Option<WasmFault> {
        let total = self.reply_bytes + u64::from(len);
        if total > self.config.max_reply_bytes {
            return Some(WasmFault::ReplyTooLarge {
                len: total,
                max: self.config.max_reply_bytes,
            });
        }
        if self.outputs.len() >= self.config.max_outputs as usize {
            return Some(WasmFault::Protocol {
                reason: format!("more than {} outputs in one call", self.config.max_outputs),
            });
        }
        None
    }

    pub(crate) fn push_output(&mut self, bytes: Vec<u8>) {
        self.reply_bytes += bytes.len() as u64;
        self.outputs.push(bytes);
    }

    pub(crate) fn take_outputs(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outputs)
    }

    pub(crate) fn set_message(&mut self, message: String) {
        self.message = Some(message);
    }

    pub(crate) fn take_message(&mut self) -> String {
        self.message.take().unwrap_or_default()
    }

    pub(crate) fn registering(&self) -> bool {
        self.declared.is_some()
    }

    pub(crate) fn start_declaring(&mut self) {
        self.declared = Some(Vec::new());
    }

    pub(crate) fn finish_declaring(&mut self) -> Vec<Declared> {
        self.declared.take().unwrap_or_default()
    }

    /// Records a declaration; its registration index, or -1 when there are
    /// already as many as a manifest may list.
    pub(crate) fn declare(&mut self, declared: Declared) -> i32 {
        let Some(list) = self.declared.as_mut() else {
            return -1;
        };
        if list.len() >= 256 {
            return -1;
        }
        list.push(declared);
        (list.len() - 1) as i32
    }
}

impl ResourceLimiter for HostState {
    /// Growth past the limit ends the call with `MemoryLimit` (rather than
    /// failing the grow quietly), so a blow-up is reported as what it is.
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 <= self.config.max_memory_bytes {
            return Ok(true);
        }
        let fault = WasmFault::MemoryLimit {
            requested_bytes: desired as u64,
            limit_bytes: self.config.max_memory_bytes,
        };
        let error = wasmtime::Error::msg(fault.to_string());
        self.set_fault(fault);
        Err(error)
    }

    /// Tables may not grow past 100,000 elements (the grow fails).
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// What ended a call: the fault a host function or the limiter recorded,
/// else the trap, else the error's own text.
pub(crate) fn classify(error: &wasmtime::Error, recorded: Option<WasmFault>, budget: u64) -> WasmFault {
    if let Some(fault) = recorded {
        return fault;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => WasmFault::OutOfFuel { budget },
        Some(Trap::MemoryOutOfBounds) => WasmFault::MemoryOutOfBounds,
        Some(Trap::UnreachableCodeReached) => WasmFault::Unreachable,
        Some(Trap::StackOverflow) => WasmFault::StackOverflow,
        Some(trap) => WasmFault::Trap {
            reason: trap.to_string(),
        },
        None => WasmFault::Trap {
            reason: format!("{error:#}"),
        },
    }
}
