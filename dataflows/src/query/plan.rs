//! SQL text to a [`Plan`]: the supported subset, every name resolved to a
//! column index, and a precise error (construct and position) for anything
//! else.

use sqlparser::ast::{
    self, BinaryOperator, DataType, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    JoinConstraint, JoinOperator, LimitClause, OrderByKind, SelectItem, SetExpr, Spanned,
    Statement, TableFactor, UnaryOperator,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Span};

use super::as_of::{split_as_of, AsOf};
use super::expr::{AggFunc, Aggregate, BinOp, Expr};
use super::fold::Columns;
use super::tables::Table;
use super::value::{date_of_text, Number, Value};

/// Why a query was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not SQL the parser understands.
    #[error("SQL syntax error: {0}")]
    Syntax(String),
    /// SQL outside the supported subset, or names that do not resolve.
    #[error("{message} (line {line}, column {column})")]
    At {
        /// What is wrong, naming the construct.
        message: String,
        /// 1-based line of the construct.
        line: u64,
        /// 1-based column of the construct.
        column: u64,
    },
}

fn at(span: Span, message: impl Into<String>) -> QueryError {
    error_at(span.start, message)
}

/// A refusal at `location` (1-based line and column).
pub(super) fn error_at(location: Location, message: impl Into<String>) -> QueryError {
    QueryError::At {
        message: message.into(),
        line: location.line,
        column: location.column,
    }
}

fn unsupported(span: Span, construct: &str) -> QueryError {
    at(span, format!("{construct} is not supported"))
}

/// One table read by the query, with the name it is referred to by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The table.
    pub table: Table,
    /// Its alias, else its name.
    pub name: String,
    /// Index of its first column in the combined row.
    pub offset: usize,
}

/// An inner equi-join of the sources before it with one more source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// Key over the combined row of the sources before.
    pub left_key: Vec<Expr>,
    /// Key over the joined source's own row.
    pub right_key: Vec<Expr>,
}

/// GROUP BY and aggregates: the grouped row is the key values, then the
/// aggregate values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grouping {
    /// Group key over the combined row (empty: one group).
    pub keys: Vec<Expr>,
    /// Aggregates over the combined row.
    pub aggregates: Vec<Aggregate>,
    /// HAVING over the grouped row.
    pub having: Option<Expr>,
}

/// One ORDER BY item, by output column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderItem {
    /// Output column.
    pub column: usize,
    /// DESC.
    pub descending: bool,
    /// NULLS FIRST (default: last for ASC, first for DESC, as PostgreSQL).
    pub nulls_first: bool,
}

/// A compiled query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The tables read, in FROM order; the combined row is their columns
    /// in that order.
    pub sources: Vec<Source>,
    /// `joins[i]` joins source `i + 1`.
    pub joins: Vec<Join>,
    /// WHERE and the ON conditions that are not equalities between the
    /// sides, over the combined row.
    pub filter: Option<Expr>,
    /// GROUP BY / aggregates, if any.
    pub grouping: Option<Grouping>,
    /// The select list, over the combined row (or the grouped row).
    pub select: Vec<Expr>,
    /// Output column names.
    pub columns: Vec<String>,
    /// ORDER BY.
    pub order: Vec<OrderItem>,
    /// LIMIT.
    pub limit: Option<u64>,
    /// `AS OF DATE` / `AS KNOWN AT`, when given.
    pub as_of: AsOf,
    /// The text it was compiled from (the other processes of a cluster
    /// compile it again to attach the same query).
    pub sql: String,
}

impl Plan {
    /// The tables the plan reads (`AS OF DATE` over lots or positions
    /// reads the live trades, to book them again).
    pub fn tables(&self) -> super::tables::TableSet {
        let read: super::tables::TableSet = self.sources.iter().map(|s| s.table).collect();
        let rebooks = self.as_of.date.is_some()
            && (read.contains(Table::Lots) || read.contains(Table::Positions));
        if rebooks {
            read.with(Table::Trades)
        } else {
            read
        }
    }

    /// The expressions over the combined row other than the aggregates'
    /// arguments: WHERE, the joins' left keys, then the group keys (with
    /// GROUP BY) or the select list (without).
    pub(super) fn exprs_beside_aggregates(&self) -> Vec<&Expr> {
        let mut exprs: Vec<&Expr> = self.filter.iter().collect();
        for join in &self.joins {
            exprs.extend(&join.left_key);
        }
        match &self.grouping {
            Some(grouping) => exprs.extend(&grouping.keys),
            None => exprs.extend(&self.select),
        }
        exprs
    }

    /// Per source, the columns of its table the query reads (its rows are
    /// built with only these; the others stay NULL).
    pub fn columns_read(&self) -> Vec<Columns> {
        let mut read = vec![Columns::NONE; self.sources.len()];
        // A column of the combined row, to its source's own index.
        let mut mark = |combined: usize| {
            let owner = self.sources.iter().rposition(|s| s.offset <= combined);
            if let Some(owner) = owner {
                read[owner] = read[owner].with(combined - self.sources[owner].offset);
            }
        };
        let mut over_combined = self.exprs_beside_aggregates();
        if let Some(grouping) = &self.grouping {
            over_combined.extend(grouping.aggregates.iter().filter_map(|a| a.arg.as_ref()));
        }
        for expr in over_combined {
            expr.visit_columns(&mut mark);
        }
        // A join's right key reads the joined source's own row.
        for (join, source) in self.joins.iter().zip(self.sources.iter().skip(1)) {
            for expr in &join.right_key {
                expr.visit_columns(&mut |own| mark(source.offset + own));
            }
        }
        read
    }

    /// Parses and compiles `sql`.
    pub fn compile(sql: &str) -> Result<Plan, QueryError> {
        let split = split_as_of(sql)?;
        let statements = Parser::parse_sql(&GenericDialect {}, split.statement)
            .map_err(|e| QueryError::Syntax(e.to_string()))?;
        let [statement] = statements.as_slice() else {
            return Err(QueryError::Syntax(format!(
                "expected one statement, found {}",
                statements.len()
            )));
        };
        let Statement::Query(query) = statement else {
            return Err(unsupported(
                statement.span(),
                "a statement other than SELECT",
            ));
        };
        let mut plan = compile_query(query)?;
        plan.as_of = split.as_of;
        plan.sql = sql.to_string();
        if let Some(at) = split.date_at {
            if let Some(source) = plan.sources.iter().find(|s| !s.table.has_business_date()) {
                return Err(error_at(
                    at,
                    format!(
                        "AS OF DATE applies to trades, lots and positions, not to {}",
                        source.table.name()
                    ),
                ));
            }
        }
        Ok(plan)
    }
}

fn compile_query(query: &ast::Query) -> Result<Plan, QueryError> {
    let span = query.span();
    if query.with.is_some() {
        return Err(unsupported(span, "WITH"));
    }
    if query.fetch.is_some() {
        return Err(unsupported(span, "FETCH"));
    }
    if !query.locks.is_empty() {
        return Err(unsupported(span, "FOR UPDATE / FOR SHARE"));
    }
    if query.for_clause.is_some() || query.settings.is_some() || query.format_clause.is_some() {
        return Err(unsupported(span, "FOR / SETTINGS / FORMAT"));
    }
    if !query.pipe_operators.is_empty() {
        return Err(unsupported(span, "pipe operators"));
    }
    let select = match query.body.as_ref() {
        SetExpr::Select(select) => select,
        SetExpr::Query(inner) => return Err(unsupported(inner.span(), "a subquery")),
        SetExpr::SetOperation { op, .. } => {
            return Err(unsupported(query.body.span(), &op.to_string()))
        }
        other => return Err(unsupported(other.span(), "this query form")),
    };
    let mut plan = compile_select(select)?;
    if let Some(order_by) = &query.order_by {
        let OrderByKind::Expressions(items) = &order_by.kind else {
            return Err(unsupported(span, "ORDER BY ALL"));
        };
        for item in items {
            if item.with_fill.is_some() {
                return Err(unsupported(item.span(), "WITH FILL"));
            }
            let column = order_column(&plan, &item.expr)?;
            let descending = item.options.asc == Some(false);
            plan.order.push(OrderItem {
                column,
                descending,
                nulls_first: item.options.nulls_first.unwrap_or(descending),
            });
        }
    }
    if let Some(limit) = &query.limit_clause {
        plan.limit = Some(compile_limit(limit, span)?);
    }
    Ok(plan)
}

fn compile_limit(limit: &LimitClause, span: Span) -> Result<u64, QueryError> {
    match limit {
        LimitClause::LimitOffset {
            limit: Some(expr),
            offset: None,
            limit_by,
        } if limit_by.is_empty() => match expr {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(text, _) => text
                    .parse::<u64>()
                    .map_err(|_| at(expr.span(), "LIMIT needs a non-negative integer")),
                _ => Err(at(expr.span(), "LIMIT needs a non-negative integer")),
            },
            _ => Err(at(
                expr.span(),
                "LIMIT needs a non-negative integer constant",
            )),
        },
        LimitClause::LimitOffset {
            offset: Some(offset),
            ..
        } => Err(unsupported(offset.value.span(), "OFFSET")),
        _ => Err(unsupported(span, "this LIMIT form")),
    }
}

/// The output column an ORDER BY item names: an output name, a 1-based
/// ordinal, or an expression of the select list.
fn order_column(plan: &Plan, expr: &ast::Expr) -> Result<usize, QueryError> {
    if let ast::Expr::Identifier(ident) = expr {
        let matches: Vec<usize> = (0..plan.columns.len())
            .filter(|&i| plan.columns[i].eq_ignore_ascii_case(&ident.value))
            .collect();
        if let [one] = matches.as_slice() {
            return Ok(*one);
        }
    }
    if let ast::Expr::Value(v) = expr {
        if let ast::Value::Number(text, _) = &v.value {
            return match text.parse::<usize>() {
                Ok(k) if k >= 1 && k <= plan.columns.len() => Ok(k - 1),
                _ => Err(at(
                    expr.span(),
                    format!("ORDER BY {text}: no such select-list position"),
                )),
            };
        }
    }
    // An expression equal to one of the select list's.
    let scope = Scope::of(&plan.sources);
    let mut aggregates = plan
        .grouping
        .as_ref()
        .map(|g| g.aggregates.clone())
        .unwrap_or_default();
    let keys = plan.grouping.as_ref().map(|g| g.keys.clone());
    let before = aggregates.len();
    let compiled = match &keys {
        Some(keys) => scope.compile(
            expr,
            &mut Mode::Grouped {
                keys,
                aggregates: &mut aggregates,
            },
        ),
        None => scope.compile(expr, &mut Mode::Row),
    };
    if let Ok(compiled) = compiled {
        if aggregates.len() == before {
            if let Some(i) = plan.select.iter().position(|e| *e == compiled) {
                return Ok(i);
            }
        }
    }
    Err(at(
        expr.span(),
        format!("ORDER BY {expr}: order by a column of the select list (its name, position or expression)"),
    ))
}

fn compile_select(select: &ast::Select) -> Result<Plan, QueryError> {
    let span = select.span();
    if select.distinct.is_some() {
        return Err(unsupported(span, "DISTINCT"));
    }
    if select.top.is_some() {
        return Err(unsupported(span, "TOP"));
    }
    if select.into.is_some() {
        return Err(unsupported(span, "SELECT INTO"));
    }
    if select.exclude.is_some() {
        return Err(unsupported(span, "EXCLUDE"));
    }
    if !select.lateral_views.is_empty() {
        return Err(unsupported(span, "LATERAL VIEW"));
    }
    if select.prewhere.is_some() {
        return Err(unsupported(span, "PREWHERE"));
    }
    if !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
    {
        return Err(unsupported(span, "CLUSTER BY / DISTRIBUTE BY / SORT BY"));
    }
    if !select.named_window.is_empty() || select.qualify.is_some() {
        return Err(unsupported(span, "WINDOW / QUALIFY"));
    }
    if select.connect_by.is_some() {
        return Err(unsupported(span, "CONNECT BY"));
    }
    if select.value_table_mode.is_some() {
        return Err(unsupported(span, "SELECT AS VALUE / STRUCT"));
    }
    let [from] = select.from.as_slice() else {
        return Err(match select.from.get(1) {
            Some(second) => unsupported(second.span(), "a comma join (write JOIN ... ON)"),
            None => at(span, "a query needs FROM and one of the tables"),
        });
    };
    let mut sources = vec![source(&from.relation, 0)?];
    let mut joins = Vec::new();
    let mut filters = Vec::new();
    for join in &from.joins {
        let constraint = match &join.join_operator {
            JoinOperator::Join(c) | JoinOperator::Inner(c) => c,
            other => {
                let kind = match other {
                    JoinOperator::Left(_) | JoinOperator::LeftOuter(_) => "LEFT JOIN",
                    JoinOperator::Right(_) | JoinOperator::RightOuter(_) => "RIGHT JOIN",
                    JoinOperator::FullOuter(_) => "FULL JOIN",
                    JoinOperator::CrossJoin(_) => "CROSS JOIN",
                    JoinOperator::CrossApply | JoinOperator::OuterApply => "APPLY",
                    _ => "this join",
                };
                return Err(at(
                    join.span(),
                    format!("{kind} is not supported: only inner JOIN ... ON"),
                ));
            }
        };
        let JoinConstraint::On(on) = constraint else {
            return Err(unsupported(
                join.span(),
                "JOIN without ON (USING, NATURAL, cross)",
            ));
        };
        let offset = sources
            .last()
            .map_or(0, |s| s.offset + s.table.columns().len());
        sources.push(source(&join.relation, offset)?);
        let scope = Scope::of(&sources);
        let left = 0..offset;
        let right = offset..offset + sources[sources.len() - 1].table.columns().len();
        let mut plan_join = Join {
            left_key: Vec::new(),
            right_key: Vec::new(),
        };
        for conjunct in conjuncts(on) {
            let compiled = scope.compile(conjunct, &mut Mode::Row)?;
            if let Expr::Binary(BinOp::Eq, a, b) = &compiled {
                let sides = if a.reads_only(&left) && b.reads_only(&right) {
                    Some((a, b))
                } else if b.reads_only(&left) && a.reads_only(&right) {
                    Some((b, a))
                } else {
                    None
                };
                if let Some((l, r)) = sides {
                    plan_join.left_key.push((**l).clone());
                    plan_join.right_key.push(r.shifted_down(offset));
                    continue;
                }
            }
            filters.push(compiled);
        }
        if plan_join.left_key.is_empty() {
            return Err(at(
                on.span(),
                "JOIN ... ON needs an equality between a column of each side",
            ));
        }
        joins.push(plan_join);
    }
    let scope = Scope::of(&sources);
    if let Some(selection) = &select.selection {
        filters.push(scope.compile(selection, &mut Mode::Row)?);
    }
    let filter = filters
        .into_iter()
        .reduce(|a, b| Expr::Binary(BinOp::And, Box::new(a), Box::new(b)));

    let group_exprs: &[ast::Expr] = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) => {
            if !modifiers.is_empty() {
                return Err(unsupported(
                    span,
                    "GROUP BY modifiers (ROLLUP, CUBE, TOTALS)",
                ));
            }
            exprs
        }
        GroupByExpr::All(_) => return Err(unsupported(span, "GROUP BY ALL")),
    };
    let has_aggregate = select.projection.iter().any(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            contains_aggregate(e)
        }
        _ => false,
    }) || select.having.as_ref().is_some_and(contains_aggregate);
    let grouped = !group_exprs.is_empty() || has_aggregate;

    let mut select_exprs = Vec::new();
    let mut columns = Vec::new();
    let mut grouping = None;
    if grouped {
        let keys = group_exprs
            .iter()
            .map(|e| {
                if contains_aggregate(e) {
                    Err(at(e.span(), format!("an aggregate in GROUP BY: {e}")))
                } else {
                    scope.compile(e, &mut Mode::Row)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut aggregates = Vec::new();
        for item in &select.projection {
            let (expr, name) = select_item(item)?;
            select_exprs.push(scope.compile(
                expr,
                &mut Mode::Grouped {
                    keys: &keys,
                    aggregates: &mut aggregates,
                },
            )?);
            columns.push(name);
        }
        let having = select
            .having
            .as_ref()
            .map(|h| {
                scope.compile(
                    h,
                    &mut Mode::Grouped {
                        keys: &keys,
                        aggregates: &mut aggregates,
                    },
                )
            })
            .transpose()?;
        grouping = Some(Grouping {
            keys,
            aggregates,
            having,
        });
    } else {
        if let Some(having) = &select.having {
            return Err(at(having.span(), "HAVING needs GROUP BY or an aggregate"));
        }
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(_) => {
                    for s in &sources {
                        for (i, c) in s.table.columns().iter().enumerate() {
                            select_exprs.push(Expr::Column(s.offset + i));
                            columns.push((*c).to_string());
                        }
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let name = kind.to_string();
                    let name = name.trim_end_matches(".*");
                    let s = sources
                        .iter()
                        .find(|s| s.name.eq_ignore_ascii_case(name))
                        .ok_or_else(|| at(item.span(), format!("no table {name} in FROM")))?;
                    for (i, c) in s.table.columns().iter().enumerate() {
                        select_exprs.push(Expr::Column(s.offset + i));
                        columns.push((*c).to_string());
                    }
                }
                _ => {
                    let (expr, name) = select_item(item)?;
                    select_exprs.push(scope.compile(expr, &mut Mode::Row)?);
                    columns.push(name);
                }
            }
        }
    }
    Ok(Plan {
        sources,
        joins,
        filter,
        grouping,
        select: select_exprs,
        columns,
        order: Vec::new(),
        limit: None,
        as_of: AsOf::default(),
        sql: String::new(),
    })
}

fn select_item(item: &SelectItem) -> Result<(&ast::Expr, String), QueryError> {
    match item {
        SelectItem::UnnamedExpr(expr) => {
            let name = match expr {
                ast::Expr::Identifier(i) => i.value.clone(),
                ast::Expr::CompoundIdentifier(parts) => {
                    parts.last().map(|i| i.value.clone()).unwrap_or_default()
                }
                other => other.to_string(),
            };
            Ok((expr, name))
        }
        SelectItem::ExprWithAlias { expr, alias } => Ok((expr, alias.value.clone())),
        SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => Err(at(
            item.span(),
            "* with GROUP BY or aggregates: name the columns",
        )),
    }
}

fn source(factor: &TableFactor, offset: usize) -> Result<Source, QueryError> {
    let TableFactor::Table {
        name,
        alias,
        args,
        with_hints,
        version,
        partitions,
        ..
    } = factor
    else {
        return Err(unsupported(
            factor.span(),
            "a FROM item other than a table name",
        ));
    };
    if args.is_some() || !with_hints.is_empty() || version.is_some() || !partitions.is_empty() {
        return Err(unsupported(
            factor.span(),
            "table arguments, hints, versions or partitions",
        ));
    }
    let table_name = name.to_string();
    let table = Table::named(&table_name).ok_or_else(|| {
        let known: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        at(
            factor.span(),
            format!("no table {table_name} (tables: {})", known.join(", ")),
        )
    })?;
    if let Some(alias) = alias {
        if !alias.columns.is_empty() {
            return Err(unsupported(alias.name.span, "column aliases in FROM"));
        }
    }
    Ok(Source {
        table,
        name: alias
            .as_ref()
            .map_or_else(|| table.name().to_string(), |a| a.name.value.clone()),
        offset,
    })
}

fn conjuncts(expr: &ast::Expr) -> Vec<&ast::Expr> {
    match expr {
        ast::Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut all = conjuncts(left);
            all.extend(conjuncts(right));
            all
        }
        ast::Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

fn aggregate_of(function: &ast::Function) -> Option<AggFunc> {
    let name = function.name.to_string().to_ascii_lowercase();
    Some(match name.as_str() {
        "sum" => AggFunc::Sum,
        "count" => AggFunc::Count,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "avg" => AggFunc::Avg,
        _ => return None,
    })
}

fn contains_aggregate(expr: &ast::Expr) -> bool {
    match expr {
        ast::Expr::Function(f) => {
            aggregate_of(f).is_some()
                || match &f.args {
                    FunctionArguments::List(list) => list.args.iter().any(|a| {
                        matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if contains_aggregate(e))
                    }),
                    _ => false,
                }
        }
        ast::Expr::BinaryOp { left, right, .. } => {
            contains_aggregate(left) || contains_aggregate(right)
        }
        ast::Expr::UnaryOp { expr, .. }
        | ast::Expr::Nested(expr)
        | ast::Expr::IsNull(expr)
        | ast::Expr::IsNotNull(expr) => contains_aggregate(expr),
        _ => false,
    }
}

/// How names compile: on the combined row, or after grouping (where a
/// column must be a group key or inside an aggregate).
enum Mode<'a> {
    Row,
    Grouped {
        keys: &'a [Expr],
        aggregates: &'a mut Vec<Aggregate>,
    },
}

/// The sources' columns, for resolving names.
struct Scope<'a> {
    sources: &'a [Source],
}

impl<'a> Scope<'a> {
    fn of(sources: &'a [Source]) -> Scope<'a> {
        Scope { sources }
    }

    fn column(
        &self,
        qualifier: Option<&ast::Ident>,
        name: &ast::Ident,
    ) -> Result<usize, QueryError> {
        let mut found = Vec::new();
        for s in self.sources {
            if qualifier.is_some_and(|q| !q.value.eq_ignore_ascii_case(&s.name)) {
                continue;
            }
            if let Some(i) = s
                .table
                .columns()
                .iter()
                .position(|c| c.eq_ignore_ascii_case(&name.value))
            {
                found.push(s.offset + i);
            }
        }
        match (found.as_slice(), qualifier) {
            ([one], _) => Ok(*one),
            ([], Some(q))
                if !self
                    .sources
                    .iter()
                    .any(|s| s.name.eq_ignore_ascii_case(&q.value)) =>
            {
                Err(at(q.span, format!("no table {} in FROM", q.value)))
            }
            ([], _) => Err(at(name.span, format!("no column {}", name.value))),
            (_, _) => Err(at(
                name.span,
                format!(
                    "column {} is ambiguous: qualify it with its table",
                    name.value
                ),
            )),
        }
    }

    fn compile(&self, expr: &ast::Expr, mode: &mut Mode<'_>) -> Result<Expr, QueryError> {
        if let Mode::Grouped { keys, .. } = mode {
            // A whole group key (or an expression of one) reads the grouped row.
            if !contains_aggregate(expr) {
                if let Ok(row_expr) = self.compile(expr, &mut Mode::Row) {
                    if let Some(i) = keys.iter().position(|k| *k == row_expr) {
                        return Ok(Expr::Column(i));
                    }
                    if matches!(row_expr, Expr::Literal(_)) {
                        return Ok(row_expr);
                    }
                }
            }
        }
        let span = expr.span();
        Ok(match expr {
            ast::Expr::Identifier(ident) => {
                let column = self.column(None, ident)?;
                self.row_column(column, &ident.value, span, mode)?
            }
            ast::Expr::CompoundIdentifier(parts) => {
                let [qualifier, name] = parts.as_slice() else {
                    return Err(unsupported(span, &format!("the name {expr}")));
                };
                let column = self.column(Some(qualifier), name)?;
                self.row_column(column, &expr.to_string(), span, mode)?
            }
            ast::Expr::Nested(inner) => self.compile(inner, mode)?,
            ast::Expr::Value(v) => Expr::Literal(literal(&v.value, span)?),
            ast::Expr::TypedString(typed) => {
                if !matches!(typed.data_type, DataType::Date) {
                    return Err(unsupported(span, &format!("a {} literal", typed.data_type)));
                }
                let text = match &typed.value.value {
                    ast::Value::SingleQuotedString(s) => s,
                    _ => return Err(at(span, "DATE needs a 'YYYY-MM-DD' string")),
                };
                Expr::Literal(Value::Date(date_of_text(text).map_err(|e| at(span, e.0))?))
            }
            ast::Expr::IsNull(e) => Expr::IsNull(Box::new(self.compile(e, mode)?), false),
            ast::Expr::IsNotNull(e) => Expr::IsNull(Box::new(self.compile(e, mode)?), true),
            ast::Expr::UnaryOp { op, expr: inner } => {
                let inner = Box::new(self.compile(inner, mode)?);
                match op {
                    UnaryOperator::Minus => match *inner {
                        Expr::Literal(Value::Number(n)) => {
                            Expr::Literal(Value::Number(n.negated()))
                        }
                        other => Expr::Neg(Box::new(other)),
                    },
                    UnaryOperator::Plus => *inner,
                    UnaryOperator::Not => Expr::Not(inner),
                    other => return Err(unsupported(span, &format!("the operator {other}"))),
                }
            }
            ast::Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Plus => BinOp::Add,
                    BinaryOperator::Minus => BinOp::Sub,
                    BinaryOperator::Multiply => BinOp::Mul,
                    BinaryOperator::Divide => BinOp::Div,
                    BinaryOperator::Eq => BinOp::Eq,
                    BinaryOperator::NotEq => BinOp::NotEq,
                    BinaryOperator::Lt => BinOp::Lt,
                    BinaryOperator::LtEq => BinOp::LtEq,
                    BinaryOperator::Gt => BinOp::Gt,
                    BinaryOperator::GtEq => BinOp::GtEq,
                    BinaryOperator::And => BinOp::And,
                    BinaryOperator::Or => BinOp::Or,
                    other => return Err(unsupported(span, &format!("the operator {other}"))),
                };
                Expr::Binary(
                    op,
                    Box::new(self.compile(left, mode)?),
                    Box::new(self.compile(right, mode)?),
                )
            }
            ast::Expr::Function(function) => self.function(function, mode)?,
            other => {
                let text = other.to_string();
                let head: String = text.chars().take(40).collect();
                return Err(unsupported(span, &format!("the expression `{head}`")));
            }
        })
    }

    /// A column reference: itself on the combined row; after grouping,
    /// only as a group key.
    fn row_column(
        &self,
        column: usize,
        name: &str,
        span: Span,
        mode: &Mode<'_>,
    ) -> Result<Expr, QueryError> {
        match mode {
            Mode::Row => Ok(Expr::Column(column)),
            Mode::Grouped { keys, .. } => keys
                .iter()
                .position(|k| *k == Expr::Column(column))
                .map(Expr::Column)
                .ok_or_else(|| {
                    at(
                        span,
                        format!("column {name} must appear in GROUP BY or inside an aggregate"),
                    )
                }),
        }
    }

    fn function(&self, function: &ast::Function, mode: &mut Mode<'_>) -> Result<Expr, QueryError> {
        let span = function.span();
        if function.filter.is_some() || function.over.is_some() || function.null_treatment.is_some()
        {
            return Err(unsupported(span, "FILTER / OVER / IGNORE NULLS"));
        }
        if !matches!(function.parameters, FunctionArguments::None) {
            return Err(unsupported(span, "function parameters"));
        }
        let args: Vec<&FunctionArgExpr> = match &function.args {
            FunctionArguments::List(list) => {
                if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                    return Err(unsupported(span, "DISTINCT / ORDER BY inside a function"));
                }
                list.args
                    .iter()
                    .map(|a| match a {
                        FunctionArg::Unnamed(arg) => Ok(arg),
                        _ => Err(unsupported(span, "named function arguments")),
                    })
                    .collect::<Result<_, _>>()?
            }
            FunctionArguments::None => Vec::new(),
            FunctionArguments::Subquery(_) => return Err(unsupported(span, "a subquery")),
        };
        let name = function.name.to_string();
        if let Some(func) = aggregate_of(function) {
            let Mode::Grouped { aggregates, .. } = mode else {
                return Err(at(span, format!("aggregate {name} inside an aggregate")));
            };
            let arg = match args.as_slice() {
                [FunctionArgExpr::Wildcard] if func == AggFunc::Count => None,
                [FunctionArgExpr::Expr(e)] => {
                    if contains_aggregate(e) {
                        return Err(at(e.span(), format!("aggregate inside {name}")));
                    }
                    Some(self.compile(e, &mut Mode::Row)?)
                }
                _ => return Err(at(span, format!("{name} takes one argument"))),
            };
            let aggregate = Aggregate { func, arg };
            let index = match aggregates.iter().position(|a| *a == aggregate) {
                Some(i) => i,
                None => {
                    aggregates.push(aggregate);
                    aggregates.len() - 1
                }
            };
            let Mode::Grouped { keys, .. } = mode else {
                return Err(at(span, "internal: grouping lost"));
            };
            return Ok(Expr::Column(keys.len() + index));
        }
        if name.eq_ignore_ascii_case("abs") {
            let [FunctionArgExpr::Expr(e)] = args.as_slice() else {
                return Err(at(span, "ABS takes one argument"));
            };
            return Ok(Expr::Abs(Box::new(self.compile(e, mode)?)));
        }
        Err(unsupported(
            span,
            &format!("the function {name} (supported: SUM, COUNT, MIN, MAX, AVG, ABS)"),
        ))
    }
}

fn literal(value: &ast::Value, span: Span) -> Result<Value, QueryError> {
    Ok(match value {
        ast::Value::Number(text, _) => Value::Number(
            Number::parse(text).ok_or_else(|| at(span, format!("not an exact decimal: {text}")))?,
        ),
        ast::Value::SingleQuotedString(s) => Value::Text(s.as_str().into()),
        ast::Value::Boolean(b) => Value::Bool(*b),
        ast::Value::Null => Value::Null,
        other => return Err(unsupported(span, &format!("the literal {other}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(sql: &str) -> String {
        match Plan::compile(sql) {
            Ok(plan) => panic!("{sql} compiled: {plan:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn refusals_name_the_construct_and_where_it_is() {
        let cases = [
            ("SELECT DISTINCT side FROM lots", "DISTINCT is not supported (line 1, column 1)"),
            (
                "SELECT side FROM lots\n  LEFT JOIN positions ON lots.position_key = positions.position_key",
                "LEFT JOIN is not supported: only inner JOIN ... ON (line 2, column 13)",
            ),
            ("SELECT quantity FROM lots LIMIT 5 OFFSET 2", "OFFSET is not supported (line 1, column 42)"),
            ("SELECT nope FROM lots", "no column nope (line 1, column 8)"),
            ("SELECT side FROM nowhere", "no table nowhere"),
            (
                "SELECT position_key FROM lots JOIN positions ON lots.position_key = positions.position_key",
                "column position_key is ambiguous",
            ),
            (
                "SELECT side, quantity FROM lots GROUP BY side",
                "column quantity must appear in GROUP BY or inside an aggregate (line 1, column 14)",
            ),
            ("SELECT side FROM lots ORDER BY price", "ORDER BY price: order by a column of the select list"),
            ("SELECT upper(side) FROM lots", "the function upper (supported: SUM, COUNT, MIN, MAX, AVG, ABS) is not supported (line 1, column 8)"),
            ("SELECT side FROM lots WHERE side LIKE 'L%'", "the expression `side LIKE 'L%'` is not supported (line 1, column 29)"),
            ("SELECT a.side FROM lots, positions", "a comma join (write JOIN ... ON) is not supported"),
            ("SELECT * FROM lots JOIN positions ON lots.quantity > positions.quantity", "JOIN ... ON needs an equality"),
            ("SELECT SUM(SUM(quantity)) FROM lots", "aggregate inside SUM"),
            ("DELETE FROM lots", "a statement other than SELECT is not supported"),
            ("SELEC side FROM lots", "SQL syntax error"),
        ];
        for (sql, expected) in cases {
            let message = error(sql);
            assert!(message.contains(expected), "{sql}: {message}");
        }
    }

    #[test]
    fn names_resolve_to_combined_row_columns() {
        let plan = Plan::compile(
            "SELECT p.position_key, SUM(l.quantity * l.price) AS cost FROM lots l \
             JOIN positions p ON l.position_key = p.position_key WHERE l.side = 'LONG' \
             GROUP BY p.position_key HAVING COUNT(*) > 1 ORDER BY cost DESC LIMIT 3",
        )
        .expect("compiles");
        assert_eq!(plan.sources.len(), 2);
        assert_eq!(plan.sources[1].offset, 6);
        // lots.position_key (0) = positions.position_key (6, its own column 0).
        assert_eq!(plan.joins[0].left_key, vec![Expr::Column(0)]);
        assert_eq!(plan.joins[0].right_key, vec![Expr::Column(0)]);
        let grouping = plan.grouping.as_ref().expect("grouped");
        assert_eq!(grouping.keys, vec![Expr::Column(6)]);
        assert_eq!(grouping.aggregates.len(), 2, "SUM and COUNT(*)");
        assert_eq!(plan.columns, vec!["position_key", "cost"]);
        assert_eq!(plan.select, vec![Expr::Column(0), Expr::Column(1)]);
        assert_eq!(
            plan.order,
            vec![OrderItem {
                column: 1,
                descending: true,
                nulls_first: true
            }]
        );
        assert_eq!(plan.limit, Some(3));
    }
}
