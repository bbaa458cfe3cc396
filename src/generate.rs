//! Deterministic synthetic trade-event streams (`deltabook generate`).
//!
//! [`generate`] writes a `.jsonl` stream of trade events in the format of
//! the shared trade spec (`trades.md`): mostly NEW trades on a set of
//! `account/book/security` positions, plus backdated arrivals, amendments
//! (including skipped and out-of-order versions, amends that arrive before
//! their NEW and amends that move a trade to another position), cancels,
//! orphan amends/cancels, exact and equivalent re-sends, and intentionally
//! invalid events covering every rejection kind of the gate.
//!
//! The output is a pure function of the [`GenerateConfig`]: the generator
//! uses its own PRNG (xoshiro256** seeded through SplitMix64), integer
//! arithmetic for every generated number, and writes JSON objects with an
//! explicit key order, so the same config gives the same bytes on every
//! platform and build.
//!
//! Shape of a stream with the defaults of [`GenerateConfig::new`] (per line):
//! ~0.5% invalid, ~1% duplicate re-sends, ~3% AMEND, ~2% CANCEL, the rest NEW
//! (of which ~5% are backdated by 1-30 days). About 30% of the trades go to
//! the `large_positions` first positions. Positions follow a signed random
//! walk whose trades against the position regularly close it exactly or
//! cross zero.

use deltabook_dataflows::calendar::{civil_from_days, days_from_civil, weekday};
use deltabook_dataflows::gate::RejectKind;
use deltabook_dataflows::trade::Side;
use std::collections::HashSet;
use std::io::{self, Write};

use serde_json::Value;

/// Share of trades that go to the `large_positions` "large" positions.
const LARGE_SHARE: f64 = 0.30;
/// At most this many trades are remembered as candidates for AMEND/CANCEL.
const POOL_CAP: usize = 100_000;
/// At most this many recent valid lines are remembered for re-sends.
const RING_CAP: usize = 4096;
/// Fixed-point scale used for quantities in the position walk (10^-8 units).
const E8: i128 = 100_000_000;

const BOOKS: &[&str] = &["EQ-US", "EQ-EU", "FI", "FX:SPOT", "DESK.1"];
const NAMED_SECURITIES: &[(&str, &str)] = &[
    ("AAPL", "USD"),
    ("MSFT", "USD"),
    ("GOOGL", "USD"),
    ("AMZN", "USD"),
    ("NVDA", "USD"),
    ("META", "USD"),
    ("TSLA", "USD"),
    ("JPM", "USD"),
    ("BRK.B", "USD"),
    ("XOM", "USD"),
    ("SAP.DE", "EUR"),
    ("ASML.AS", "EUR"),
    ("MC.PA", "EUR"),
    ("SIE.DE", "EUR"),
    ("AIR.PA", "EUR"),
    ("US10Y", "USD"),
    ("DE10Y", "EUR"),
    ("XS2345678901", "EUR"),
    ("US912828:2Y", "USD"),
    ("ES-FUT.H26", "USD"),
];

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Knobs of a synthetic stream; `GenerateConfig::new(seed, positions, trades)`
/// fills realistic defaults.
///
/// Ratios are per-line probabilities (`backdated_ratio` is the share of NEW
/// trades that are backdated); values outside `0..=1` or NaN are clamped.
/// `positions == 0` is treated as 1. Only `start_date` can make
/// [`generate`] fail (an impossible date is an `InvalidInput` error).
#[derive(Clone, Debug)]
pub struct GenerateConfig {
    /// PRNG seed; different seeds give different streams.
    pub seed: u64,
    /// Number of distinct position keys (`account_book_security`).
    pub positions: usize,
    /// Exact number of lines written.
    pub trades: usize,
    /// Share of NEW trades dated 1-30 days before the stream's current date.
    pub backdated_ratio: f64,
    /// Share of lines that are AMENDs (plus the out-of-order versions they schedule).
    pub amend_ratio: f64,
    /// Share of lines that are CANCELs.
    pub cancel_ratio: f64,
    /// Share of lines that re-send an earlier valid line (exactly or equivalently).
    pub duplicate_ratio: f64,
    /// Share of lines the gate must reject (every rejection kind, round-robin).
    pub invalid_ratio: f64,
    /// Number of positions (the first ones created) that together receive ~30% of trades.
    pub large_positions: usize,
    /// First trade date `(year, month, day)`.
    pub start_date: (u32, u32, u32),
    /// Pacing: the current trade date advances by one weekday every
    /// `trades_per_day * ceil(sqrt(positions))` lines.
    pub trades_per_day: usize,
}

impl GenerateConfig {
    /// Defaults: backdated 5% of NEWs, amend 3%, cancel 2%, duplicate 1%,
    /// invalid 0.5%, `min(3, positions)` large positions, start 2026-01-02,
    /// 200 trades per day pacing.
    pub fn new(seed: u64, positions: usize, trades: usize) -> Self {
        GenerateConfig {
            seed,
            positions,
            trades,
            backdated_ratio: 0.05,
            amend_ratio: 0.03,
            cancel_ratio: 0.02,
            duplicate_ratio: 0.01,
            invalid_ratio: 0.005,
            large_positions: positions.min(3),
            start_date: (2026, 1, 2),
            trades_per_day: 200,
        }
    }
}

/// Counts of what was written, by category.
///
/// `lines = new + amends + cancels + duplicates + invalid`; `backdated` is
/// the subset of `new` dated before the stream's current date on purpose.
/// `duplicates` are benign re-sends (exact bytes or equivalent content) that
/// the gate acknowledges and ignores; `invalid` counts every line the gate
/// must reject, including conflicting duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerateStats {
    /// Lines written.
    pub lines: usize,
    /// Accepted NEW events (first arrival of `(trade_id, 1)`).
    pub new: usize,
    /// Accepted AMEND events (including orphans and out-of-order versions).
    pub amends: usize,
    /// Accepted CANCEL events (including orphans).
    pub cancels: usize,
    /// Re-sends of an already accepted `(trade_id, version)` with identical content.
    pub duplicates: usize,
    /// Lines the gate rejects.
    pub invalid: usize,
    /// NEW events deliberately dated 1-30 days before the current date.
    pub backdated: usize,
}

/// What a generated line is, as the gate must see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// A NEW event whose `(trade_id, version)` is new; `backdated` if deliberately dated in the past.
    New {
        /// Dated 1-30 days before the stream's current date.
        backdated: bool,
    },
    /// An AMEND whose `(trade_id, version)` is new.
    Amend,
    /// A CANCEL whose `(trade_id, version)` is new.
    Cancel,
    /// A re-send of an accepted `(trade_id, version)` with identical content.
    Duplicate,
    /// A line the gate rejects, with the rejection kind it must get.
    Invalid(RejectKind),
}

/// Writes exactly `config.trades` lines (one JSON event per line, '\n'
/// terminated) to `out`; the same config always gives the same bytes.
/// No line contains '\r' or an embedded '\n'. `out` is written in large
/// chunks and flushed at the end.
pub fn generate(config: &GenerateConfig, out: &mut impl Write) -> io::Result<GenerateStats> {
    generate_annotated(config, out, |_, _| {})
}

/// Same bytes and stats as [`generate`], and additionally calls
/// `on_line(line, kind)` for every line in order (`line` without its '\n'),
/// telling what the gate must make of it. Useful for tests of the gate and
/// of the engine.
pub fn generate_annotated<W, F>(
    config: &GenerateConfig,
    out: &mut W,
    mut on_line: F,
) -> io::Result<GenerateStats>
where
    W: Write + ?Sized,
    F: FnMut(&str, LineKind),
{
    let mut g = Gen::new(config)?;
    let mut stats = GenerateStats::default();
    let mut buf = String::with_capacity(1 << 17);
    for i in 0..config.trades {
        g.line_no = i;
        g.advance_date();
        let (line, kind) = g.next_line();
        debug_assert!(!line.contains('\n') && !line.contains('\r'));
        on_line(&line, kind);
        stats.lines += 1;
        match kind {
            LineKind::New { backdated } => {
                stats.new += 1;
                if backdated {
                    stats.backdated += 1;
                }
            }
            LineKind::Amend => stats.amends += 1,
            LineKind::Cancel => stats.cancels += 1,
            LineKind::Duplicate => stats.duplicates += 1,
            LineKind::Invalid(_) => stats.invalid += 1,
        }
        buf.push_str(&line);
        buf.push('\n');
        if buf.len() >= 1 << 16 {
            out.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    out.write_all(buf.as_bytes())?;
    out.flush()?;
    Ok(stats)
}

// ---------------------------------------------------------------------------
// PRNG: xoshiro256** seeded with SplitMix64
// ---------------------------------------------------------------------------

/// xoshiro256** seeded by splitmix64: the generators' reproducible stream.
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    fn below_usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| w as u64).sum();
        let mut r = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if r < w as u64 {
                return i;
            }
            r -= w as u64;
        }
        weights.len() - 1
    }

    fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below_usize(i + 1);
            xs.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------

fn fmt_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn isqrt_ceil(n: usize) -> usize {
    let mut r = 0usize;
    while r * r < n {
        r += 1;
    }
    r
}

// ---------------------------------------------------------------------------
// Decimals as written
// ---------------------------------------------------------------------------

/// A decimal string as it will be written: `lead` extra leading zeros, the
/// integer part, and `digits` fractional digits (`frac < 10^digits`). Not a
/// number type (the engine's is `Dec8`): it models how a producer may spell
/// one value ("10", "10.0", "010"), which the generator varies on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WrittenDecimal {
    int: u64,
    frac: u64,
    digits: u8,
    lead: u8,
}

impl WrittenDecimal {
    /// Minimal representation of `units * 10^-8`.
    fn from_units8(units: u128) -> WrittenDecimal {
        let int = (units / E8 as u128) as u64;
        let mut frac = (units % E8 as u128) as u64;
        let mut digits = 8u8;
        while digits > 0 && frac.is_multiple_of(10) {
            frac /= 10;
            digits -= 1;
        }
        WrittenDecimal {
            int,
            frac,
            digits,
            lead: 0,
        }
    }

    /// Value in units of 10^-8 (`digits <= 8`).
    fn units8(&self) -> i128 {
        self.int as i128 * E8 + self.frac as i128 * 10i128.pow(8 - self.digits as u32)
    }

    fn render(&self) -> String {
        let mut s = String::with_capacity(24);
        for _ in 0..self.lead {
            s.push('0');
        }
        s.push_str(&self.int.to_string());
        if self.digits > 0 {
            s.push('.');
            s.push_str(&format!(
                "{:0width$}",
                self.frac,
                width = self.digits as usize
            ));
        }
        s
    }

    /// Same value, written differently ("10" <-> "10.0", "100.50" -> "100.5", "7.5" -> "07.5").
    fn rewritten(&self, rng: &mut Rng) -> WrittenDecimal {
        let mut d = *self;
        if rng.chance(0.1) {
            d.lead += 1;
        } else if d.digits == 0 {
            d.digits = 1 + rng.below(2) as u8;
            d.frac = 0;
        } else if d.frac.is_multiple_of(10) {
            d.frac /= 10;
            d.digits -= 1;
        } else if d.digits < 8 {
            d.frac *= 10;
            d.digits += 1;
        } else {
            d.lead += 1;
        }
        d
    }
}

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

struct Security {
    name: String,
    currency: &'static str,
    /// Current price level in 10^-6 units.
    level: i128,
}

struct Position {
    account: usize,
    book: usize,
    security: usize,
    /// Signed quantity of the NEW trades written so far, 10^-8 units.
    qty8: i128,
}

/// The economic content of one trade version.
#[derive(Clone, Debug)]
struct Content {
    pos: usize,
    side: Side,
    quantity: WrittenDecimal,
    price: WrittenDecimal,
    currency: Option<&'static str>,
    date: i64,
    time: Option<String>,
}

struct Trade {
    id: u64,
    content: Content,
    max_version: u64,
}

/// One event as it will be rendered. `Option<Option<T>>`: `None` = absent,
/// `Some(None)` = JSON null.
#[derive(Clone, Debug)]
struct Event {
    trade_id: String,
    version: Option<u64>,
    action: Option<&'static str>,
    account: String,
    book: String,
    security: String,
    side: Option<Side>,
    quantity: Option<WrittenDecimal>,
    price: Option<WrittenDecimal>,
    currency: Option<Option<&'static str>>,
    trade_date: Option<i64>,
    trade_time: Option<Option<String>>,
    sequence: Option<Option<u64>>,
    correlation_id: Option<Option<String>>,
    extra: Option<u8>,
    spaced: bool,
    shuffle: Option<u64>,
}

fn push_opt<T>(f: &mut Vec<(&'static str, Value)>, key: &'static str, v: &Option<Option<T>>)
where
    T: Clone + Into<Value>,
{
    match v {
        None => {}
        Some(None) => f.push((key, Value::Null)),
        Some(Some(x)) => f.push((key, x.clone().into())),
    }
}

impl Event {
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f: Vec<(&'static str, Value)> = Vec::with_capacity(16);
        f.push(("trade_id", Value::String(self.trade_id.clone())));
        if let Some(v) = self.version {
            f.push(("version", v.into()));
        }
        if let Some(a) = self.action {
            f.push(("action", a.into()));
        }
        f.push(("account_id", self.account.clone().into()));
        f.push(("book_id", self.book.clone().into()));
        f.push(("security_id", self.security.clone().into()));
        if let Some(s) = self.side {
            f.push(("side", s.as_str().into()));
        }
        if let Some(q) = &self.quantity {
            f.push(("quantity", q.render().into()));
        }
        if let Some(p) = &self.price {
            f.push(("price", p.render().into()));
        }
        push_opt(&mut f, "currency", &self.currency);
        if let Some(d) = self.trade_date {
            f.push(("trade_date", fmt_date(d).into()));
        }
        push_opt(&mut f, "trade_time", &self.trade_time);
        push_opt(&mut f, "sequence", &self.sequence);
        push_opt(&mut f, "correlation_id", &self.correlation_id);
        match self.extra {
            None => {}
            Some(0) => f.push(("venue", "XNYS".into())),
            Some(1) => f.push((
                "source",
                serde_json::json!({"system": "oms", "host": "oms-1", "retry": 0}),
            )),
            Some(_) => f.push(("note", "re-booked \"desk\" \\ caf\u{e9}\ttab".into())),
        }
        if let Some(seed) = self.shuffle {
            Rng::new(seed).shuffle(&mut f);
        }
        f
    }

    fn render(&self) -> String {
        write_obj(&self.fields(), self.spaced)
    }
}

/// Serialises fields in the given order (keys and values escaped by serde_json).
fn write_obj(fields: &[(&str, Value)], spaced: bool) -> String {
    let mut s = String::with_capacity(320);
    s.push('{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push_str(if spaced { ", " } else { "," });
        }
        // `Value`'s Display writes JSON and cannot fail.
        s.push_str(&Value::String((*k).to_string()).to_string());
        s.push_str(if spaced { ": " } else { ":" });
        s.push_str(&v.to_string());
    }
    s.push('}');
    s
}

fn set_field(f: &mut Vec<(&'static str, Value)>, key: &'static str, v: Value) {
    if let Some(slot) = f.iter_mut().find(|(k, _)| *k == key) {
        slot.1 = v;
    } else {
        f.push((key, v));
    }
}

fn remove_field(f: &mut Vec<(&'static str, Value)>, key: &str) {
    f.retain(|(k, _)| *k != key);
}

struct Pending {
    due: usize,
    event: Event,
    kind: LineKind,
    /// For a deferred NEW: (position, signed quantity in 10^-8) to add to the walk.
    walk: Option<(usize, i128)>,
}

/// Number of invalid-line variants (see `Gen::invalid_variant`).
const INVALID_VARIANTS: usize = 33;

struct Gen {
    rng: Rng,
    backdated_ratio: f64,
    amend_ratio: f64,
    cancel_ratio: f64,
    duplicate_ratio: f64,
    invalid_ratio: f64,
    accounts: Vec<String>,
    securities: Vec<Security>,
    positions: Vec<Position>,
    large: usize,
    account_seq: Vec<u64>,
    next_trade: u64,
    next_corr: u64,
    pool: Vec<Trade>,
    ring: Vec<(Event, String)>,
    ring_next: usize,
    pending: Vec<Pending>,
    line_no: usize,
    day_len: usize,
    day_index: usize,
    today: i64,
    invalid_rr: usize,
}

fn ratio(r: f64) -> f64 {
    if r.is_nan() {
        0.0
    } else {
        r.clamp(0.0, 1.0)
    }
}

impl Gen {
    fn new(cfg: &GenerateConfig) -> io::Result<Gen> {
        let (y, m, d) = cfg.start_date;
        let start = days_from_civil(y as i64, m, d);
        if y == 0 || y > 9999 || civil_from_days(start) != (y as i64, m, d) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("start_date {y:04}-{m:02}-{d:02} is not a valid date"),
            ));
        }
        let mut rng = Rng::new(cfg.seed);
        let npos = cfg.positions.max(1);

        // Dimensions large enough that random distinct triples are cheap to find.
        let n_acc = npos.div_ceil(20).max(1);
        let n_book = BOOKS.len();
        let n_sec = npos
            .min(NAMED_SECURITIES.len() + 10)
            .max((2 * npos).div_ceil(n_acc * n_book))
            .max(1);
        let accounts: Vec<String> = (1..=n_acc).map(|i| format!("ACC{i}")).collect();
        let securities: Vec<Security> = (0..n_sec)
            .map(|i| {
                let (name, currency) = match NAMED_SECURITIES.get(i) {
                    Some(&(n, c)) => (n.to_string(), c),
                    None => (
                        format!("SEC{}", i + 1),
                        if i % 3 == 0 { "EUR" } else { "USD" },
                    ),
                };
                let level = rng.range(5_000_000, 1_500_000_000) as i128;
                Security {
                    name,
                    currency,
                    level,
                }
            })
            .collect();
        let mut seen = HashSet::with_capacity(npos);
        let mut positions = Vec::with_capacity(npos);
        while positions.len() < npos {
            let key = (
                rng.below_usize(n_acc),
                rng.below_usize(n_book),
                rng.below_usize(n_sec),
            );
            if seen.insert(key) {
                positions.push(Position {
                    account: key.0,
                    book: key.1,
                    security: key.2,
                    qty8: 0,
                });
            }
        }
        let day_len = cfg
            .trades_per_day
            .max(1)
            .saturating_mul(isqrt_ceil(npos).max(1));
        Ok(Gen {
            rng,
            backdated_ratio: ratio(cfg.backdated_ratio),
            amend_ratio: ratio(cfg.amend_ratio),
            cancel_ratio: ratio(cfg.cancel_ratio),
            duplicate_ratio: ratio(cfg.duplicate_ratio),
            invalid_ratio: ratio(cfg.invalid_ratio),
            account_seq: vec![0; accounts.len()],
            accounts,
            securities,
            positions,
            large: cfg.large_positions.min(npos),
            next_trade: 1,
            next_corr: 1,
            pool: Vec::new(),
            ring: Vec::new(),
            ring_next: 0,
            pending: Vec::new(),
            line_no: 0,
            day_len,
            day_index: 0,
            today: start,
            invalid_rr: 0,
        })
    }

    fn advance_date(&mut self) {
        let target = self.line_no / self.day_len;
        while self.day_index < target {
            self.day_index += 1;
            self.today += 1;
            while weekday(self.today) == 0 || weekday(self.today) == 6 {
                self.today += 1;
            }
        }
    }

    fn next_line(&mut self) -> (String, LineKind) {
        if let Some(i) = self.pending.iter().position(|p| p.due <= self.line_no) {
            let p = self.pending.remove(i);
            if let Some((pos, q)) = p.walk {
                self.positions[pos].qty8 += q;
            }
            let line = p.event.render();
            self.remember(p.event, &line);
            return (line, p.kind);
        }
        let mut r = self.rng.f64();
        if r < self.invalid_ratio {
            return self.make_invalid();
        }
        r -= self.invalid_ratio;
        if r < self.duplicate_ratio {
            return self.make_duplicate();
        }
        r -= self.duplicate_ratio;
        if r < self.amend_ratio {
            return self.make_amend();
        }
        r -= self.amend_ratio;
        if r < self.cancel_ratio {
            return self.make_cancel();
        }
        self.make_new()
    }

    // ----- building blocks -------------------------------------------------

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_trade;
        self.next_trade += 1;
        id
    }

    fn pick_position(&mut self) -> usize {
        if self.large > 0 && self.rng.chance(LARGE_SHARE) {
            self.rng.below_usize(self.large)
        } else {
            self.rng.below_usize(self.positions.len())
        }
    }

    fn gen_qty(&mut self) -> WrittenDecimal {
        let (lo, hi) = match self.rng.weighted(&[30, 40, 22, 7, 1]) {
            0 => (1, 9),
            1 => (10, 99),
            2 => (100, 999),
            3 => (1_000, 9_999),
            _ => (10_000, 99_999),
        };
        let int = self.rng.range(lo, hi);
        let digits = self.rng.weighted(&[55, 10, 20, 5, 10]) as u8;
        let mut frac = self.rng.below(10u64.pow(digits as u32));
        if digits > 0 && self.rng.chance(0.1) {
            frac = frac / 10 * 10; // trailing zero, e.g. "100.50"
        }
        WrittenDecimal {
            int,
            frac,
            digits,
            lead: 0,
        }
    }

    fn gen_price(&mut self, sec: usize) -> WrittenDecimal {
        let step = self.rng.below(101) as i128 - 50; // +-50 bp walk of the level
        let s = &mut self.securities[sec];
        s.level = (s.level + s.level * step / 10_000).max(1_000_000);
        let jitter = self.rng.below(21) as i128 - 10;
        let p6 = (self.securities[sec].level + self.securities[sec].level * jitter / 10_000).max(1);
        let digits = 2 + self.rng.weighted(&[50, 10, 25, 5, 10]) as u32;
        let p = ((p6 / 10i128.pow(6 - digits)) as u64).max(1);
        let scale = 10u64.pow(digits);
        WrittenDecimal {
            int: p / scale,
            frac: p % scale,
            digits: digits as u8,
            lead: 0,
        }
    }

    /// RFC 3339 time on `date` at `utc_secs` after midnight UTC, with a
    /// random offset style and 0/3/6/9 fractional digits.
    fn fmt_time(&mut self, date: i64, utc_secs: i64) -> String {
        let (off_min, off_str): (i64, &str) = match self.rng.weighted(&[790, 100, 50, 50, 10]) {
            0 => (0, "Z"),
            1 => (120, "+02:00"),
            2 => (-300, "-05:00"),
            3 => (0, "+00:00"),
            _ => (0, "z"),
        };
        let local = utc_secs + off_min * 60;
        let (y, m, d) = civil_from_days(date);
        let sep = if self.rng.chance(0.005) { 't' } else { 'T' };
        let digits = [0u32, 3, 6, 9][self.rng.weighted(&[20, 40, 30, 10])];
        let frac = if digits == 0 {
            String::new()
        } else {
            format!(
                ".{:0w$}",
                self.rng.below(10u64.pow(digits)),
                w = digits as usize
            )
        };
        format!(
            "{y:04}-{m:02}-{d:02}{sep}{:02}:{:02}:{:02}{frac}{off_str}",
            local / 3600,
            local / 60 % 60,
            local % 60
        )
    }

    /// Time for a trade booked now: progresses through the trading day.
    fn current_time(&mut self) -> Option<String> {
        if self.rng.chance(0.1) {
            return None;
        }
        let in_day = (self.line_no % self.day_len) as i64 * 25_200 / self.day_len as i64;
        let secs = 34_200 + in_day + self.rng.below(60) as i64;
        Some(self.fmt_time(self.today, secs))
    }

    /// Time anywhere in the trading day (09:30-16:30 UTC) of `date`.
    fn random_time(&mut self, date: i64) -> Option<String> {
        if self.rng.chance(0.1) {
            return None;
        }
        let secs = 34_200 + self.rng.below(25_200) as i64;
        Some(self.fmt_time(date, secs))
    }

    /// Side and quantity of a NEW trade on `pos`: a signed random walk that
    /// leans back toward flat and regularly closes or crosses zero.
    fn choose_side_qty(&mut self, pos: usize) -> (Side, WrittenDecimal) {
        let s = self.positions[pos].qty8;
        let size = self.gen_qty();
        if s == 0 {
            let side = if self.rng.chance(0.5) {
                Side::Buy
            } else {
                Side::Sell
            };
            return (side, size);
        }
        let long = s > 0;
        let typical = 500 * E8;
        let lean = ((s.abs() as f64) / (typical as f64 * 10.0)).min(1.0) * 0.35;
        let against = self.rng.chance(0.5 + lean);
        let side = if against == long {
            Side::Sell
        } else {
            Side::Buy
        };
        if against {
            let r = self.rng.f64();
            if r < 0.05 {
                return (side, WrittenDecimal::from_units8(s.unsigned_abs())); // exactly flat
            } else if r < 0.25 {
                // cross zero
                return (
                    side,
                    WrittenDecimal::from_units8(s.unsigned_abs() + size.units8() as u128),
                );
            }
        }
        (side, size)
    }

    fn signed(side: Side, q: &WrittenDecimal) -> i128 {
        match side {
            Side::Buy => q.units8(),
            Side::Sell => -q.units8(),
        }
    }

    fn fresh_content(&mut self, pos: usize, date: i64, time: Option<String>) -> Content {
        let (side, quantity) = self.choose_side_qty(pos);
        let sec = self.positions[pos].security;
        let price = self.gen_price(sec);
        let currency = if self.rng.chance(0.4) {
            Some(self.securities[sec].currency)
        } else {
            None
        };
        Content {
            pos,
            side,
            quantity,
            price,
            currency,
            date,
            time,
        }
    }

    /// A full restatement of `c` with some fields changed.
    fn restate(&mut self, c: &Content) -> Content {
        let mut n = c.clone();
        if self.rng.chance(0.03) && self.positions.len() > 1 {
            // the trade moves to another position (often another security)
            let mut p = self.rng.below_usize(self.positions.len());
            if p == c.pos {
                p = (p + 1) % self.positions.len();
            }
            n.pos = p;
            if self.positions[p].security != self.positions[c.pos].security {
                n.price = self.gen_price(self.positions[p].security);
            }
        }
        let mut changed = n.pos != c.pos;
        if self.rng.chance(0.6) {
            n.quantity = self.gen_qty();
            changed = true;
        }
        if self.rng.chance(0.4) {
            n.price = self.gen_price(self.positions[n.pos].security);
            changed = true;
        }
        if self.rng.chance(0.15) {
            let delta = self.rng.range(1, 5) as i64;
            n.date = if self.rng.chance(0.6) {
                c.date - delta
            } else {
                c.date + delta
            };
            n.time = self.random_time(n.date);
            changed = true;
        } else if self.rng.chance(0.2) {
            n.time = self.random_time(n.date);
        }
        if self.rng.chance(0.02) {
            n.side = n.side.opposite();
            changed = true;
        }
        if !changed {
            n.quantity = self.gen_qty();
        }
        n
    }

    /// The event of `(id, version, action)` restating `c`, with random
    /// optional fields and formatting.
    fn event_from(&mut self, id: u64, version: u64, action: &'static str, c: &Content) -> Event {
        let p = &self.positions[c.pos];
        let (acc, book, sec) = (p.account, p.book, p.security);
        let is_new = action == "NEW";
        let version_field = if is_new && version == 1 && self.rng.chance(0.3) {
            None
        } else {
            Some(version)
        };
        let action_field = if is_new && self.rng.chance(0.25) {
            None
        } else {
            Some(action)
        };
        let currency = match c.currency {
            Some(cur) => Some(Some(cur)),
            None if self.rng.chance(0.02) => Some(None),
            None => None,
        };
        let trade_time = match &c.time {
            Some(t) => Some(Some(t.clone())),
            None if self.rng.chance(0.05) => Some(None),
            None => None,
        };
        let sequence = if self.rng.chance(0.3) {
            let s = self.account_seq[acc];
            self.account_seq[acc] += 1;
            Some(Some(s))
        } else {
            None
        };
        let correlation_id = if self.rng.chance(0.2) {
            let n = self.next_corr;
            self.next_corr += 1;
            Some(Some(format!("c-{n}")))
        } else if self.rng.chance(0.01) {
            Some(None)
        } else {
            None
        };
        let extra = if self.rng.chance(0.015) {
            Some(self.rng.below(3) as u8)
        } else {
            None
        };
        let spaced = self.rng.chance(0.15);
        let shuffle = if self.rng.chance(0.08) {
            Some(self.rng.next_u64())
        } else {
            None
        };
        Event {
            trade_id: format!("T{id}"),
            version: version_field,
            action: action_field,
            account: self.accounts[acc].clone(),
            book: BOOKS[book].to_string(),
            security: self.securities[sec].name.clone(),
            side: Some(c.side),
            quantity: Some(c.quantity),
            price: Some(c.price),
            currency,
            trade_date: Some(c.date),
            trade_time,
            sequence,
            correlation_id,
            extra,
            spaced,
            shuffle,
        }
    }

    fn cancel_event(&mut self, id: u64, version: u64, c: &Content) -> Event {
        let mut e = self.event_from(id, version, "CANCEL", c);
        let r = self.rng.f64();
        if r < 0.5 {
            e.side = None;
            e.quantity = None;
            e.price = None;
            e.trade_date = None;
            e.trade_time = None;
            e.currency = None;
        } else if r < 0.65 {
            e.quantity = None;
            e.price = None;
        }
        e
    }

    fn remember(&mut self, e: Event, line: &str) {
        if self.ring.len() < RING_CAP {
            self.ring.push((e, line.to_string()));
        } else {
            self.ring[self.ring_next] = (e, line.to_string());
            self.ring_next = (self.ring_next + 1) % RING_CAP;
        }
    }

    fn pool_add(&mut self, t: Trade) {
        if self.pool.len() < POOL_CAP {
            self.pool.push(t);
        } else {
            let i = self.rng.below_usize(POOL_CAP);
            self.pool[i] = t;
        }
    }

    fn emit(&mut self, e: Event, kind: LineKind) -> (String, LineKind) {
        let line = e.render();
        self.remember(e, &line);
        (line, kind)
    }

    // ----- categories ------------------------------------------------------

    fn make_new(&mut self) -> (String, LineKind) {
        let pos = self.pick_position();
        let backdated = self.rng.chance(self.backdated_ratio);
        let (date, time) = if backdated {
            let d = self.today - self.rng.range(1, 30) as i64;
            (d, self.random_time(d))
        } else {
            (self.today, self.current_time())
        };
        let c = self.fresh_content(pos, date, time);
        let id = self.fresh_id();
        self.positions[pos].qty8 += Self::signed(c.side, &c.quantity);
        let e = self.event_from(id, 1, "NEW", &c);
        self.pool_add(Trade {
            id,
            content: c,
            max_version: 1,
        });
        self.emit(e, LineKind::New { backdated })
    }

    fn make_amend(&mut self) -> (String, LineKind) {
        let r = self.rng.f64();
        if r < 0.03 {
            // orphan: its NEW never comes
            let pos = self.rng.below_usize(self.positions.len());
            let date = self.today;
            let time = self.current_time();
            let c = self.fresh_content(pos, date, time);
            let id = self.fresh_id();
            let v = self.rng.range(2, 4);
            let e = self.event_from(id, v, "AMEND", &c);
            return self.emit(e, LineKind::Amend);
        }
        if r < 0.07 {
            // the AMEND overtakes its NEW, which follows a few lines later
            let pos = self.pick_position();
            let time = self.current_time();
            let c1 = self.fresh_content(pos, self.today, time);
            let id = self.fresh_id();
            let c2 = self.restate(&c1);
            let new_ev = self.event_from(id, 1, "NEW", &c1);
            let due = self.line_no + self.rng.range(1, 50) as usize;
            self.pending.push(Pending {
                due,
                event: new_ev,
                kind: LineKind::New { backdated: false },
                walk: Some((pos, Self::signed(c1.side, &c1.quantity))),
            });
            let e = self.event_from(id, 2, "AMEND", &c2);
            self.pool_add(Trade {
                id,
                content: c2,
                max_version: 2,
            });
            return self.emit(e, LineKind::Amend);
        }
        if self.pool.is_empty() {
            return self.make_new();
        }
        let i = self.rng.below_usize(self.pool.len());
        let (id, old, max) = {
            let t = &self.pool[i];
            (t.id, t.content.clone(), t.max_version)
        };
        let skip = self.rng.chance(0.1);
        let v = max + if skip { 2 } else { 1 };
        let newc = self.restate(&old);
        if skip && self.rng.chance(0.7) {
            // the skipped version arrives later, out of order
            let gapc = self.restate(&old);
            let gap = self.event_from(id, v - 1, "AMEND", &gapc);
            let due = self.line_no + self.rng.range(1, 200) as usize;
            self.pending.push(Pending {
                due,
                event: gap,
                kind: LineKind::Amend,
                walk: None,
            });
        }
        let e = self.event_from(id, v, "AMEND", &newc);
        let t = &mut self.pool[i];
        t.content = newc;
        t.max_version = v;
        self.emit(e, LineKind::Amend)
    }

    fn make_cancel(&mut self) -> (String, LineKind) {
        if self.rng.chance(0.03) {
            let pos = self.rng.below_usize(self.positions.len());
            let c = self.fresh_content(pos, self.today, None);
            let id = self.fresh_id();
            let v = self.rng.range(2, 3);
            let e = self.cancel_event(id, v, &c);
            return self.emit(e, LineKind::Cancel);
        }
        if self.pool.is_empty() {
            return self.make_new();
        }
        let i = self.rng.below_usize(self.pool.len());
        let t = self.pool.swap_remove(i);
        let e = self.cancel_event(t.id, t.max_version + 1, &t.content);
        self.emit(e, LineKind::Cancel)
    }

    fn make_duplicate(&mut self) -> (String, LineKind) {
        if self.ring.is_empty() {
            return self.make_new();
        }
        let i = self.rng.below_usize(self.ring.len());
        if self.rng.chance(0.7) {
            return (self.ring[i].1.clone(), LineKind::Duplicate);
        }
        // equivalent content, written differently
        let mut e = self.ring[i].0.clone();
        match self.rng.below(4) {
            0 | 1 => {
                if let Some(q) = e.quantity {
                    e.quantity = Some(q.rewritten(&mut self.rng));
                } else {
                    e.spaced = !e.spaced;
                    e.shuffle = Some(self.rng.next_u64());
                }
                if let Some(p) = e.price {
                    if self.rng.chance(0.5) {
                        e.price = Some(p.rewritten(&mut self.rng));
                    }
                }
            }
            2 => {
                let is_new = matches!(e.action, None | Some("NEW"));
                if is_new && e.version.is_none() {
                    e.version = Some(1);
                } else if is_new && e.version == Some(1) {
                    e.version = None;
                } else if e.action.is_none() {
                    e.action = Some("NEW");
                } else if e.action == Some("NEW") {
                    e.action = None;
                } else {
                    e.spaced = !e.spaced;
                }
                if e.currency == Some(None) {
                    e.currency = None; // null == absent
                }
            }
            _ => {
                e.spaced = !e.spaced;
                e.shuffle = Some(self.rng.next_u64());
            }
        }
        let line = e.render();
        (line, LineKind::Duplicate)
    }

    /// A valid NEW event with a fresh id that changes no state, as the base
    /// of an invalid line.
    fn throwaway_event(&mut self) -> Event {
        let pos = self.rng.below_usize(self.positions.len());
        let sec = self.positions[pos].security;
        let time = self.current_time();
        let quantity = self.gen_qty();
        let price = self.gen_price(sec);
        let side = if self.rng.chance(0.5) {
            Side::Buy
        } else {
            Side::Sell
        };
        let c = Content {
            pos,
            side,
            quantity,
            price,
            currency: None,
            date: self.today,
            time,
        };
        let id = self.fresh_id();
        let mut e = self.event_from(id, 1, "NEW", &c);
        e.extra = None; // keep the single defect easy to see
        e
    }

    fn make_invalid(&mut self) -> (String, LineKind) {
        loop {
            let k = self.invalid_rr % INVALID_VARIANTS;
            let round = self.invalid_rr / INVALID_VARIANTS;
            self.invalid_rr += 1;
            if let Some((line, kind)) = self.invalid_variant(k, round) {
                debug_assert!(!line.contains('\n') && !line.contains('\r'));
                return (line, LineKind::Invalid(kind));
            }
        }
    }

    fn invalid_variant(&mut self, k: usize, round: usize) -> Option<(String, RejectKind)> {
        let base = self.throwaway_event();
        let spaced = base.spaced;
        let mut f = base.fields();
        let (y, _, _) = civil_from_days(self.today);
        let obj = |f: &[(&'static str, Value)]| write_obj(f, spaced);
        let out = match k {
            0 => (String::new(), RejectKind::NotJson), // blank line
            1 => {
                let s = obj(&f);
                let mut cut = s.len() / 2;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                (s[..cut].to_string(), RejectKind::NotJson)
            }
            2 => {
                remove_field(&mut f, "price");
                let mut s = obj(&f);
                s.pop();
                s.push_str(",\"price\":NaN}");
                (s, RejectKind::NotJson)
            }
            3 => {
                let s = obj(&f);
                (format!("{s}{s}"), RejectKind::NotJson) // two objects on one line
            }
            4 => (format!("[{}]", obj(&f)), RejectKind::NotObject),
            5 => ("null".to_string(), RejectKind::NotObject),
            6 => {
                let dup = ["quantity", "trade_id", "side"][round % 3];
                let v = f
                    .iter()
                    .find(|(key, _)| *key == dup)
                    .map(|(_, v)| v.clone())?;
                f.push((dup, v));
                (obj(&f), RejectKind::MalformedField)
            }
            7 => {
                const REQUIRED: [&str; 8] = [
                    "price",
                    "security_id",
                    "trade_date",
                    "side",
                    "quantity",
                    "account_id",
                    "book_id",
                    "trade_id",
                ];
                remove_field(&mut f, REQUIRED[round % REQUIRED.len()]);
                (obj(&f), RejectKind::MissingField)
            }
            8 => {
                set_field(&mut f, "quantity", Value::from(base.quantity?.int));
                (obj(&f), RejectKind::MalformedField)
            }
            9 => {
                set_field(&mut f, "quantity", "1e5".into());
                (obj(&f), RejectKind::MalformedField)
            }
            10 => {
                set_field(&mut f, "price", format!("-{}", base.price?.render()).into());
                (obj(&f), RejectKind::MalformedField)
            }
            11 => {
                set_field(
                    &mut f,
                    "quantity",
                    [".5", "5.", "1,000", " 10"][round % 4].into(),
                );
                (obj(&f), RejectKind::MalformedField)
            }
            12 => {
                set_field(&mut f, "quantity", "1000000000000000".into());
                (obj(&f), RejectKind::MalformedField)
            }
            13 => {
                set_field(&mut f, "version", "1".into());
                (obj(&f), RejectKind::MalformedField)
            }
            14 => {
                set_field(&mut f, "side", Value::from(1));
                (obj(&f), RejectKind::MalformedField)
            }
            15 => {
                let t = format!("{} 14:30:05Z", fmt_date(self.today));
                set_field(&mut f, "trade_time", t.into());
                (obj(&f), RejectKind::MalformedField)
            }
            16 => {
                set_field(&mut f, "sequence", Value::from(-1));
                (obj(&f), RejectKind::MalformedField)
            }
            17 => {
                set_field(&mut f, "side", ["BUYY", "buy", "SHORT"][round % 3].into());
                (obj(&f), RejectKind::UnknownEnum)
            }
            18 => {
                set_field(&mut f, "action", ["UPDATE", "new"][round % 2].into());
                (obj(&f), RejectKind::UnknownEnum)
            }
            19 => {
                set_field(&mut f, "quantity", ["0", "0.0", "000"][round % 3].into());
                (obj(&f), RejectKind::NonPositive)
            }
            20 => {
                set_field(&mut f, "price", "0.000000000".into());
                (obj(&f), RejectKind::NonPositive)
            }
            21 => {
                set_field(
                    &mut f,
                    "price",
                    format!("{}.123456789", base.price?.int).into(),
                );
                (obj(&f), RejectKind::TooManyDecimals)
            }
            22 => {
                set_field(
                    &mut f,
                    "quantity",
                    format!("{}.000000000", base.quantity?.int).into(),
                );
                (obj(&f), RejectKind::TooManyDecimals)
            }
            23 => {
                set_field(&mut f, "trade_date", format!("{y:04}-02-30").into());
                (obj(&f), RejectKind::BadDate)
            }
            24 => {
                let d = ["{y}-13-01", "{y}-00-10", "0000-01-03", "{y}-04-31"][round % 4]
                    .replace("{y}", &format!("{y:04}"));
                set_field(&mut f, "trade_date", d.into());
                (obj(&f), RejectKind::BadDate)
            }
            25 => {
                set_field(&mut f, "trade_date", Value::from(20_260_102));
                (obj(&f), RejectKind::BadDate)
            }
            26 => {
                let id = format!("{}_x", base.trade_id);
                set_field(&mut f, "trade_id", id.into());
                (obj(&f), RejectKind::BadId)
            }
            27 => {
                set_field(&mut f, "account_id", "A B".into());
                (obj(&f), RejectKind::BadId)
            }
            28 => {
                let (key, v): (&'static str, Value) = match round % 4 {
                    0 => ("security_id", "".into()),
                    1 => ("security_id", "X".repeat(65).into()),
                    2 => ("book_id", "EQ_US".into()),
                    _ => ("security_id", Value::from(12345)),
                };
                set_field(&mut f, key, v);
                (obj(&f), RejectKind::BadId)
            }
            29 => {
                set_field(&mut f, "action", "AMEND".into());
                remove_field(&mut f, "version");
                (obj(&f), RejectKind::BadVersion)
            }
            30 => {
                set_field(&mut f, "action", "CANCEL".into());
                set_field(&mut f, "version", Value::from(1));
                (obj(&f), RejectKind::BadVersion)
            }
            31 => {
                // same (trade_id, version) as an accepted event, different price
                if self.ring.is_empty() {
                    return None;
                }
                let mut found = None;
                for _ in 0..16 {
                    let i = self.rng.below_usize(self.ring.len());
                    if self.ring[i].0.price.is_some() {
                        found = Some(i);
                        break;
                    }
                }
                let mut e = self.ring[found?].0.clone();
                let mut p = e.price?;
                p.int += 1 + self.rng.below(3);
                e.price = Some(p);
                (e.render(), RejectKind::ConflictingDuplicate)
            }
            _ => {
                set_field(&mut f, "version", Value::from(0));
                (obj(&f), RejectKind::MalformedField)
            }
        };
        Some(out)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use deltabook_dataflows::gate::{Admission, DuplicateRule};
    use std::collections::HashMap;

    fn run(cfg: &GenerateConfig) -> (Vec<u8>, GenerateStats, Vec<(String, LineKind)>) {
        let mut out = Vec::new();
        let mut lines = Vec::new();
        let stats =
            generate_annotated(cfg, &mut out, |l, k| lines.push((l.to_string(), k))).unwrap();
        (out, stats, lines)
    }

    // ----- a small, spec-faithful model of the gate ------------------------

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Accepted,
        Duplicate,
    }

    /// The real gate (`deltabook_dataflows::gate`), reduced to what the generator claims.
    fn gate(line: &str, gate: &mut DuplicateRule) -> Result<Outcome, RejectKind> {
        match gate.admit(line.as_bytes()) {
            Admission::Accepted(_) => Ok(Outcome::Accepted),
            Admission::Duplicate(_) => Ok(Outcome::Duplicate),
            Admission::Rejected(rejection) => Err(rejection.kind),
        }
    }

    fn pos_key(o: &Value) -> String {
        format!(
            "{}_{}_{}",
            o["account_id"].as_str().unwrap(),
            o["book_id"].as_str().unwrap(),
            o["security_id"].as_str().unwrap()
        )
    }

    fn units8(s: &str) -> i128 {
        let (i, f) = s.split_once('.').unwrap_or((s, ""));
        let mut f = f.to_string();
        while f.len() < 8 {
            f.push('0');
        }
        i.parse::<i128>().unwrap() * E8 + f.parse::<i128>().unwrap()
    }

    // ----- tests -----------------------------------------------------------

    #[test]
    fn deterministic_per_seed() {
        let a = run(&GenerateConfig::new(42, 20, 5000)).0;
        let b = run(&GenerateConfig::new(42, 20, 5000)).0;
        let c = run(&GenerateConfig::new(43, 20, 5000)).0;
        assert_eq!(a, b);
        assert_ne!(a, c);
        // generate() writes the same bytes as generate_annotated()
        let mut d = Vec::new();
        let stats = generate(&GenerateConfig::new(42, 20, 5000), &mut d).unwrap();
        assert_eq!(a, d);
        assert_eq!(stats, run(&GenerateConfig::new(42, 20, 5000)).1);
    }

    #[test]
    fn exact_line_count() {
        for (positions, trades) in [(1, 0), (1, 1), (0, 7), (3, 999), (200, 3000), (5000, 2000)] {
            let (out, stats, lines) = run(&GenerateConfig::new(7, positions, trades));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), trades);
            assert_eq!(stats.lines, trades);
            assert_eq!(lines.len(), trades);
            if trades > 0 {
                assert_eq!(out.last(), Some(&b'\n'));
            }
            let joined: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
            assert_eq!(joined.as_bytes(), &out[..]);
        }
    }

    #[test]
    fn no_carriage_returns_and_utf8() {
        let (out, _, _) = run(&GenerateConfig::new(3, 50, 20_000));
        assert!(!out.contains(&b'\r'));
        assert!(std::str::from_utf8(&out).is_ok());
    }

    #[test]
    fn invalid_start_date_is_an_error() {
        let mut cfg = GenerateConfig::new(1, 5, 10);
        cfg.start_date = (2026, 2, 30);
        assert!(generate(&cfg, &mut Vec::new()).is_err());
    }

    #[test]
    fn every_line_is_what_it_claims_and_all_categories_appear() {
        let cfg = GenerateConfig::new(2026, 50, 20_000);
        let (_, stats, lines) = run(&cfg);
        let mut accepted = DuplicateRule::new();
        let mut kinds: HashMap<RejectKind, usize> = HashMap::new();
        let mut count = GenerateStats::default();
        let mut seen_lines: HashSet<&str> = HashSet::new();
        let (mut exact_dups, mut equiv_dups) = (0, 0);
        let mut new_ids: HashSet<String> = HashSet::new();
        let mut max_version: HashMap<String, u64> = HashMap::new();
        let mut trade_pos: HashMap<String, String> = HashMap::new();
        let (mut out_of_order, mut skipped, mut before_new, mut moved) = (0, 0, 0, 0);
        let mut all_ids_with_new: HashSet<String> = HashSet::new();
        for (l, k) in &lines {
            if matches!(k, LineKind::New { .. }) {
                let v: Value = serde_json::from_str(l).unwrap();
                all_ids_with_new.insert(v["trade_id"].as_str().unwrap().to_string());
            }
        }
        let (mut orphan_amend, mut orphan_cancel, mut bare_cancel) = (0, 0, 0);
        let mut features: HashMap<&'static str, usize> = HashMap::new();

        for (n, (line, kind)) in lines.iter().enumerate() {
            let got = gate(line, &mut accepted);
            count.lines += 1;
            match kind {
                LineKind::New { backdated } => {
                    assert_eq!(got, Ok(Outcome::Accepted), "line {}: {line}", n + 1);
                    count.new += 1;
                    count.backdated += *backdated as usize;
                }
                LineKind::Amend => {
                    assert_eq!(got, Ok(Outcome::Accepted), "line {}: {line}", n + 1);
                    count.amends += 1;
                }
                LineKind::Cancel => {
                    assert_eq!(got, Ok(Outcome::Accepted), "line {}: {line}", n + 1);
                    count.cancels += 1;
                }
                LineKind::Duplicate => {
                    assert_eq!(got, Ok(Outcome::Duplicate), "line {}: {line}", n + 1);
                    count.duplicates += 1;
                    if seen_lines.contains(line.as_str()) {
                        exact_dups += 1;
                    } else {
                        equiv_dups += 1;
                    }
                }
                LineKind::Invalid(want) => {
                    assert_eq!(got, Err(*want), "line {}: {line:?}", n + 1);
                    count.invalid += 1;
                    *kinds.entry(*want).or_default() += 1;
                }
            }
            seen_lines.insert(line);
            if !matches!(
                kind,
                LineKind::New { .. } | LineKind::Amend | LineKind::Cancel
            ) {
                continue;
            }
            let v: Value = serde_json::from_str(line).unwrap();
            let id = v["trade_id"].as_str().unwrap().to_string();
            let ver = v["version"].as_u64().unwrap_or(1);
            let action = v["action"].as_str().unwrap_or("NEW");
            assert_eq!(
                action,
                match kind {
                    LineKind::New { .. } => "NEW",
                    LineKind::Amend => "AMEND",
                    _ => "CANCEL",
                }
            );
            let prev = max_version.get(&id).copied().unwrap_or(0);
            if ver < prev {
                out_of_order += 1;
            }
            if ver > prev + 1 && all_ids_with_new.contains(&id) && prev > 0 {
                skipped += 1;
            }
            if action != "NEW" && !all_ids_with_new.contains(&id) {
                if action == "AMEND" {
                    orphan_amend += 1;
                } else {
                    orphan_cancel += 1;
                }
            }
            if action == "AMEND" && all_ids_with_new.contains(&id) && !new_ids.contains(&id) {
                before_new += 1;
            }
            if action == "NEW" {
                new_ids.insert(id.clone());
            }
            if action == "CANCEL" && v.get("quantity").is_none() && v.get("side").is_none() {
                bare_cancel += 1;
            }
            if action != "CANCEL" {
                let key = pos_key(&v);
                if let Some(old) = trade_pos.get(&id) {
                    if *old != key && ver > prev {
                        moved += 1;
                    }
                }
                if ver > prev {
                    trade_pos.insert(id.clone(), key);
                }
            }
            max_version.insert(id, prev.max(ver));
            let o = v.as_object().unwrap();
            let mut feat = |name: &'static str, yes: bool| {
                if yes {
                    *features.entry(name).or_default() += 1;
                }
            };
            feat("no_version", !o.contains_key("version"));
            feat("no_action", !o.contains_key("action"));
            feat("currency", o.get("currency").is_some_and(|c| c.is_string()));
            feat("null", o.values().any(|v| v.is_null()));
            feat("sequence", o.contains_key("sequence"));
            feat("correlation", o.contains_key("correlation_id"));
            feat(
                "extra",
                o.contains_key("venue") || o.contains_key("source") || o.contains_key("note"),
            );
            let tt = o.get("trade_time").and_then(|t| t.as_str());
            feat(
                "time_offset",
                tt.is_some_and(|t| t.ends_with(":00") && !t.ends_with("+00:00")),
            );
            feat("time_absent", tt.is_none());
            feat(
                "time_nanos",
                tt.is_some_and(|t| t.split('.').nth(1).is_some_and(|f| f.len() >= 10)),
            );
            let q = o.get("quantity").and_then(|q| q.as_str()).unwrap_or("1");
            feat("qty_trailing_zero", q.contains('.') && q.ends_with('0'));
            feat("qty_4dp", q.split('.').nth(1).is_some_and(|f| f.len() == 4));
            let p = o.get("price").and_then(|q| q.as_str()).unwrap_or("1.00");
            feat(
                "price_6dp",
                p.split('.').nth(1).is_some_and(|f| f.len() == 6),
            );
            feat("spaced", line.contains("\": "));
        }

        assert_eq!(count, stats);
        assert_eq!(
            stats.lines,
            stats.new + stats.amends + stats.cancels + stats.duplicates + stats.invalid
        );
        for (name, n) in [
            ("new", stats.new),
            ("amends", stats.amends),
            ("cancels", stats.cancels),
            ("duplicates", stats.duplicates),
            ("invalid", stats.invalid),
            ("backdated", stats.backdated),
            ("exact duplicates", exact_dups),
            ("equivalent duplicates", equiv_dups),
            ("out-of-order versions", out_of_order),
            ("skipped versions", skipped),
            ("amend before new", before_new),
            ("amend moving position", moved),
            ("orphan amend", orphan_amend),
            ("orphan cancel", orphan_cancel),
            ("bare cancel", bare_cancel),
        ] {
            assert!(n > 0, "no {name} in a 20k stream");
        }
        for kind in RejectKind::ALL {
            assert!(
                kinds.get(&kind).copied().unwrap_or(0) > 0,
                "no {kind:?} rejection"
            );
        }
        assert!(lines.iter().any(|(l, _)| l.is_empty()), "no blank line");
        for f in [
            "no_version",
            "no_action",
            "currency",
            "null",
            "sequence",
            "correlation",
            "extra",
            "time_offset",
            "time_absent",
            "time_nanos",
            "qty_trailing_zero",
            "qty_4dp",
            "price_6dp",
            "spaced",
        ] {
            assert!(
                features.get(f).copied().unwrap_or(0) > 0,
                "no {f} in a 20k stream"
            );
        }
        // ratios roughly as configured
        let n = stats.lines as f64;
        assert!(
            (stats.invalid as f64 / n - 0.005).abs() < 0.003,
            "{stats:?}"
        );
        assert!(
            (stats.duplicates as f64 / n - 0.01).abs() < 0.004,
            "{stats:?}"
        );
        assert!((stats.amends as f64 / n - 0.033).abs() < 0.01, "{stats:?}");
        assert!((stats.cancels as f64 / n - 0.02).abs() < 0.006, "{stats:?}");
        assert!(
            (stats.backdated as f64 / stats.new as f64 - 0.05).abs() < 0.01,
            "{stats:?}"
        );
    }

    #[test]
    fn positions_cross_zero_and_large_positions_dominate() {
        let cfg = GenerateConfig::new(11, 50, 20_000);
        let (_, _, lines) = run(&cfg);
        let mut qty: HashMap<String, i128> = HashMap::new();
        let mut trades: HashMap<String, usize> = HashMap::new();
        let (mut crossings, mut flats) = (0, 0);
        for (line, kind) in &lines {
            if !matches!(kind, LineKind::New { .. }) {
                continue;
            }
            let v: Value = serde_json::from_str(line).unwrap();
            let q = units8(v["quantity"].as_str().unwrap());
            let signed = if v["side"] == "BUY" { q } else { -q };
            let key = pos_key(&v);
            *trades.entry(key.clone()).or_default() += 1;
            let before = qty.get(&key).copied().unwrap_or(0);
            let after = before + signed;
            if (before > 0 && after < 0) || (before < 0 && after > 0) {
                crossings += 1;
            }
            if before != 0 && after == 0 {
                flats += 1;
            }
            qty.insert(key, after);
        }
        assert!(crossings > 10, "only {crossings} zero crossings");
        assert!(flats > 0, "no position ever closed flat");
        assert_eq!(trades.len(), 50, "every position trades");
        let mut counts: Vec<usize> = trades.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top3: usize = counts[..3].iter().sum();
        let total: usize = counts.iter().sum();
        assert!(
            top3 * 100 / total >= 25,
            "large positions get {top3} of {total}"
        );
    }

    #[test]
    fn dates_advance_and_backdated_are_earlier() {
        let mut cfg = GenerateConfig::new(5, 4, 10_000);
        cfg.trades_per_day = 100; // 100 * ceil(sqrt(4)) = 200 lines per weekday
        let (_, stats, lines) = run(&cfg);
        let start = days_from_civil(2026, 1, 2);
        let mut today = start;
        let mut day = 0;
        let mut dates = HashSet::new();
        let mut on_today = 0;
        for (n, (line, kind)) in lines.iter().enumerate() {
            while day < n / 200 {
                day += 1;
                today += 1;
                while weekday(today) == 0 || weekday(today) == 6 {
                    today += 1;
                }
            }
            if let LineKind::New { backdated } = kind {
                let v: Value = serde_json::from_str(line).unwrap();
                let d = v["trade_date"].as_str().unwrap().to_string();
                if *backdated {
                    assert!(
                        d >= fmt_date(today - 30) && d < fmt_date(today),
                        "{d} vs {}",
                        fmt_date(today)
                    );
                } else {
                    assert!(d <= fmt_date(today), "{d} after {}", fmt_date(today));
                    on_today += (d == fmt_date(today)) as usize;
                }
                dates.insert(d);
            }
        }
        assert!(on_today * 10 >= (stats.new - stats.backdated) * 9);
        assert!(dates.len() >= 50, "only {} distinct dates", dates.len());
        assert_eq!(fmt_date(today), "2026-03-12"); // 49 weekdays after Friday 2026-01-02
    }
}
