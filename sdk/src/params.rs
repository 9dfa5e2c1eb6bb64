//! The operator's parameters for a policy, and typed access to them.

use std::cell::RefCell;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// Parameters from the config's `picker.params`, as text key/value pairs.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Wraps the pairs the host passed to `configure`.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Params { pairs }
    }

    /// The raw value of `key`, if given (the last one wins if given twice).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// All pairs in the order given.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// A reader that collects every problem (bad values, unknown keys) so that
    /// [`ParamReader::finish`] reports them all at once.
    pub fn reader(&self) -> ParamReader<'_> {
        ParamReader { params: self, known: RefCell::new(Vec::new()), problems: RefCell::new(Vec::new()) }
    }
}

/// Reads typed parameters with defaults, collecting problems instead of stopping
/// at the first.
///
/// ```
/// use veer_sdk::Params;
/// let params = Params::new(vec![("alpha".into(), "2".into()), ("colour".into(), "red".into())]);
/// let reader = params.reader();
/// let alpha = reader.number("alpha", 0.5, 0.0..=1.0);
/// let err = reader.finish().unwrap_err();
/// assert!(err.contains("alpha: must be between 0 and 1, got 2"));
/// assert!(err.contains("unknown parameter 'colour'"));
/// assert_eq!(alpha, 0.5, "a bad value falls back to the default");
/// ```
#[derive(Debug)]
pub struct ParamReader<'a> {
    params: &'a Params,
    known: RefCell<Vec<&'static str>>,
    problems: RefCell<Vec<String>>,
}

impl ParamReader<'_> {
    /// Reads `key` as a number in `range`, or `default` if absent. A bad value is
    /// recorded as a problem and `default` returned.
    pub fn number<T>(&self, key: &'static str, default: T, range: RangeInclusive<T>) -> T
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        self.known.borrow_mut().push(key);
        let Some(raw) = self.params.get(key) else { return default };
        match raw.trim().parse::<T>() {
            Ok(value) if range.contains(&value) => value,
            Ok(_) => {
                self.problem(format!("{key}: must be between {} and {}, got {raw}", range.start(), range.end()));
                default
            }
            Err(_) => {
                self.problem(format!("{key}: expected a number, got '{raw}'"));
                default
            }
        }
    }

    /// Reads `key` as `true`/`false`, or `default` if absent.
    pub fn flag(&self, key: &'static str, default: bool) -> bool {
        self.known.borrow_mut().push(key);
        match self.params.get(key).map(str::trim) {
            None => default,
            Some("true") => true,
            Some("false") => false,
            Some(raw) => {
                self.problem(format!("{key}: expected true or false, got '{raw}'"));
                default
            }
        }
    }

    /// Reads `key` as free text, or `default` if absent.
    pub fn text(&self, key: &'static str, default: &str) -> String {
        self.known.borrow_mut().push(key);
        self.params.get(key).unwrap_or(default).to_string()
    }

    /// Records a problem found by the policy's own checks (e.g. two parameters
    /// that contradict each other).
    pub fn problem(&self, message: String) {
        self.problems.borrow_mut().push(message);
    }

    /// `Ok` if every parameter was known and valid, else every problem, one per
    /// `; `-separated clause.
    pub fn finish(self) -> Result<(), String> {
        let known = self.known.into_inner();
        let mut problems = self.problems.into_inner();
        for (key, _) in self.params.pairs() {
            if !known.contains(&key.as_str()) {
                let expected = if known.is_empty() {
                    "this policy takes none".to_string()
                } else {
                    format!("known: {}", known.join(", "))
                };
                problems.push(format!("unknown parameter '{key}' ({expected})"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn absent_values_take_defaults() {
        let p = params(&[]);
        let r = p.reader();
        assert_eq!(r.number("n", 3u32, 1..=10), 3);
        assert!(r.flag("f", true));
        assert!(r.finish().is_ok());
    }

    #[test]
    fn every_problem_is_reported() {
        let p = params(&[("n", "x"), ("f", "maybe"), ("m", "11")]);
        let r = p.reader();
        r.number("n", 1u32, 1..=10);
        r.number("m", 1u32, 1..=10);
        r.flag("f", false);
        let err = r.finish().unwrap_err();
        assert!(err.contains("n: expected a number, got 'x'"), "{err}");
        assert!(err.contains("m: must be between 1 and 10, got 11"), "{err}");
        assert!(err.contains("f: expected true or false, got 'maybe'"), "{err}");
    }
}
