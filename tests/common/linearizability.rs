//! A linearizability checker for one register (one key), in the manner of Wing and Gong's
//! search with Lowe's memoisation: it looks for an order of the operations that respects real
//! time (an operation that returned before another was invoked comes first) and that a single
//! register would produce. Keys are independent registers, and linearizability is local, so a
//! history of many keys is checked one key at a time.
//!
//! A write whose outcome is unknown (an error, a timeout, a node killed under it) may have
//! taken effect at any moment after its invocation, or never: it is given no response time, so
//! the search may place it anywhere after its invocation, and need not place it at all. A read
//! that failed tells nothing and is left out.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What a client asked, and what it was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A put of a value unique in the history.
    Write(String),
    /// A read that returned this value (`None`: the key was absent).
    Read(Option<String>),
}

/// One operation of a history, with times measured from a common origin.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub kind: Kind,
    pub invoke: Duration,
    /// `None`: the outcome is unknown (for a read, the operation is then ignored).
    pub response: Option<Duration>,
}

/// Why a history is not linearizable: how far the deepest search got, and what it could not
/// place next.
#[derive(Debug)]
pub struct Violation {
    pub ops: usize,
    pub deepest: Vec<Op>,
    pub stuck_on: Vec<Op>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "not linearizable: of {} operations, at most {} could be ordered",
            self.ops,
            self.deepest.len()
        )?;
        writeln!(f, "the longest legal order found ends with:")?;
        for op in self.deepest.iter().rev().take(8).rev() {
            writeln!(f, "  {op:?}")?;
        }
        writeln!(f, "after which none of these could come next:")?;
        for op in &self.stuck_on {
            writeln!(f, "  {op:?}")?;
        }
        Ok(())
    }
}

struct Search<'a> {
    ops: Vec<&'a Op>,
    invoke: Vec<u128>,
    response: Vec<u128>,
    /// Each op's value as an index (0: absent); for a write, what it stores.
    value: Vec<u32>,
    done: Vec<bool>,
    /// `done` as a bit set: with the state, the memo's key.
    bits: Vec<u64>,
    /// Ops with a known response not yet ordered; the search succeeds when it reaches 0.
    open: usize,
    seen: HashSet<(Vec<u64>, u32)>,
    order: Vec<usize>,
    deepest: Vec<usize>,
}

impl Search<'_> {
    fn mark(&mut self, i: usize, done: bool) {
        self.done[i] = done;
        self.bits[i / 64] ^= 1 << (i % 64);
    }

    /// Ops that may come next: invoked before every other pending op returned.
    fn candidates(&self) -> Vec<usize> {
        let horizon = (0..self.ops.len())
            .filter(|i| !self.done[*i])
            .map(|i| self.response[i])
            .min()
            .unwrap_or(u128::MAX);
        (0..self.ops.len())
            .filter(|i| !self.done[*i] && self.invoke[*i] <= horizon)
            .collect()
    }

    fn run(&mut self, state: u32) -> bool {
        if self.open == 0 {
            return true;
        }
        let mut candidates = self.candidates();
        // A read that may come next and returns the current value can be ordered now without
        // loss: nothing pending must precede it, and it leaves the state as it is. So it is
        // placed at once, with no branching. Writes branch, those that returned first.
        if let Some(read) = candidates
            .iter()
            .find(|i| matches!(self.ops[**i].kind, Kind::Read(_)) && self.value[**i] == state)
        {
            candidates = vec![*read];
        } else {
            candidates.sort_by_key(|i| self.response[*i]);
        }
        for i in candidates {
            let next = match self.ops[i].kind {
                Kind::Write(_) => self.value[i],
                Kind::Read(_) if self.value[i] == state => state,
                Kind::Read(_) => continue,
            };
            self.mark(i, true);
            let known = self.response[i] != u128::MAX;
            if known {
                self.open -= 1;
            }
            self.order.push(i);
            if self.order.len() > self.deepest.len() {
                self.deepest = self.order.clone();
            }
            let fresh = self.seen.insert((self.bits.clone(), next));
            if fresh && self.run(next) {
                return true;
            }
            self.order.pop();
            if known {
                self.open += 1;
            }
            self.mark(i, false);
        }
        false
    }
}

/// Checks one register's history, starting from an absent key.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    // A write of unknown outcome whose value no read returned changes nothing if it is left
    // out (or, what is the same, ordered last), so it is left out: it would only multiply the
    // orders to try.
    let observed: HashSet<&str> = history
        .iter()
        .filter(|o| o.response.is_some())
        .filter_map(|o| match &o.kind {
            Kind::Read(Some(v)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let ops: Vec<&Op> = history
        .iter()
        .filter(|o| match &o.kind {
            Kind::Read(_) => o.response.is_some(),
            Kind::Write(v) => o.response.is_some() || observed.contains(v.as_str()),
        })
        .collect();
    let mut names: HashMap<&str, u32> = HashMap::new();
    let value: Vec<u32> = ops
        .iter()
        .map(|o| match &o.kind {
            Kind::Write(v) | Kind::Read(Some(v)) => {
                let next = names.len() as u32 + 1;
                *names.entry(v.as_str()).or_insert(next)
            }
            Kind::Read(None) => 0,
        })
        .collect();
    let mut search = Search {
        invoke: ops.iter().map(|o| o.invoke.as_nanos()).collect(),
        response: ops
            .iter()
            .map(|o| o.response.map_or(u128::MAX, |r| r.as_nanos()))
            .collect(),
        value,
        done: vec![false; ops.len()],
        bits: vec![0; ops.len().div_ceil(64)],
        open: ops.iter().filter(|o| o.response.is_some()).count(),
        seen: HashSet::new(),
        order: Vec::new(),
        deepest: Vec::new(),
        ops,
    };
    if search.run(0) {
        return Ok(());
    }
    // Replay the deepest order to report what could not follow it.
    for i in 0..search.done.len() {
        search.done[i] = search.deepest.contains(&i);
    }
    let stuck_on = search
        .candidates()
        .into_iter()
        .map(|i| search.ops[i].clone())
        .collect();
    Err(Violation {
        ops: search.ops.len(),
        deepest: search
            .deepest
            .iter()
            .map(|i| search.ops[*i].clone())
            .collect(),
        stuck_on,
    })
}
