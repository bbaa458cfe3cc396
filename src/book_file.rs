//! File mode: `deltabook book` reads a `.jsonl` file, runs the engine over
//! it (`batch_size` lines per engine timestamp) and writes the reference
//! outputs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deltabook_dataflows::query::{Plan, Table};
use deltabook_dataflows::runner::{
    self, BookOutcome, EventSource, QueryAnswer, RunOptions, SourceLine,
};
use deltabook_sinks::files;

use crate::line_blocks::BlockLines;

/// A `.jsonl` input as an event source: one event per line, the newline
/// removed; a blank line is an event too. Any readable path works (a file,
/// `/dev/stdin`, a pipe or FIFO): it is opened and read once.
pub struct JsonlFile {
    path: PathBuf,
}

impl JsonlFile {
    /// Checks that `path` can be opened for reading and is not a directory.
    pub fn open(path: &Path) -> Result<JsonlFile> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("opening {}", path.display()))?;
        anyhow::ensure!(
            !meta.is_dir(),
            "{} is a directory, not a file of events",
            path.display()
        );
        Ok(JsonlFile {
            path: path.to_path_buf(),
        })
    }
}

impl EventSource for JsonlFile {
    fn events(
        &self,
        max_bytes: usize,
    ) -> Box<dyn Iterator<Item = Result<SourceLine, String>> + '_> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) => {
                return Box::new(std::iter::once(Err(format!(
                    "opening {}: {e}",
                    self.path.display()
                ))))
            }
        };
        let mut lines = BlockLines::new(file, max_bytes);
        let path = self.path.display().to_string();
        Box::new(std::iter::from_fn(move || {
            lines
                .next_line()
                .map_err(|e| format!("reading {path}: {e}"))
                .transpose()
        }))
    }
}

/// Books `trades` with `options`, showing progress on stderr: a bar on a
/// terminal, a plain line every few seconds otherwise.
pub fn run_book(
    trades: &Path,
    prices: Option<&Path>,
    custodian: Option<&Path>,
    options: &RunOptions,
) -> Result<BookOutcome> {
    let source = Arc::new(JsonlFile::open(trades)?);
    let open = |path: Option<&Path>| -> Result<Option<Arc<dyn EventSource>>> {
        Ok(match path {
            Some(path) => Some(Arc::new(JsonlFile::open(path)?)),
            None => None,
        })
    };
    let extra = runner::ExtraSources {
        prices: open(prices)?,
        custodian: open(custodian)?,
    };
    // A regular file's size gives the bar a length; a pipe has none.
    let total_bytes = std::fs::metadata(trades)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let mut progress = Progress::new(total_bytes);
    let report: runner::ProgressFn = Box::new(move |lines| progress.update(lines));
    let outcome = runner::run_with(source, extra, options, Some(report))?;
    Ok(outcome)
}

/// Where `corrections.jsonl` is written while a run is under way: renamed
/// by [`write_outputs`] once the run has succeeded, so a failed run leaves
/// no file that looks complete.
const PARTIAL_CORRECTIONS: &str = "corrections.jsonl.partial";

/// Makes `options` write corrections into `dir` as timestamps complete
/// (created if missing), instead of keeping every correction in memory
/// until the end; [`write_outputs`] then completes the file.
pub fn stream_corrections_to(options: &mut RunOptions, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(PARTIAL_CORRECTIONS);
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // Buffered by the writer itself (a megabyte at a time).
    let writer = files::CorrectionsJsonl::new(file);
    options.stream_corrections = Some(runner::CorrectionStream::new(writer));
    Ok(())
}

/// Writes the reference files into `dir` (created if missing): lots,
/// positions, rejections and corrections of `trades.md` and
/// `corrections.md`, and valuations, breaks, gaps and the tick and statement
/// rejections of `reconciliation.md` (each written, even when empty).
/// `lots.csv`, the largest table to sort, is written on a thread of its
/// own while this one writes the rest: the run is over, both cores are
/// free, and the tail of a `book` run is what they take together.
pub fn write_outputs(outcome: &mut BookOutcome, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Lent to the thread (and given back sorted, as writing leaves it).
    let mut lots = std::mem::take(&mut outcome.lots);
    let written = std::thread::scope(|scope| {
        let lots_written = std::thread::Builder::new()
            .name("deltabook-lots".to_string())
            .spawn_scoped(scope, || {
                write_file(dir, "lots.csv", &mut |out| {
                    files::write_lots_csv(out, &mut lots)
                })
            })
            .context("starting the thread that writes lots.csv")?;
        let rest = write_other_outputs(outcome, dir);
        let lots_result = match lots_written.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        rest.and(lots_result)
    });
    outcome.lots = lots;
    written
}

/// What writes one output file's rows into its buffered file.
type FileBody<'a> = dyn FnMut(&mut BufWriter<File>) -> Result<(), files::FileSinkError> + 'a;

/// Creates `dir/name` and writes it with `body`, buffered.
fn write_file(dir: &Path, name: &str, body: &mut FileBody<'_>) -> Result<()> {
    let path = dir.join(name);
    let mut out = BufWriter::new(
        File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    body(&mut out)?;
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// Every file of [`write_outputs`] but `lots.csv` (not read here).
fn write_other_outputs(outcome: &mut BookOutcome, dir: &Path) -> Result<()> {
    let write = |name: &str, body: &mut FileBody<'_>| write_file(dir, name, body);
    write("positions.csv", &mut |out| {
        files::write_positions_csv(out, &mut outcome.positions)
    })?;
    write("rejected.jsonl", &mut |out| {
        files::write_rejected_jsonl(out, &mut outcome.rejected)
    })?;
    if outcome.corrections_streamed {
        // Written during the run ([`stream_corrections_to`]); complete now.
        let (partial, path) = (dir.join(PARTIAL_CORRECTIONS), dir.join("corrections.jsonl"));
        std::fs::rename(&partial, &path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    } else {
        write("corrections.jsonl", &mut |out| {
            files::write_corrections_jsonl(out, &mut outcome.corrections)
        })?;
    }
    write("valuations.csv", &mut |out| {
        files::write_valuations_csv(out, &mut outcome.valuations)
    })?;
    write("breaks.csv", &mut |out| {
        files::write_breaks_csv(out, &mut outcome.breaks)
    })?;
    write("gaps.csv", &mut |out| {
        files::write_gaps_csv(out, &mut outcome.gaps)
    })?;
    write("rejected_prices.jsonl", &mut |out| {
        files::write_rejected_jsonl(out, &mut outcome.rejected_prices)
    })?;
    write("rejected_custodian.jsonl", &mut |out| {
        files::write_rejected_jsonl(out, &mut outcome.rejected_custodian)
    })?;
    Ok(())
}

/// Compiles `sql` for `book --query`, refusing tables this run does not
/// maintain (valuations need prices, breaks need custodian statements).
pub fn query_plan(sql: &str, prices: bool, custodian: bool) -> Result<Plan> {
    let plan = Plan::compile(sql).map_err(|e| anyhow::anyhow!("--query: {e}"))?;
    for source in &plan.sources {
        let missing = match source.table {
            Table::Valuations if !prices => Some("--prices"),
            Table::Breaks if !custodian => Some("--custodian"),
            _ => None,
        };
        if let Some(flag) = missing {
            anyhow::bail!(
                "--query: table {} needs {flag} (it is not maintained without it)",
                source.table.name()
            );
        }
    }
    Ok(plan)
}

/// Prints a query's answer to standard output as CSV; an answer with
/// evaluation errors is refused (the errors go to standard error).
pub fn print_answer(answer: &QueryAnswer) -> Result<()> {
    if !answer.errors.is_empty() {
        for error in &answer.errors {
            eprintln!("query error    {error}");
        }
        anyhow::bail!(
            "--query: {} evaluation error(s); no answer printed",
            answer.errors.len()
        );
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    files::write_query_csv(&mut out, &answer.columns, &answer.rows)?;
    out.flush()?;
    Ok(())
}

/// The one-screen summary printed after a run.
pub fn summary(outcome: &BookOutcome) -> String {
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &outcome.rejected {
        *by_kind.entry(d.reason.kind.as_str()).or_insert(0) += 1;
    }
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    let shown = outcome
        .positions
        .iter()
        .filter(|(_, s)| !s.is_omitted())
        .count();
    let mut text = String::new();
    text.push_str(&format!("lines          {}\n", outcome.lines));
    text.push_str(&format!("positions      {shown}\n"));
    text.push_str(&format!("open lots      {}\n", outcome.lots.len()));
    text.push_str(&format!("corrections    {}\n", outcome.correction_count));
    text.push_str(&format!("duplicates     {}\n", outcome.duplicates));
    text.push_str(&format!("rejected       {}\n", outcome.rejected.len()));
    for (kind, count) in by_kind {
        text.push_str(&format!("  {kind:<22} {count}\n"));
    }
    text.push_str(&format!("valuations     {}\n", outcome.valuations.len()));
    text.push_str(&format!("breaks         {}\n", outcome.breaks.len()));
    text.push_str(&format!("gaps           {}\n", outcome.gaps.len()));
    if !outcome.rejected_prices.is_empty() || !outcome.rejected_custodian.is_empty() {
        text.push_str(&format!(
            "rejected ticks {} / statements {}\n",
            outcome.rejected_prices.len(),
            outcome.rejected_custodian.len()
        ));
    }
    if !outcome.faults.is_empty() {
        text.push_str(&format!(
            "faulted        {} (arithmetic overflow)\n",
            outcome.faults.len()
        ));
    }
    text.push_str(&format!(
        "elapsed        {:.3} s ({:.0} lines/s)\n",
        outcome.elapsed.as_secs_f64(),
        outcome.lines as f64 / secs
    ));
    if let Some(answer) = &outcome.query {
        text.push_str(&format!(
            "query          {} rows in {:.3} s (import of the final tables to the whole answer)\n",
            answer.rows.len(),
            answer.seconds
        ));
    }
    text
}

/// Average bytes per generated line: turns a file's size into an expected
/// line count for the bar (only a display estimate).
const BYTES_PER_LINE_ESTIMATE: u64 = 150;

/// Progress on stderr: an indicatif bar on a terminal, a plain line every
/// five seconds when stderr is a file or a pipe.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total_bytes: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total_bytes {
                Some(bytes) => {
                    indicatif::ProgressBar::new((bytes / BYTES_PER_LINE_ESTIMATE).max(1))
                }
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} ~{percent}%  {pos} lines  {per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            started: now,
            last_line: now,
        }
    }

    fn update(&mut self, lines: u64) {
        match &self.bar {
            Some(bar) => {
                if bar.length().is_some_and(|l| lines > l) {
                    bar.set_length(lines);
                }
                bar.set_position(lines);
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(5) {
                    self.last_line = Instant::now();
                    let rate = lines as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
                    eprintln!("progress: {lines} lines, {rate:.0} lines/s");
                }
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
