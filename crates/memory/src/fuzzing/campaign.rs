//! Many cases: deterministic from a seed, spread over threads, counted per
//! category and per call, with every distinct failure kept once with the
//! first case that showed it (so it replays with `--case`).
//!
//! Case `i` of seed `s` uses the stream `case_seed(s, i)` and a base image
//! drawn from it by weight, whatever the thread count, so a report is the
//! same on any machine and any case replays alone.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use super::base::BaseKind;
use super::case::{Call, CaseReport, Category, run_case_with};
use super::entropy::{Entropy, case_seed};

/// How many case indices a distinct finding keeps.
pub const SAMPLED_CASES: usize = 8;

/// What to run.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    /// How many cases.
    pub cases: u64,
    /// The campaign seed.
    pub seed: u64,
    /// Worker threads (at least one).
    pub threads: usize,
    /// The bases to draw from (by their weights); empty means all.
    pub bases: Vec<BaseKind>,
}

/// A distinct failure: one (call, category, signature), how often it was
/// seen, and the first case that showed it.
#[derive(Clone, Debug)]
pub struct DistinctFinding {
    /// How many cases showed it.
    pub count: u64,
    /// The lowest case index that showed it.
    pub first_case: u64,
    /// The lowest case indices that showed it (at most
    /// [`SAMPLED_CASES`]), to replay more than the first.
    pub cases: Vec<u64>,
    /// That case's base image.
    pub base: BaseKind,
    /// That case's particulars.
    pub detail: String,
    /// That case's mutations.
    pub log: Vec<String>,
}

/// The counts of a campaign.
#[derive(Clone, Debug, Default)]
pub struct CampaignReport {
    /// Cases run.
    pub cases: u64,
    /// The campaign seed.
    pub seed: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Outcomes per call and category.
    pub per_call: BTreeMap<(Call, Category), u64>,
    /// Cases per base image.
    pub per_base: BTreeMap<BaseKind, u64>,
    /// Cases with at least one failure.
    pub failing_cases: u64,
    /// Every distinct failure.
    pub distinct: BTreeMap<(Call, Category, String), DistinctFinding>,
}

impl CampaignReport {
    /// How many outcomes fell in `category`, over all calls.
    pub fn total(&self, category: Category) -> u64 {
        self.per_call
            .iter()
            .filter(|((_, c), _)| *c == category)
            .map(|(_, n)| n)
            .sum()
    }

    /// How many outcomes were failures.
    pub fn failures(&self) -> u64 {
        Category::ALL
            .into_iter()
            .filter(|c| c.is_failure())
            .map(|c| self.total(c))
            .sum()
    }

    fn add(&mut self, case: u64, report: CaseReport) {
        self.cases += 1;
        *self.per_base.entry(report.base).or_default() += 1;
        for outcome in &report.outcomes {
            *self.per_call.entry(*outcome).or_default() += 1;
        }
        if !report.findings.is_empty() {
            self.failing_cases += 1;
        }
        for finding in report.findings {
            let key = (finding.call, finding.category, finding.signature);
            let entry = self.distinct.entry(key).or_insert_with(|| DistinctFinding {
                count: 0,
                first_case: case,
                cases: Vec::new(),
                base: report.base,
                detail: finding.detail.clone(),
                log: report.log.clone(),
            });
            entry.count += 1;
            keep_lowest(&mut entry.cases, [case]);
            if case < entry.first_case {
                entry.first_case = case;
                entry.base = report.base;
                entry.detail = finding.detail;
                entry.log = report.log.clone();
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.cases += other.cases;
        self.failing_cases += other.failing_cases;
        for (key, n) in other.per_call {
            *self.per_call.entry(key).or_default() += n;
        }
        for (key, n) in other.per_base {
            *self.per_base.entry(key).or_default() += n;
        }
        for (key, finding) in other.distinct {
            match self.distinct.get_mut(&key) {
                None => {
                    self.distinct.insert(key, finding);
                }
                Some(mine) => {
                    mine.count += finding.count;
                    keep_lowest(&mut mine.cases, finding.cases.iter().copied());
                    if finding.first_case < mine.first_case {
                        let (count, cases) = (mine.count, std::mem::take(&mut mine.cases));
                        *mine = DistinctFinding {
                            count,
                            cases,
                            ..finding
                        };
                    }
                }
            }
        }
    }
}

fn keep_lowest(cases: &mut Vec<u64>, more: impl IntoIterator<Item = u64>) {
    cases.extend(more);
    cases.sort_unstable();
    cases.dedup();
    cases.truncate(SAMPLED_CASES);
}

/// The base image of case `case` and its entropy, positioned after the draw.
pub fn case_entropy(seed: u64, case: u64, bases: &[BaseKind]) -> (BaseKind, Entropy) {
    let bases = if bases.is_empty() {
        &BaseKind::ALL[..]
    } else {
        bases
    };
    let mut entropy = Entropy::from_seed(case_seed(seed, case));
    let total: u64 = bases.iter().map(|b| b.weight()).sum();
    let mut draw = entropy.below(total);
    let base = *bases
        .iter()
        .find(|b| {
            let hit = draw < b.weight();
            draw = draw.saturating_sub(b.weight());
            hit
        })
        .expect("the draw is below the total weight");
    (base, entropy)
}

/// Replays case `case` of the campaign seeded with `seed` over `bases`.
pub fn replay_case(seed: u64, case: u64, bases: &[BaseKind]) -> CaseReport {
    let (base, mut entropy) = case_entropy(seed, case, bases);
    run_case_with(base, &mut entropy)
}

/// Runs the campaign. Base images are built first (once per process).
pub fn run_campaign(config: &CampaignConfig) -> CampaignReport {
    let bases = if config.bases.is_empty() {
        BaseKind::ALL.to_vec()
    } else {
        config.bases.clone()
    };
    for base in &bases {
        base.image();
    }
    let threads = config.threads.max(1) as u64;
    let start = Instant::now();
    let mut report = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let bases = &bases;
                scope.spawn(move || {
                    let mut report = CampaignReport::default();
                    let mut case = thread;
                    while case < config.cases {
                        report.add(case, replay_case(config.seed, case, bases));
                        case += threads;
                    }
                    report
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a worker catches every case's panics"))
            .fold(CampaignReport::default(), |mut all, part| {
                all.merge(part);
                all
            })
    });
    report.seed = config.seed;
    report.elapsed = start.elapsed();
    report
}

impl fmt::Display for CampaignReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "{} cases, seed {}, {:.1} s ({:.0} cases/s); {} cases with a failure",
            self.cases,
            self.seed,
            seconds,
            self.cases as f64 / seconds.max(1e-9),
            self.failing_cases
        )?;
        let bases: Vec<String> = self
            .per_base
            .iter()
            .map(|(base, n)| format!("{} {n}", base.name()))
            .collect();
        writeln!(f, "base images: {}", bases.join(", "))?;
        write!(f, "\n{:<30}", "call")?;
        for category in Category::ALL {
            write!(f, " {:>18}", category.name())?;
        }
        writeln!(f)?;
        for call in Call::ALL {
            write!(f, "{:<30}", call.name())?;
            for category in Category::ALL {
                write!(f, " {:>18}", self.per_call.get(&(call, category)).unwrap_or(&0))?;
            }
            writeln!(f)?;
        }
        write!(f, "{:<30}", "total")?;
        for category in Category::ALL {
            write!(f, " {:>18}", self.total(category))?;
        }
        writeln!(f)?;
        if self.distinct.is_empty() {
            return writeln!(f, "\nno failures");
        }
        writeln!(f, "\n{} distinct failures:", self.distinct.len())?;
        for ((call, category, signature), finding) in &self.distinct {
            writeln!(
                f,
                "\n- {} {} x{}: {signature}\n  cases {:?}\n  first: case {} (base {}): {}",
                call.name(),
                category.name(),
                finding.count,
                finding.cases,
                finding.first_case,
                finding.base.name(),
                finding.detail
            )?;
            for step in &finding.log {
                writeln!(f, "    {step}")?;
            }
        }
        Ok(())
    }
}
