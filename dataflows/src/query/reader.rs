//! Where a query's rows come from: the shared traces read now, as known at
//! an earlier engine timestamp (`AS KNOWN AT`), and/or as of a business
//! date (`AS OF DATE`, which books the live trades dated up to it again).

use differential_dataflow::VecCollection;
use timely::dataflow::Scope;

use super::as_of::AsOf;
use super::fixed_totals::{FixedTotals, GroupTotalsCollection};
use super::fold::{fold_rows, Columns, MapRows, RowFold};
use super::tables::{lot_row, position_row, trade_row, ImportButton, Interval, MissingTable};
use super::tables::{Table, Tables};
use super::value::{Row, Value};
use crate::engine::{book_again, Diff, Time};
use crate::trade::{Date, TradeVersion};

/// Why a query could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// It reads a table the run does not share.
    #[error(transparent)]
    Missing(#[from] MissingTable),
    /// `AS KNOWN AT` a time the shared traces have compacted away.
    #[error(
        "AS KNOWN AT {known_at} is older than the history kept in memory (from timestamp {since})"
    )]
    Forgotten {
        /// The time asked for.
        known_at: Time,
        /// The oldest time the traces still distinguish.
        since: Time,
    },
}

/// True when `version` is dated on or before `date` (`AS OF DATE`).
fn dated_by(version: &TradeVersion, date: Date) -> bool {
    version.trade_date.is_some_and(|d| d <= date)
}

/// Reads a query's tables into one dataflow, under its [`AsOf`]; keeps
/// every import's shutdown button.
pub(super) struct Reader<'t, 'scope> {
    tables: &'t mut Tables,
    scope: Scope<'scope, Time>,
    as_of: AsOf,
    interval: Interval,
    /// Lots and positions booked again for `AS OF DATE`, built once per query.
    rebooked: Option<[VecCollection<'scope, Time, Row, Diff>; 2]>,
    /// The imports' shutdown buttons.
    pub shutdown: Vec<ImportButton>,
}

impl<'t, 'scope> Reader<'t, 'scope> {
    /// A reader whose snapshot of the present is at `since` (updates
    /// before it are read as at it). `AS KNOWN AT t` reads instead every
    /// update the traces keep up to `t` and nothing after, which needs
    /// the traces to distinguish `t` still.
    pub fn new(
        tables: &'t mut Tables,
        scope: Scope<'scope, Time>,
        as_of: AsOf,
        since: Time,
    ) -> Result<Reader<'t, 'scope>, RenderError> {
        let interval = match as_of.known_at {
            None => Interval { since, until: None },
            Some(known_at) => {
                let kept_since = tables.history_since();
                if known_at < kept_since {
                    return Err(RenderError::Forgotten {
                        known_at,
                        since: kept_since,
                    });
                }
                Interval {
                    since: 0,
                    until: Some(known_at.saturating_add(1)),
                }
            }
        };
        Ok(Reader {
            tables,
            scope,
            as_of,
            interval,
            rebooked: None,
            shutdown: Vec::new(),
        })
    }

    /// The `AS OF DATE` that `table` is booked again for, if any.
    fn rebooked_date(&self, table: Table) -> Option<Date> {
        self.as_of.date.filter(|_| table.has_business_date())
    }

    /// The rows of `table`, read by `fold` (only `columns` are computed
    /// where rows are built from the shared traces).
    pub fn rows_fold<F: RowFold>(
        &mut self,
        table: Table,
        columns: Columns,
        fold: F,
    ) -> Result<VecCollection<'scope, Time, F::Out, Diff>, MissingTable> {
        let Some(date) = self.rebooked_date(table) else {
            let (rows, button) =
                self.tables
                    .import_fold(table, self.scope, self.interval, columns, fold)?;
            self.shutdown.push(button);
            return Ok(rows);
        };
        if table == Table::Trades {
            let (rows, button) =
                self.tables
                    .import_trade_versions(self.scope, self.interval, move |v| {
                        dated_by(v, date).then(|| trade_row(v))
                    })?;
            self.shutdown.push(button);
            return Ok(fold_rows(rows, fold));
        }
        let [lots, positions] = match &self.rebooked {
            Some(rebooked) => rebooked.clone(),
            None => {
                let (trades, button) =
                    self.tables
                        .import_trade_versions(self.scope, self.interval, move |v| {
                            dated_by(v, date).then(|| v.clone())
                        })?;
                self.shutdown.push(button);
                let (methods, button) = self.tables.import_methods(self.scope, self.interval)?;
                self.shutdown.push(button);
                let (lots, positions) = book_again(trades, methods);
                let rebooked = [
                    lots.map(|(key, lot)| lot_row(&key, &lot)),
                    positions.map(|(key, summary)| position_row(&key, &summary)),
                ];
                self.rebooked.insert(rebooked).clone()
            }
        };
        let rows = if table == Table::Lots {
            lots
        } else {
            positions
        };
        Ok(fold_rows(rows, fold))
    }

    /// The GROUP BY totals of `fold` over `table` read by the typed lane;
    /// `Ok(None)` where rows must be built instead (`AS OF DATE` books the
    /// table again; a table without a typed lane).
    pub(super) fn fixed_totals(
        &mut self,
        table: Table,
        fold: FixedTotals,
    ) -> Result<Option<GroupTotalsCollection<'scope>>, MissingTable> {
        if self.rebooked_date(table).is_some() {
            return Ok(None);
        }
        let imported = self
            .tables
            .import_fixed_totals(table, self.scope, self.interval, fold)?;
        Ok(imported.map(|(totals, button)| {
            self.shutdown.push(button);
            totals
        }))
    }

    /// The rows of `table` (only `columns` computed).
    pub fn rows(
        &mut self,
        table: Table,
        columns: Columns,
    ) -> Result<VecCollection<'scope, Time, Row, Diff>, MissingTable> {
        let whole = MapRows::new(|row: &[Value]| Some(row.to_vec()));
        self.rows_fold(table, columns, whole)
    }
}
