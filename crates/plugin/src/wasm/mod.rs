//! The sandboxed WebAssembly loader (feature `wasm`): a bundle whose
//! manifest says `loader = "wasm"` carries a WebAssembly module instead of a
//! native library. [`WasmLoader`] compiles it with wasmtime and runs it with
//! no ambient authority — the only functions it can import are the
//! `holdfast` host functions of the guest ABI ([`guest_abi`]), so it has no
//! filesystem, network, clock or randomness — under a memory limit and a
//! fuel budget per call ([`WasmConfig`]).
//!
//! Its contracts register like native ones, through the bundle's
//! `HostApi.register_guest_contract`, with `DispatchType::Vm`
//! ([`dispatch`]): handles, `find_guest_contract`, tracked instances, state
//! hooks, reload with rollback and the grace period behave exactly as for a
//! native bundle. [`Runtime::call_wasm`](crate::Runtime::call_wasm) calls a
//! function of a tracked instance; a [`WasmCaller`] calls one instance
//! repeatedly without looking it up each time.
//!
//! A trap, an out-of-bounds access, an endless loop or a memory blow-up
//! inside a call ends that call with a typed [`WasmFault`]; the host and
//! every other plugin keep running. This module never gives a module a
//! host function beyond those of [`guest_abi`], and never lets guest code
//! run without a fuel budget and the memory limiter.
//!
//! Submodules: [`guest_abi`] (what a module must export and may import),
//! [`sandbox`] (the engine, limits and fault classification), [`module`]
//! (one instantiated module and the calls into it), [`dispatch`] (the
//! `extern "C"` functions the registry's interfaces point to), [`caller`]
//! (the cached call path).

pub mod caller;
pub mod dispatch;
pub mod guest_abi;
pub mod module;
pub mod sandbox;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use sha2::{Digest, Sha256};

use crate::error::{LoaderError, WasmFault};
use crate::loader::{BundleLoader, LoadContext};
use crate::manifest::ManifestData;
use crate::signature::Sha256Digest;

pub use caller::WasmCaller;
pub use dispatch::{WasmCallArgs, WasmReply};
pub use guest_abi::WASM_GUEST_ABI_VERSION;

/// The sandbox's limits, the same for every module a loader opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WasmConfig {
    /// The most linear memory a module may have, in bytes (its declared
    /// minimum and every `memory.grow`). Default 64 MiB.
    pub max_memory_bytes: u64,
    /// The fuel one call may use (about one unit per WebAssembly
    /// instruction): the time limit per call. Default 200,000,000.
    pub fuel_per_call: u64,
    /// The most bytes one call may hand back (outputs, state or message
    /// together). Default 16 MiB.
    pub max_reply_bytes: u64,
    /// The most outputs one call may emit. Default 65,536.
    pub max_outputs: u32,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 << 20,
            fuel_per_call: 200_000_000,
            max_reply_bytes: 16 << 20,
            max_outputs: 65_536,
        }
    }
}

/// How many compiled modules a loader keeps (least recently used dropped
/// first).
const COMPILED_CACHE: usize = 8;

/// Opens bundles whose manifest says `loader = "wasm"`. Cheap to clone; the
/// compiler is set up on the first load.
///
/// The loader keeps the last few modules it compiled and checked, by the
/// SHA-256 of their bytes: loading bytes it has seen (a reload of an
/// unchanged module, a retry after a rollback) skips compiling. A module is
/// a pure function of its bytes and the engine's settings, so a cached one
/// is exactly what compiling again would give.
#[derive(Clone, Debug, Default)]
pub struct WasmLoader {
    config: WasmConfig,
    engine: Arc<OnceLock<Result<wasmtime::Engine, String>>>,
    compiled: Arc<Mutex<Vec<Compiled>>>,
}

/// A compiled, checked module and the SHA-256 of its bytes.
type Compiled = ([u8; 32], wasmtime::Module);

impl WasmLoader {
    /// A loader with `config`'s limits.
    pub fn new(config: WasmConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The checked module of `bytes` (whose SHA-256 is `digest`): from the
    /// cache, or compiled and checked (and then cached).
    fn compile(
        &self,
        bundle: &str,
        engine: &wasmtime::Engine,
        bytes: &[u8],
        digest: Sha256Digest,
    ) -> Result<wasmtime::Module, LoaderError> {
        {
            let mut cache = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = cache.iter().position(|(seen, _)| *seen == digest) {
                let entry = cache.remove(found);
                let module = entry.1.clone();
                cache.push(entry);
                return Ok(module);
            }
        }
        // Compiled outside the lock: other loads need not wait for it.
        let module = wasmtime::Module::new(engine, bytes).map_err(|error| LoaderError::InvalidWasm {
            bundle: bundle.to_owned(),
            message: format!("{error:#}"),
        })?;
        guest_abi::check_module(bundle, &module, &self.config)?;
        let mut cache = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= COMPILED_CACHE {
            cache.remove(0);
        }
        cache.push((digest, module.clone()));
        Ok(module)
    }

    /// The loader's limits.
    pub fn config(&self) -> WasmConfig {
        self.config
    }

    /// The shared engine, made on first use.
    fn engine(&self, bundle: &str) -> Result<&wasmtime::Engine, LoaderError> {
        self.engine
            .get_or_init(|| sandbox::engine().map_err(|error| error.to_string()))
            .as_ref()
            .map_err(|message| LoaderError::Other {
                bundle: bundle.to_owned(),
                message: format!("the WebAssembly engine could not start: {message}"),
            })
    }
}

/// The largest module file the loader reads (a module is read whole, then
/// compiled, before any other check).
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

/// The module file's bytes, at most [`MAX_MODULE_BYTES`] of them (decided by
/// what is read, not by a size the file could change after).
fn read_module(path: &std::path::Path) -> Result<Vec<u8>, LoaderError> {
    use std::io::Read;
    let open_error = |error: std::io::Error| LoaderError::Open {
        path: path.to_path_buf(),
        message: error.to_string(),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(open_error)?
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(open_error)?;
    if bytes.len() as u64 > MAX_MODULE_BYTES {
        return Err(LoaderError::ModuleTooLarge {
            path: path.to_path_buf(),
            max: MAX_MODULE_BYTES,
        });
    }
    Ok(bytes)
}

impl BundleLoader for WasmLoader {
    fn loader_name(&self) -> &'static str {
        "wasm"
    }

    /// Reads and checks the module (magic, validity, imports, exports,
    /// declared memory), instantiates it in a fresh store, adopts it, checks
    /// `hf_abi_version`, runs `hf_init`, then registers what init declared.
    /// Nothing is registered unless init succeeded.
    fn load(&self, manifest: &ManifestData, ctx: &mut LoadContext<'_>) -> Result<(), LoaderError> {
        let engine = self.engine(&manifest.name)?;
        let bytes = read_module(ctx.library_path())?;
        // Compiled from these bytes only: checked against a required
        // signature here, nothing read later can differ.
        let digest: Sha256Digest = Sha256::digest(&bytes).into();
        ctx.check_verified_digest(digest)?;
        if !guest_abi::is_wasm(&bytes) {
            return Err(LoaderError::WrongLoader {
                path: ctx.library_path().to_path_buf(),
                loader: "wasm",
                found: "not a WebAssembly module",
            });
        }
        let compiled = self.compile(&manifest.name, engine, &bytes, digest)?;
        let shared = module::Shared::instantiate(&manifest.name, engine, &compiled, self.config)?;
        ctx.adopt(Box::new(module::WasmModule::new(Arc::clone(&shared))));
        let fault = |stage, fault: WasmFault| LoaderError::WasmFault {
            bundle: manifest.name.clone(),
            stage,
            fault,
        };
        let version = shared
            .abi_version(ctx.host_api())
            .map_err(|error| fault("hf_abi_version", error))?;
        if version != WASM_GUEST_ABI_VERSION {
            return Err(LoaderError::WasmAbiVersionMismatch {
                bundle: manifest.name.clone(),
                expected: WASM_GUEST_ABI_VERSION,
                found: version,
            });
        }
        let declared = match shared.init(ctx.host_api()) {
            Ok(declared) => declared,
            Err(WasmFault::Guest { code, message }) => {
                return Err(LoaderError::InitFailed {
                    bundle: manifest.name.clone(),
                    code,
                    message,
                });
            }
            Err(error) => return Err(fault("hf_init", error)),
        };
        dispatch::register_all(&shared, manifest, ctx.host_api(), declared)
    }
}
