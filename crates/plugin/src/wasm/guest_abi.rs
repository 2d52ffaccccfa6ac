//! The WASM guest ABI, version 1: what a module must export, the only
//! functions it may import, and the host side of those imports.
//!
//! Every value is an `i32`; pointers and lengths are offsets and byte
//! counts in the module's exported memory, read as unsigned. A status of 0
//! is success; any other status is an `AbiErrorCode` number (or the guest's
//! own code) and the call fails with [`WasmFault::Guest`], whose message is
//! what the module last passed to `holdfast.error_message` during the call.
//!
//! Exports (all required):
//!
//! | export | type | meaning |
//! |---|---|---|
//! | `memory` | memory | the module's only memory |
//! | `hf_abi_version` | `() -> i32` | returns [`WASM_GUEST_ABI_VERSION`] |
//! | `hf_alloc` | `(size) -> ptr` | `size` writable bytes for the host to pass input in (0 on failure) |
//! | `hf_init` | `() -> status` | registers the contracts with `holdfast.register` |
//! | `hf_create` | `(contract) -> instance` | a new instance of the contract with that registration index; 0 on failure |
//! | `hf_destroy` | `(instance)` | forgets an instance |
//! | `hf_call` | `(instance, function, ptr, len) -> status` | runs a function on the input bytes; outputs go to `holdfast.emit` |
//! | `hf_save` | `(instance) -> status` | emits the instance's state (one `emit`, or none for empty state) |
//! | `hf_restore` | `(instance, major, minor, patch, ptr, len) -> status` | takes state saved by contract version `major.minor.patch` |
//!
//! Imports (module `holdfast`; anything else is refused at load):
//!
//! | import | type | meaning |
//! |---|---|---|
//! | `register` | `(name_ptr, name_len, major, minor, patch, function_count, flags) -> i32` | during `hf_init` only: declares a contract (flags bit 0: it has state hooks); returns its registration index, or -1 |
//! | `emit` | `(ptr, len)` | hands one output (in `hf_call`) or the state (in `hf_save`) to the host |
//! | `error_message` | `(ptr, len)` | the message for a non-zero status |
//! | `log` | `(level, ptr, len)` | logs through the runtime's logger |
//!
//! Input the host passes is lent for the call (the host reuses its buffer).
//! A host function given a range outside the memory, or called where it is
//! not allowed, ends the call with [`WasmFault::ImportMisuse`]. This module
//! must never define a host function that reaches outside the store: no
//! file, socket, clock or randomness is reachable from a module.

use holdfast_plugin_abi::LogLevel;
use wasmtime::{Caller, ExternType, Linker, ValType};

use crate::error::{LoaderError, WasmFault};
use crate::wasm::WasmConfig;
use crate::wasm::sandbox::HostState;

/// The guest ABI version a module's `hf_abi_version` must return.
pub const WASM_GUEST_ABI_VERSION: i32 = 1;

/// The import module every host function lives in.
pub const IMPORT_MODULE: &str = "holdfast";

/// A contract declared with this flag has state hooks (`hf_save`,
/// `hf_restore`) in its interface.
pub const FLAG_STATE: i32 = 1;

/// The longest contract name `register` accepts.
const MAX_CONTRACT_NAME: u32 = 128;

/// The longest message kept from `error_message` or `log`.
const MAX_MESSAGE: usize = 4096;

/// The fuel every host call costs before the bytes it copies (a unit
/// each): without a price, a guest looping on a host call would do host
/// work for far longer than its budget allows.
const HOST_CALL_FUEL: u64 = 64;

/// The exports the guest ABI requires: name, parameter count, result count
/// (all `i32`), and how a message spells the type.
const FUNCTION_EXPORTS: [(&str, usize, usize, &str); 8] = [
    ("hf_abi_version", 0, 1, "func() -> i32"),
    ("hf_alloc", 1, 1, "func(i32) -> i32"),
    ("hf_init", 0, 1, "func() -> i32"),
    ("hf_create", 1, 1, "func(i32) -> i32"),
    ("hf_destroy", 1, 0, "func(i32)"),
    ("hf_call", 4, 1, "func(i32, i32, i32, i32) -> i32"),
    ("hf_save", 1, 1, "func(i32) -> i32"),
    ("hf_restore", 6, 1, "func(i32, i32, i32, i32, i32, i32) -> i32"),
];

/// The imports the sandbox provides.
const IMPORTS: [&str; 4] = ["register", "emit", "error_message", "log"];

/// Whether `bytes` start with the WebAssembly binary magic.
pub fn is_wasm(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\0asm")
}

/// One contract a module declared during `hf_init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    /// The contract name.
    pub name: String,
    /// Its version.
    pub version: holdfast_plugin_abi::Version,
    /// How many functions `hf_call` serves for it.
    pub function_count: u32,
    /// Whether it has state hooks.
    pub stateful: bool,
}

/// The static checks before anything of the module runs: only the
/// sandbox's imports, every required export with its type, one memory no
/// larger at start than the limit.
///
/// # Errors
/// `ForbiddenImport`, `MissingExport`, `WasmMemoryTooLarge`.
pub(crate) fn check_module(
    bundle: &str,
    module: &wasmtime::Module,
    config: &WasmConfig,
) -> Result<(), LoaderError> {
    for import in module.imports() {
        let allowed = import.module() == IMPORT_MODULE
            && IMPORTS.contains(&import.name())
            && matches!(import.ty(), ExternType::Func(_));
        if !allowed {
            return Err(LoaderError::ForbiddenImport {
                bundle: bundle.to_owned(),
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    let missing = |name, expected| LoaderError::MissingExport {
        bundle: bundle.to_owned(),
        name,
        expected,
    };
    match module.get_export("memory") {
        Some(ExternType::Memory(memory)) => {
            let declared_bytes = memory.minimum().saturating_mul(memory.page_size());
            if memory.is_64() || memory.is_shared() {
                return Err(missing("memory", "a 32-bit, unshared memory"));
            }
            if declared_bytes > config.max_memory_bytes {
                return Err(LoaderError::WasmMemoryTooLarge {
                    bundle: bundle.to_owned(),
                    declared_bytes,
                    limit_bytes: config.max_memory_bytes,
                });
            }
        }
        _ => return Err(missing("memory", "a memory")),
    }
    for (name, params, results, spelled) in FUNCTION_EXPORTS {
        let matches = match module.get_export(name) {
            Some(ExternType::Func(func)) => {
                func.params().len() == params
                    && func.results().len() == results
                    && func
                        .params()
                        .chain(func.results())
                        .all(|ty| matches!(ty, ValType::I32))
            }
            _ => false,
        };
        if !matches {
            return Err(missing(name, spelled));
        }
    }
    Ok(())
}

/// The linker with the sandbox's host functions, and nothing else.
///
/// # Errors
/// wasmtime's, if a definition is refused (a bug here, not the module's).
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        IMPORT_MODULE,
        "register",
        |mut caller: Caller<'_, HostState>,
         name_ptr: i32,
         name_len: i32,
         major: i32,
         minor: i32,
         patch: i32,
         function_count: i32,
         flags: i32|
         -> wasmtime::Result<i32> {
            if !caller.data().registering() {
                return Err(misuse(&mut caller, "register", "called outside hf_init".into()));
            }
            if name_len as u32 > MAX_CONTRACT_NAME {
                charge(&mut caller, 0)?;
                return Ok(-1);
            }
            let name = read_guest(&mut caller, "register", name_ptr, name_len)?;
            let Ok(name) = String::from_utf8(name) else {
                return Ok(-1);
            };
            let declared = Declared {
                name,
                version: holdfast_plugin_abi::Version {
                    major: major as u32,
                    minor: minor as u32,
                    patch: patch as u32,
                },
                function_count: function_count as u32,
                stateful: flags & FLAG_STATE != 0,
            };
            Ok(caller.data_mut().declare(declared))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "emit",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let state = caller.data();
            if let Some(fault) = state.reply_refusal(len as u32) {
                caller.data_mut().set_fault(fault.clone());
                return Err(wasmtime::Error::msg(fault.to_string()));
            }
            let bytes = read_guest(&mut caller, "emit", ptr, len)?;
            caller.data_mut().push_output(bytes);
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "error_message",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let kept = (len as u32).min(MAX_MESSAGE as u32) as i32;
            let bytes = read_guest(&mut caller, "error_message", ptr, kept)?;
            caller
                .data_mut()
                .set_message(String::from_utf8_lossy(&bytes).into_owned());
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            if caller.data().log_is_full() {
                return charge(&mut caller, 0);
            }
            let kept = (len as u32).min(MAX_MESSAGE as u32) as i32;
            let bytes = read_guest(&mut caller, "log", ptr, kept)?;
            let level = if (0..=4).contains(&level) {
                level as u32
            } else {
                LogLevel::Trace as u32
            };
            let message = String::from_utf8_lossy(&bytes).into_owned();
            caller.data_mut().push_log(level, message);
            Ok(())
        },
    )?;
    Ok(linker)
}

/// Records `reason` as the call's fault and returns the error that ends it.
fn misuse(caller: &mut Caller<'_, HostState>, import: &'static str, reason: String) -> wasmtime::Error {
    let fault = WasmFault::ImportMisuse { import, reason };
    let error = wasmtime::Error::msg(fault.to_string());
    caller.data_mut().set_fault(fault);
    error
}

/// Takes the price of a host call that copies `bytes` from the call's fuel;
/// a call that cannot pay ends out of fuel, as guest code would.
fn charge(caller: &mut Caller<'_, HostState>, bytes: usize) -> wasmtime::Result<()> {
    let price = HOST_CALL_FUEL.saturating_add(bytes as u64);
    let left = caller.get_fuel()?;
    if left < price {
        caller.set_fuel(0)?;
        return Err(wasmtime::Trap::OutOfFuel.into());
    }
    caller.set_fuel(left - price)
}

/// Copies `len` bytes at `ptr` out of the module's memory, paying for them
/// first ([`charge`]).
fn read_guest(
    caller: &mut Caller<'_, HostState>,
    import: &'static str,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    charge(caller, len)?;
    let Some(memory) = caller.data().memory() else {
        return Err(misuse(
            caller,
            import,
            "called before the module was instantiated".into(),
        ));
    };
    let bytes = memory
        .data(&*caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec);
    bytes.ok_or_else(|| {
        misuse(
            caller,
            import,
            format!("{len} bytes at {start} lie outside the module's memory"),
        )
    })
}
