//! Compiled scalar expressions and aggregates, evaluated on one row.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::value::{EvalError, Number, Value};

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (to [`super::value::DIVISION_SCALE`] places, half to even)
    Div,
    /// `=`
    Eq,
    /// `<>` / `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `AND` (three-valued)
    And,
    /// `OR` (three-valued)
    Or,
}

/// A scalar expression over a row's columns (by index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expr {
    /// The value of column `i`.
    Column(usize),
    /// A constant.
    Literal(Value),
    /// `left op right`.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `-e`
    Neg(Box<Expr>),
    /// `NOT e`
    Not(Box<Expr>),
    /// `e IS NULL` (or `IS NOT NULL` when the flag is set).
    IsNull(Box<Expr>, bool),
    /// `ABS(e)`
    Abs(Box<Expr>),
}

fn number(value: &Value, op: &str) -> Result<Option<Number>, EvalError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(Some(*n)),
        other => Err(EvalError(format!(
            "{op} needs numbers, got {}",
            other.type_name()
        ))),
    }
}

fn boolean(value: &Value, op: &str) -> Result<Option<bool>, EvalError> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        other => Err(EvalError(format!(
            "{op} needs booleans, got {}",
            other.type_name()
        ))),
    }
}

fn from_bool(b: Option<bool>) -> Value {
    b.map_or(Value::Null, Value::Bool)
}

impl Expr {
    /// Evaluates on `row`; NULL propagates as in SQL.
    pub fn eval(&self, row: &[Value]) -> Result<Value, EvalError> {
        self.eval_ref(row).map(Cow::into_owned)
    }

    /// [`Expr::eval`], borrowing a column's or a constant's value instead
    /// of copying it (most expressions are a column, or an operator over
    /// columns).
    pub fn eval_ref<'r>(&'r self, row: &'r [Value]) -> Result<Cow<'r, Value>, EvalError> {
        Ok(match self {
            Expr::Column(i) => Cow::Borrowed(
                row.get(*i)
                    .ok_or_else(|| EvalError(format!("internal: no column {i}")))?,
            ),
            Expr::Literal(v) => Cow::Borrowed(v),
            Expr::Neg(e) => Cow::Owned(
                number(&*e.eval_ref(row)?, "-")?
                    .map_or(Value::Null, |n| Value::Number(n.negated())),
            ),
            Expr::Abs(e) => Cow::Owned(
                number(&*e.eval_ref(row)?, "ABS")?.map_or(Value::Null, |n| Value::Number(n.abs())),
            ),
            Expr::Not(e) => Cow::Owned(from_bool(boolean(&*e.eval_ref(row)?, "NOT")?.map(|b| !b))),
            Expr::IsNull(e, negated) => {
                let null = *e.eval_ref(row)? == Value::Null;
                Cow::Owned(Value::Bool(null != *negated))
            }
            Expr::Binary(op, left, right) => {
                let (l, r) = (left.eval_ref(row)?, right.eval_ref(row)?);
                Cow::Owned(binary(*op, &l, &r)?)
            }
        })
    }

    /// True when the expression reads only columns in `range`.
    pub fn reads_only(&self, range: &std::ops::Range<usize>) -> bool {
        let mut ok = true;
        self.visit_columns(&mut |i| ok &= range.contains(&i));
        ok
    }

    /// The expression with every column index moved down by `offset`
    /// (for evaluating on one side of a join).
    pub fn shifted_down(&self, offset: usize) -> Expr {
        let mut e = self.clone();
        e.map_columns(&mut |i| i - offset);
        e
    }

    /// Calls `f` with the index of every column the expression reads.
    pub fn visit_columns(&self, f: &mut impl FnMut(usize)) {
        match self {
            Expr::Column(i) => f(*i),
            Expr::Literal(_) => {}
            Expr::Neg(e) | Expr::Not(e) | Expr::Abs(e) | Expr::IsNull(e, _) => e.visit_columns(f),
            Expr::Binary(_, l, r) => {
                l.visit_columns(f);
                r.visit_columns(f);
            }
        }
    }

    fn map_columns(&mut self, f: &mut impl FnMut(usize) -> usize) {
        match self {
            Expr::Column(i) => *i = f(*i),
            Expr::Literal(_) => {}
            Expr::Neg(e) | Expr::Not(e) | Expr::Abs(e) | Expr::IsNull(e, _) => e.map_columns(f),
            Expr::Binary(_, l, r) => {
                l.map_columns(f);
                r.map_columns(f);
            }
        }
    }
}

fn binary(op: BinOp, l: &Value, r: &Value) -> Result<Value, EvalError> {
    let arith = |f: fn(Number, Number) -> Result<Number, EvalError>, name: &str| match (
        number(l, name)?,
        number(r, name)?,
    ) {
        (Some(a), Some(b)) => f(a, b).map(Value::Number),
        _ => Ok(Value::Null),
    };
    let compare = |pick: fn(Ordering) -> bool| -> Result<Value, EvalError> {
        Ok(from_bool(l.compare(r)?.map(pick)))
    };
    match op {
        BinOp::Add => arith(Number::checked_add, "+"),
        BinOp::Sub => arith(Number::checked_sub, "-"),
        BinOp::Mul => arith(Number::checked_mul, "*"),
        BinOp::Div => arith(Number::checked_div, "/"),
        BinOp::Eq => compare(|o| o == Ordering::Equal),
        BinOp::NotEq => compare(|o| o != Ordering::Equal),
        BinOp::Lt => compare(|o| o == Ordering::Less),
        BinOp::LtEq => compare(|o| o != Ordering::Greater),
        BinOp::Gt => compare(|o| o == Ordering::Greater),
        BinOp::GtEq => compare(|o| o != Ordering::Less),
        BinOp::And => {
            let (a, b) = (boolean(l, "AND")?, boolean(r, "AND")?);
            Ok(from_bool(match (a, b) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            }))
        }
        BinOp::Or => {
            let (a, b) = (boolean(l, "OR")?, boolean(r, "OR")?);
            Ok(from_bool(match (a, b) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            }))
        }
    }
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggFunc {
    /// Sum of non-NULL values (NULL when there are none).
    Sum,
    /// Rows (`COUNT(*)`) or non-NULL values.
    Count,
    /// Least non-NULL value.
    Min,
    /// Greatest non-NULL value.
    Max,
    /// Sum / count of non-NULL values, to the division scale.
    Avg,
}

/// One aggregate of a grouped query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The function.
    pub func: AggFunc,
    /// Its argument over the input row; `None` is `COUNT(*)`.
    pub arg: Option<Expr>,
}

/// The running state of one aggregate over a group.
#[derive(Clone, Debug)]
pub struct Accumulator {
    func: AggFunc,
    count: i128,
    sum: Option<Number>,
    best: Option<Value>,
}

impl Accumulator {
    /// An empty accumulator for `func`.
    pub fn new(func: AggFunc) -> Accumulator {
        Accumulator {
            func,
            count: 0,
            sum: None,
            best: None,
        }
    }

    /// Adds `value` (the argument's value; `Value::Bool(true)` for `COUNT(*)`)
    /// `times` times.
    pub fn add(&mut self, value: &Value, times: i128) -> Result<(), EvalError> {
        if *value == Value::Null {
            return Ok(());
        }
        self.count += times;
        match self.func {
            AggFunc::Count => {}
            AggFunc::Sum | AggFunc::Avg => {
                let Value::Number(n) = value else {
                    return Err(EvalError(format!(
                        "SUM/AVG need numbers, got {}",
                        value.type_name()
                    )));
                };
                let added = n.checked_mul(Number::from_i128(times))?;
                self.sum = Some(match self.sum {
                    Some(s) => s.checked_add(added)?,
                    None => added,
                });
            }
            AggFunc::Min | AggFunc::Max => {
                let replace = match &self.best {
                    None => true,
                    Some(best) => {
                        let order = value.compare(best)?.unwrap_or(Ordering::Equal);
                        (self.func == AggFunc::Min && order == Ordering::Less)
                            || (self.func == AggFunc::Max && order == Ordering::Greater)
                    }
                };
                if replace {
                    self.best = Some(value.clone());
                }
            }
        }
        Ok(())
    }

    /// The aggregate's value.
    pub fn finish(&self) -> Result<Value, EvalError> {
        Ok(match self.func {
            AggFunc::Count => Value::Number(Number::from_i128(self.count)),
            AggFunc::Sum => self.sum.map_or(Value::Null, Value::Number),
            AggFunc::Avg => match self.sum {
                Some(sum) if self.count > 0 => {
                    Value::Number(sum.checked_div(Number::from_i128(self.count))?)
                }
                _ => Value::Null,
            },
            AggFunc::Min | AggFunc::Max => self.best.clone().unwrap_or(Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(i: i128) -> Value {
        Value::Number(Number::from_i128(i))
    }

    #[test]
    fn three_valued_logic_and_null_arithmetic() {
        let row = vec![Value::Null, num(2), Value::Bool(false)];
        let null_plus = Expr::Binary(
            BinOp::Add,
            Box::new(Expr::Column(0)),
            Box::new(Expr::Column(1)),
        );
        assert_eq!(null_plus.eval(&row), Ok(Value::Null));
        let null_and_false = Expr::Binary(
            BinOp::And,
            Box::new(Expr::Binary(
                BinOp::Eq,
                Box::new(Expr::Column(0)),
                Box::new(Expr::Column(1)),
            )),
            Box::new(Expr::Column(2)),
        );
        assert_eq!(null_and_false.eval(&row), Ok(Value::Bool(false)));
        let is_null = Expr::IsNull(Box::new(Expr::Column(0)), false);
        assert_eq!(is_null.eval(&row), Ok(Value::Bool(true)));
        let text_plus = Expr::Binary(
            BinOp::Add,
            Box::new(Expr::Literal(Value::Text("a".into()))),
            Box::new(Expr::Column(1)),
        );
        assert!(text_plus.eval(&row).is_err());
    }

    #[test]
    fn aggregates_weigh_multiplicities_and_skip_nulls() {
        let mut sum = Accumulator::new(AggFunc::Sum);
        let mut avg = Accumulator::new(AggFunc::Avg);
        let mut count = Accumulator::new(AggFunc::Count);
        let mut min = Accumulator::new(AggFunc::Min);
        for (v, times) in [(num(3), 2), (Value::Null, 5), (num(-1), 1)] {
            for acc in [&mut sum, &mut avg, &mut count, &mut min] {
                assert_eq!(acc.add(&v, times), Ok(()));
            }
        }
        assert_eq!(sum.finish(), Ok(num(5)));
        assert_eq!(count.finish(), Ok(num(3)));
        assert_eq!(min.finish(), Ok(num(-1)));
        let Ok(Value::Number(mean)) = avg.finish() else {
            panic!("avg is a number");
        };
        assert_eq!(mean.to_string(), format!("1.{}7", "6".repeat(31)));
        assert_eq!(Accumulator::new(AggFunc::Sum).finish(), Ok(Value::Null));
    }
}
