//! One hostile case: mutate a base image in up to three layers, run every
//! read-only call and a boot over the result — each on its own copy that
//! counts writes, under `catch_unwind` — and judge every outcome against
//! what the bytes say ([`super::truth`]).
//!
//! The judge never trusts the code under test to say what is right: an
//! accepted ledger must pass the integrity rules and be exactly the ledger
//! the authoritative payload encodes; a boot must start from that ledger,
//! commit what `plan` said it would, leave a memory that recovers to what
//! it committed, and leave every store's bytes where they were.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use ic_stable_structures::Memory;
use ic_stable_structures::memory_manager::{MemoryId, MemoryManager};

use super::base::{BaseImage, BaseKind, SENTINEL_LEN, sentinel, sentinel_offsets};
use super::entropy::Entropy;
use super::memory::FuzzMemory;
use super::mutate::{MutationLog, mutate_image, mutate_store, rewrite_payload};
use super::truth::{Truth, read_truth, reads_as_fresh};
use crate::codec::{CborLedgerCodec, LedgerCodec};
use crate::declaration::DeclarationSnapshot;
use crate::diagnostics::{commit_recovery_diagnostic_of, diagnostic_export_of};
use crate::image::{RawMemoryClass, WASM_PAGE_SIZE, classify_raw_memory};
use crate::ledger::AllocationLedger;
use crate::runtime::{LayoutVerdict, MemoryRuntime};
use crate::slot::MEMORY_MANAGER_LEDGER_ID;
use crate::validate::AcceptAllPolicy;

/// A call a case makes over the mutated image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    /// `classify_raw_memory`.
    Classify,
    /// `MemoryRuntime::check` with nothing declared: recovery as a boot does it.
    Recover,
    /// `MemoryRuntime::check` with the layout the image was last booted with.
    Check,
    /// `MemoryRuntime::plan` of the next release's layout.
    Plan,
    /// `diagnostic_export_of`.
    Diagnostics,
    /// `commit_recovery_diagnostic_of`.
    CommitDiagnostic,
    /// `MemoryRuntime::bootstrap` of the next release's layout, then the
    /// stores' grows and writes an application would make.
    Bootstrap,
}

impl Call {
    /// Every call, in the order a case makes them.
    pub const ALL: [Self; 7] = [
        Self::Classify,
        Self::Recover,
        Self::Check,
        Self::Plan,
        Self::Diagnostics,
        Self::CommitDiagnostic,
        Self::Bootstrap,
    ];

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Classify => "classify_raw_memory",
            Self::Recover => "recover",
            Self::Check => "check",
            Self::Plan => "plan",
            Self::Diagnostics => "diagnostic_export_of",
            Self::CommitDiagnostic => "commit_recovery_diagnostic_of",
            Self::Bootstrap => "bootstrap",
        }
    }
}

/// What a call's outcome was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Accepted, and what it read is the base image's ledger.
    AcceptedIdentical,
    /// Accepted a different ledger that the re-sealed bytes really say: it
    /// passes the integrity rules and re-encodes to exactly its payload.
    AcceptedChanged,
    /// Refused with a typed error.
    RefusedTyped,
    /// Panicked.
    Panic,
    /// Accepted a ledger that breaks the integrity rules or is not what the
    /// bytes say (or a boot committed over one).
    WrongLedger,
    /// A read-only call, or a refused boot, wrote or grew the memory.
    Write,
    /// A boot was accepted, but a store's bytes moved or were overwritten
    /// (two memories share a bucket, a size was lost).
    StoreDamaged,
    /// `plan` predicted another verdict or generation than the boot's.
    VerdictMismatch,
}

impl Category {
    /// Every category, in the order reports list them.
    pub const ALL: [Self; 8] = [
        Self::AcceptedIdentical,
        Self::AcceptedChanged,
        Self::RefusedTyped,
        Self::Panic,
        Self::WrongLedger,
        Self::Write,
        Self::StoreDamaged,
        Self::VerdictMismatch,
    ];

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Self::AcceptedIdentical => "accepted-identical",
            Self::AcceptedChanged => "accepted-changed",
            Self::RefusedTyped => "refused-typed",
            Self::Panic => "panic",
            Self::WrongLedger => "wrong-ledger",
            Self::Write => "write",
            Self::StoreDamaged => "store-damaged",
            Self::VerdictMismatch => "verdict-mismatch",
        }
    }

    /// Whether this outcome is a failure of the code under test.
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Self::AcceptedIdentical | Self::AcceptedChanged | Self::RefusedTyped
        )
    }
}

/// One failure of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The call that failed.
    pub call: Call,
    /// How (a failure category).
    pub category: Category,
    /// What makes it distinct from other findings (a panic's location and
    /// message, the rule a wrong ledger broke), without the case's numbers.
    pub signature: String,
    /// The case's particulars.
    pub detail: String,
}

/// Everything one case did and found.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// The base image.
    pub base: BaseKind,
    /// The mutations, in words.
    pub log: MutationLog,
    /// Each call's outcome category (a call that also wrote has a second,
    /// `Write`, entry).
    pub outcomes: Vec<(Call, Category)>,
    /// The failures, in call order.
    pub findings: Vec<Finding>,
}

impl fmt::Display for CaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "base image: {}", self.base.name())?;
        for step in &self.log {
            writeln!(f, "  mutation: {step}")?;
        }
        for (call, category) in &self.outcomes {
            writeln!(f, "  {:<30} {}", call.name(), category.name())?;
        }
        for finding in &self.findings {
            writeln!(
                f,
                "  FAILURE {} {}: {} ({})",
                finding.call.name(),
                finding.category.name(),
                finding.signature,
                finding.detail
            )?;
        }
        Ok(())
    }
}

/// Runs the case of `seed` over `base`.
pub fn run_case(base: BaseKind, seed: u64) -> CaseReport {
    run_case_with(base, &mut Entropy::from_seed(seed))
}

/// Runs the case `entropy` chooses over `base`.
pub fn run_case_with(base: BaseKind, entropy: &mut Entropy) -> CaseReport {
    let base_image = base.image();
    let mut log = MutationLog::new();
    let (image, truth, header_before, stores_judged) = mutate(base_image, entropy, &mut log);
    let mut judge = Judge {
        base: base_image,
        truth: &truth,
        stores_judged,
        report: CaseReport {
            base,
            log,
            outcomes: Vec::new(),
            findings: Vec::new(),
        },
    };
    judge.classify(&image, header_before.as_ref());
    let empty = DeclarationSnapshot::new(Vec::new()).expect("no declarations are unique");
    judge.check(&image, Call::Recover, empty);
    judge.check(&image, Call::Check, base_image.declarations.clone());
    let verdict = judge.plan(&image);
    judge.diagnostics(&image);
    judge.commit_diagnostic(&image);
    judge.bootstrap(&image, &verdict);
    judge.report
}

/// Applies the layers `entropy` picks (at least one): the ledger payload,
/// the commit store, the MemoryManager image. Returns the image, the truth
/// read before the MemoryManager damage, the header `classify_raw_memory`
/// read then, and whether the stores must still read as the base image
/// wrote them (not when the damage left a memory that reads as fresh, nor
/// after two layout changes).
fn mutate(
    base: &BaseImage,
    e: &mut Entropy,
    log: &mut MutationLog,
) -> (FuzzMemory, Truth, Option<crate::image::MemoryManagerHeader>, bool) {
    let image = FuzzMemory::new(&base.image);
    let layers = 1 + e.below(7);
    if layers & 0b011 != 0 {
        let manager = MemoryManager::init(image.clone());
        let id0 = manager.get(MemoryId::new(MEMORY_MANAGER_LEDGER_ID));
        if layers & 0b001 != 0 {
            rewrite_payload(&id0, e, log);
        }
        if layers & 0b010 != 0 {
            for _ in 0..=e.below(2) {
                mutate_store(&id0, e, log);
            }
        }
    }
    let truth = read_truth(&image);
    let header = match classify_raw_memory(&image) {
        Ok(RawMemoryClass::MemoryManager(header)) => Some(header),
        _ => None,
    };
    let mut layout_changes = 0;
    if layers & 0b100 != 0 {
        for _ in 0..=e.below(2) {
            layout_changes += usize::from(mutate_image(
                &image,
                |pages| image.resize_uncounted(pages),
                e,
                log,
            ));
        }
    }
    // Damage that leaves what the format defines as a memory without a
    // ledger (a crash state a first boot must accept) makes genesis right:
    // nothing the runtime can see tells it from that crash.
    let fresh = layers & 0b100 != 0 && reads_as_fresh(&image);
    let truth = if fresh {
        Truth::Empty {
            genesis_allowed: true,
        }
    } else {
        truth
    };
    // One layout change must be detected if it moves a store; two may agree
    // with each other (owners swapped, a size and its bucket released
    // together, an image cut and extended again), which no reader of an
    // unchecksummed header can tell from the original.
    let stores_judged = !fresh && layout_changes <= 1;
    (image, truth, header, stores_judged)
}

/// What `plan` said the boot would do.
enum PlanVerdict {
    Panicked,
    Unreadable,
    Refused,
    CommitRefused,
    Accepted(Option<u64>),
}

struct Judge<'a> {
    base: &'a BaseImage,
    truth: &'a Truth,
    /// Whether the base's stores must still read as written (their
    /// sentinels are compared with what the base wrote after a boot).
    stores_judged: bool,
    report: CaseReport,
}

impl Judge<'_> {
    fn outcome(&mut self, call: Call, category: Category) {
        self.report.outcomes.push((call, category));
    }

    fn fail(
        &mut self,
        call: Call,
        category: Category,
        signature: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.outcome(call, category);
        self.report.findings.push(Finding {
            call,
            category,
            signature: signature.into(),
            detail: detail.into(),
        });
    }

    fn panicked(&mut self, call: Call, panic: Panic, when: &str) {
        self.fail(
            call,
            Category::Panic,
            panic.signature(),
            format!("{when}: {}", panic.message),
        );
    }

    /// A read-only call must not write or grow anything.
    fn read_only(&mut self, call: Call, memory: &FuzzMemory) {
        if memory.written_bytes() > 0 || memory.grown_pages() > 0 {
            self.fail(
                call,
                Category::Write,
                format!("{} wrote during a read-only call", call.name()),
                format!(
                    "{} bytes in {} writes, {} pages grown",
                    memory.written_bytes(),
                    memory.write_calls(),
                    memory.grown_pages()
                ),
            );
        }
    }

    /// Judges a ledger a call accepted: Ok with its category, or the
    /// wrong-ledger signature and detail.
    fn ledger(&self, ledger: &AllocationLedger) -> Result<Category, (String, String)> {
        if let Err(error) = ledger.check_integrity() {
            return Err((
                "accepted a ledger that breaks the integrity rules".into(),
                error.to_string(),
            ));
        }
        let changed_or_identical = |ledger: &AllocationLedger| {
            if ledger == &self.base.ledger {
                Category::AcceptedIdentical
            } else {
                Category::AcceptedChanged
            }
        };
        match self.truth {
            Truth::Ledger {
                payload, generation, ..
            } => {
                if CborLedgerCodec.encode(ledger) == *payload {
                    Ok(changed_or_identical(ledger))
                } else {
                    Err((
                        "accepted a ledger other than the one the authoritative payload encodes".into(),
                        format!(
                            "generation {} accepted, the bytes hold generation {generation}",
                            ledger.current_generation()
                        ),
                    ))
                }
            }
            Truth::Empty {
                genesis_allowed: true,
            } if ledger == &AllocationLedger::genesis() => Ok(changed_or_identical(ledger)),
            Truth::Empty {
                genesis_allowed: true,
            } => Err((
                "accepted a ledger where the bytes hold none".into(),
                format!("generation {}", ledger.current_generation()),
            )),
            truth => {
                let (rule, reason) = truth.refusal().unwrap_or_default();
                Err((
                    format!("accepted a ledger although {rule}"),
                    format!(
                        "generation {} accepted{}{}",
                        ledger.current_generation(),
                        self.base_generation_note(),
                        with_reason(&reason)
                    ),
                ))
            }
        }
    }

    fn base_generation_note(&self) -> String {
        format!(
            " (the base image holds generation {})",
            self.base.ledger.current_generation()
        )
    }

    fn judge_ledger(&mut self, call: Call, ledger: &AllocationLedger) {
        match self.ledger(ledger) {
            Ok(category) => self.outcome(call, category),
            Err((signature, detail)) => self.fail(call, Category::WrongLedger, signature, detail),
        }
    }

    fn classify(&mut self, image: &FuzzMemory, before: Option<&crate::image::MemoryManagerHeader>) {
        let memory = image.fork();
        match guarded(|| classify_raw_memory(&memory)) {
            Err(panic) => self.panicked(Call::Classify, panic, "classifying"),
            Ok(Ok(RawMemoryClass::MemoryManager(header))) if Some(&header) == before => {
                self.outcome(Call::Classify, Category::AcceptedIdentical);
            }
            Ok(Ok(_)) => self.outcome(Call::Classify, Category::AcceptedChanged),
            Ok(Err(_)) => self.outcome(Call::Classify, Category::RefusedTyped),
        }
        self.read_only(Call::Classify, &memory);
    }

    fn check(&mut self, image: &FuzzMemory, call: Call, declarations: DeclarationSnapshot) {
        let memory = image.fork();
        match guarded(|| MemoryRuntime::check(&memory, declarations, &AcceptAllPolicy)) {
            Err(panic) => self.panicked(call, panic, "checking"),
            Ok(Ok((ledger, _))) => self.judge_ledger(call, &ledger),
            Ok(Err(_)) => self.outcome(call, Category::RefusedTyped),
        }
        self.read_only(call, &memory);
    }

    fn plan(&mut self, image: &FuzzMemory) -> PlanVerdict {
        let memory = image.fork();
        let declarations = self.base.next.clone();
        let verdict = match guarded(|| MemoryRuntime::plan(&memory, declarations, &AcceptAllPolicy)) {
            Err(panic) => {
                self.panicked(Call::Plan, panic, "planning");
                PlanVerdict::Panicked
            }
            Ok(Err(_)) => {
                self.outcome(Call::Plan, Category::RefusedTyped);
                PlanVerdict::Unreadable
            }
            Ok(Ok(plan)) => {
                self.judge_ledger(Call::Plan, &plan.ledger);
                match plan.verdict {
                    LayoutVerdict::Accepted { next_generation, .. } => PlanVerdict::Accepted(next_generation),
                    LayoutVerdict::Refused { .. } => PlanVerdict::Refused,
                    LayoutVerdict::CommitRefused { .. } => PlanVerdict::CommitRefused,
                }
            }
        };
        self.read_only(Call::Plan, &memory);
        verdict
    }

    fn diagnostics(&mut self, image: &FuzzMemory) {
        let call = Call::Diagnostics;
        let memory = image.fork();
        match guarded(|| diagnostic_export_of(&memory)) {
            Err(panic) => self.panicked(call, panic, "exporting diagnostics"),
            Ok(Err(_)) => self.outcome(call, Category::RefusedTyped),
            Ok(Ok(export)) => {
                // Diagnostics report an empty history beside data (they
                // show what is there, they do not boot), so genesis is what
                // they must show whenever no generation was committed.
                let expected = match self.truth {
                    Truth::Empty { .. } => Some(AllocationLedger::genesis()),
                    truth => truth.ledger(),
                };
                let shown_matches = expected.as_ref().is_some_and(|ledger| {
                    let history = ledger.allocation_history();
                    export.current_generation == ledger.current_generation()
                        && export.generations == history.generations()
                        && export
                            .records
                            .iter()
                            .map(|record| &record.allocation)
                            .eq(history.records())
                });
                match expected {
                    Some(ledger) if shown_matches => {
                        let category = if ledger == self.base.ledger {
                            Category::AcceptedIdentical
                        } else {
                            Category::AcceptedChanged
                        };
                        self.outcome(call, category);
                    }
                    Some(ledger) => self.fail(
                        call,
                        Category::WrongLedger,
                        "diagnostics show a ledger other than the one the bytes hold",
                        format!(
                            "generation {} shown, the bytes hold generation {}",
                            export.current_generation,
                            ledger.current_generation()
                        ),
                    ),
                    None => {
                        let (rule, reason) = self.truth.refusal().unwrap_or_default();
                        self.fail(
                            call,
                            Category::WrongLedger,
                            format!("diagnostics show a ledger although {rule}"),
                            format!(
                                "generation {} shown{}",
                                export.current_generation,
                                with_reason(&reason)
                            ),
                        );
                    }
                }
            }
        }
        self.read_only(call, &memory);
    }

    fn commit_diagnostic(&mut self, image: &FuzzMemory) {
        let call = Call::CommitDiagnostic;
        let memory = image.fork();
        match guarded(|| commit_recovery_diagnostic_of(&memory)) {
            Err(panic) => self.panicked(call, panic, "reading the commit diagnostic"),
            Ok(Err(_)) => self.outcome(call, Category::RefusedTyped),
            Ok(Ok(diagnostic)) if diagnostic.recovery_error.is_some() => {
                self.outcome(call, Category::RefusedTyped);
            }
            Ok(Ok(diagnostic)) => {
                let named = diagnostic
                    .authoritative_slot
                    .zip(diagnostic.authoritative_generation);
                let expected = match self.truth {
                    Truth::Ledger { slot, generation, .. } | Truth::Undecodable { slot, generation, .. } => {
                        Some(Some((*slot, *generation)))
                    }
                    Truth::Empty { .. } => Some(None),
                    Truth::Refused { .. } => None,
                };
                if expected == Some(named) {
                    let identical =
                        matches!(self.truth, Truth::Ledger { ledger, .. } if *ledger == self.base.ledger);
                    self.outcome(
                        call,
                        if identical {
                            Category::AcceptedIdentical
                        } else {
                            Category::AcceptedChanged
                        },
                    );
                } else {
                    self.fail(
                        call,
                        Category::WrongLedger,
                        "the commit diagnostic names another authoritative slot than the bytes do",
                        match expected {
                            Some(expected) => {
                                format!("named (slot, generation) {named:?}, the bytes name {expected:?}")
                            }
                            None => format!(
                                "named (slot, generation) {named:?} without a recovery error, although {}",
                                self.truth.refusal().unwrap_or_default().0
                            ),
                        },
                    );
                }
            }
        }
        self.read_only(call, &memory);
    }

    fn bootstrap(&mut self, image: &FuzzMemory, verdict: &PlanVerdict) {
        let call = Call::Bootstrap;
        let memory = image.fork();
        let declarations = self.base.next.clone();
        let booted = guarded(|| MemoryRuntime::bootstrap(memory.clone(), declarations, &AcceptAllPolicy));
        let runtime = match booted {
            Err(panic) => return self.panicked(call, panic, "booting"),
            Ok(Err(error)) => {
                self.outcome(call, Category::RefusedTyped);
                if memory.written_bytes() > 0 || memory.grown_pages() > 0 {
                    self.fail(
                        call,
                        Category::Write,
                        "a refused boot wrote",
                        format!(
                            "{} bytes, {} pages grown; refused with: {error}",
                            memory.written_bytes(),
                            memory.grown_pages()
                        ),
                    );
                }
                if let PlanVerdict::Accepted(_) = verdict {
                    self.fail(
                        call,
                        Category::VerdictMismatch,
                        "plan accepted a boot that bootstrap refused",
                        error.to_string(),
                    );
                }
                return;
            }
            Ok(Ok(runtime)) => runtime,
        };
        let committed = runtime.ledger().clone();
        let Some(start) = self.truth.ledger() else {
            let (rule, reason) = self.truth.refusal().unwrap_or_default();
            return self.fail(
                call,
                Category::WrongLedger,
                format!("a boot was accepted although {rule}"),
                format!(
                    "committed generation {}{}{}",
                    committed.current_generation(),
                    self.base_generation_note(),
                    with_reason(&reason)
                ),
            );
        };
        if let Some((signature, detail)) = extends(&start, &committed) {
            return self.fail(call, Category::WrongLedger, signature, detail);
        }
        self.outcome(
            call,
            if start == self.base.ledger {
                Category::AcceptedIdentical
            } else {
                Category::AcceptedChanged
            },
        );
        let expected = match verdict {
            PlanVerdict::Accepted(next) => Ok(next.unwrap_or(start.current_generation())),
            PlanVerdict::Refused => Err("refused"),
            PlanVerdict::CommitRefused => Err("refused the commit of"),
            PlanVerdict::Unreadable => Err("could not read the image of"),
            PlanVerdict::Panicked => Err("panicked on"),
        };
        match expected {
            Ok(generation) if generation == committed.current_generation() => {}
            Ok(generation) => self.fail(
                call,
                Category::VerdictMismatch,
                "plan predicted another generation than the boot committed",
                format!("plan {generation}, boot {}", committed.current_generation()),
            ),
            Err(what) => self.fail(
                call,
                Category::VerdictMismatch,
                format!("plan {what} a boot that bootstrap accepted"),
                format!("committed generation {}", committed.current_generation()),
            ),
        }
        let grown = match guarded(|| use_stores(&runtime, self.base)) {
            Ok(grown) => grown,
            Err(panic) => {
                return self.panicked(call, panic, "growing and writing stores after an accepted boot");
            }
        };
        drop(runtime);
        let empty = DeclarationSnapshot::new(Vec::new()).expect("no declarations are unique");
        match guarded(|| MemoryRuntime::check(&memory, empty, &AcceptAllPolicy)) {
            Err(panic) => return self.panicked(call, panic, "recovering after an accepted boot"),
            Ok(Err(error)) => {
                return self.fail(
                    call,
                    Category::WrongLedger,
                    "the memory an accepted boot left does not recover",
                    error.to_string(),
                );
            }
            Ok(Ok((recovered, _))) if recovered != committed => {
                return self.fail(
                    call,
                    Category::WrongLedger,
                    "the generation a boot committed does not recover as committed",
                    format!(
                        "committed {}, recovered {}",
                        committed.current_generation(),
                        recovered.current_generation()
                    ),
                );
            }
            Ok(Ok(_)) => {}
        }
        let stores_judged = self.stores_judged;
        match guarded(|| damaged_sentinels(image, &memory, self.base, stores_judged, &grown)) {
            Err(panic) => self.panicked(call, panic, "reading the stores back after an accepted boot"),
            Ok(damaged) => {
                if !damaged.changed_by_boot.is_empty() {
                    self.fail(
                        call,
                        Category::StoreDamaged,
                        "an accepted boot changed a store's bytes",
                        damaged.changed_by_boot.join(", "),
                    );
                }
                if !damaged.not_as_written.is_empty() {
                    self.fail(
                        call,
                        Category::StoreDamaged,
                        "a boot was accepted over a header that makes a store read other bytes than were written",
                        damaged.not_as_written.join(", "),
                    );
                }
            }
        }
    }
}

fn with_reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!("; {reason}")
    }
}

/// Why `committed` does not extend `start` (a boot must keep every
/// generation and record and add at most one generation), if it does not.
fn extends(start: &AllocationLedger, committed: &AllocationLedger) -> Option<(String, String)> {
    let before = start.allocation_history();
    let after = committed.allocation_history();
    let keeps_records = before.records().iter().all(|record| {
        after
            .records()
            .iter()
            .any(|r| r.stable_key() == record.stable_key() && r.slot() == record.slot())
    });
    let step = committed
        .current_generation()
        .checked_sub(start.current_generation());
    let ok = committed.check_integrity().is_ok()
        && matches!(step, Some(0 | 1))
        && after.generations().starts_with(before.generations())
        && keeps_records;
    (!ok).then(|| {
        (
            "a boot committed over a ledger other than the one the bytes hold".into(),
            format!(
                "the bytes hold generation {}, the boot committed {}",
                start.current_generation(),
                committed.current_generation()
            ),
        )
    })
}

/// What an application does after a boot: opens the new store and every
/// store with data, grows each (stores with data by a whole bucket, so a
/// new bucket is allocated) and writes a sentinel into the new space.
/// Returns the sentinels written.
fn use_stores(runtime: &MemoryRuntime<FuzzMemory>, base: &BaseImage) -> Vec<(u8, u64)> {
    let mut written = Vec::new();
    let (key, id) = &base.new_store;
    if let Ok(memory) = runtime.open(key, *id)
        && memory.grow(1) >= 0
    {
        memory.write(0, &sentinel(*id, 0));
        written.push((*id, 0));
    }
    for store in base.stores.iter().filter(|store| store.declared) {
        if let Ok(memory) = runtime.open(&store.key, store.id) {
            let at = memory.size().saturating_mul(WASM_PAGE_SIZE);
            if memory.grow(base.bucket_pages) >= 0 {
                memory.write(at, &sentinel(store.id, at));
                written.push((store.id, at));
            }
        }
    }
    written
}

/// Sentinels that did not read back after an accepted boot.
struct DamagedSentinels {
    /// Read differently before and after the boot (both through the
    /// image's own header): the boot or the stores' grows wrote over them.
    changed_by_boot: Vec<String>,
    /// Read after the boot other than the base image wrote them (judged
    /// only after at most one layout change), or a sentinel `use_stores`
    /// wrote that does not read back.
    not_as_written: Vec<String>,
}

/// Compares every sentinel within its store's size: the base's, read
/// through `before`'s header and `after`'s, and those `use_stores` wrote.
/// PRECONDITION: the boot accepted `before`, so its header loads.
fn damaged_sentinels(
    before: &FuzzMemory,
    after: &FuzzMemory,
    base: &BaseImage,
    stores_judged: bool,
    grown: &[(u8, u64)],
) -> DamagedSentinels {
    let read = |manager: &MemoryManager<FuzzMemory>, id: u8, offset: u64| {
        let memory = manager.get(MemoryId::new(id));
        (offset + SENTINEL_LEN <= memory.size().saturating_mul(WASM_PAGE_SIZE)).then(|| {
            let mut bytes = [0u8; SENTINEL_LEN as usize];
            memory.read(offset, &mut bytes);
            bytes
        })
    };
    let (before, after) = (
        MemoryManager::init(before.fork()),
        MemoryManager::init(after.clone()),
    );
    let mut damaged = DamagedSentinels {
        changed_by_boot: Vec::new(),
        not_as_written: Vec::new(),
    };
    for store in &base.stores {
        for offset in sentinel_offsets(store.size_pages, base.bucket_pages) {
            let (was, is) = (read(&before, store.id, offset), read(&after, store.id, offset));
            let at = format!("memory {} at offset {offset}", store.id);
            if let (Some(was), Some(is)) = (was, is)
                && was != is
            {
                damaged.changed_by_boot.push(at.clone());
            }
            if stores_judged && is.is_some_and(|is| is != sentinel(store.id, offset)) {
                damaged.not_as_written.push(at);
            }
        }
    }
    for &(id, offset) in grown {
        if read(&after, id, offset) != Some(sentinel(id, offset)) {
            damaged
                .not_as_written
                .push(format!("memory {id} at offset {offset}, written after the boot"));
        }
    }
    damaged
}

// ---- panics ------------------------------------------------------------------

/// A caught panic.
struct Panic {
    message: String,
    location: String,
}

impl Panic {
    /// Location and message with digits blanked, so one panic site with
    /// different numbers counts as one finding.
    fn signature(&self) -> String {
        let message: String = self
            .message
            .chars()
            .take(160)
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        format!("panicked at {}: {message}", self.location)
    }
}

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static CAUGHT: RefCell<Option<Panic>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records the message and
/// location of panics raised inside [`guarded`] on this thread instead of
/// printing them, and hands every other panic to the hook it replaced.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                let location = info.location().map_or_else(
                    || "an unknown location".into(),
                    |l| format!("{}:{}", l.file(), l.line()),
                );
                CAUGHT.with(|caught| *caught.borrow_mut() = Some(Panic { message, location }));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `call`, turning a panic into `Err` with its message and location.
fn guarded<T>(call: impl FnOnce() -> T) -> Result<T, Panic> {
    install_hook();
    CAPTURING.with(|capturing| capturing.set(true));
    let result = catch_unwind(AssertUnwindSafe(call));
    CAPTURING.with(|capturing| capturing.set(false));
    result.map_err(|_| {
        CAUGHT.with(|caught| caught.borrow_mut().take()).unwrap_or(Panic {
            message: "a panic the hook did not see".into(),
            location: "an unknown location".into(),
        })
    })
}
