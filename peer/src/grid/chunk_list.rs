//! A job's chunks, in output order, with each one's cost (in the calibration's work
//! units) and what the progress bar counts of it: either listed (a kernel's plan of
//! bands, segments or files) or made from its index when asked for (a sweep of a
//! million parameters holds no list of a million specs). Cloning shares the list.

use std::sync::Arc;

use idlegrid_protocol::TaskSpec;

/// Makes chunk `i`'s spec.
type MakeSpec = dyn Fn(usize) -> TaskSpec + Send + Sync;
/// What the progress bar counts of made chunk `i`.
type UnitsOf = dyn Fn(usize) -> u64 + Send + Sync;

#[derive(Clone)]
pub struct ChunkList {
    inner: Arc<Inner>,
}

enum Inner {
    Listed {
        specs: Vec<TaskSpec>,
        costs: Vec<u64>,
        units: Vec<u64>,
    },
    Made {
        len: usize,
        cost: u64,
        units: Box<UnitsOf>,
        /// The sum of every chunk's units, counted once: the progress display and the
        /// web page ask for it at every update.
        total_units: u64,
        make: Box<MakeSpec>,
    },
}

impl ChunkList {
    /// Listed chunks, `costs[i]` and `units[i]` being chunk `i`'s (a missing cost
    /// counts as 1, missing units as 0).
    pub fn listed(specs: Vec<TaskSpec>, costs: Vec<u64>, units: Vec<u64>) -> ChunkList {
        ChunkList {
            inner: Arc::new(Inner::Listed {
                specs,
                costs,
                units,
            }),
        }
    }

    /// `len` chunks of the same cost and units, chunk `i`'s spec made by `make(i)`
    /// whenever it is needed: the same spec every time (its id is the chunk's id).
    pub fn made(
        len: usize,
        cost: u64,
        units: u64,
        make: impl Fn(usize) -> TaskSpec + Send + Sync + 'static,
    ) -> ChunkList {
        ChunkList::made_with_units(len, cost, move |_| units, make)
    }

    /// [`ChunkList::made`], chunk `i` counting `units_of(i)` on the progress bar: a
    /// job cut into chunks of a batch of items has a last chunk of fewer items.
    pub fn made_with_units(
        len: usize,
        cost: u64,
        units_of: impl Fn(usize) -> u64 + Send + Sync + 'static,
        make: impl Fn(usize) -> TaskSpec + Send + Sync + 'static,
    ) -> ChunkList {
        ChunkList {
            inner: Arc::new(Inner::Made {
                len,
                cost,
                total_units: (0..len).map(&units_of).sum(),
                units: Box::new(units_of),
                make: Box::new(make),
            }),
        }
    }

    pub fn len(&self) -> usize {
        match &*self.inner {
            Inner::Listed { specs, .. } => specs.len(),
            Inner::Made { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Chunk `i`'s spec.
    pub fn spec(&self, i: usize) -> Option<TaskSpec> {
        match &*self.inner {
            Inner::Listed { specs, .. } => specs.get(i).cloned(),
            Inner::Made { len, make, .. } => (i < *len).then(|| make(i)),
        }
    }

    /// Every chunk's spec, in order.
    pub fn specs(&self) -> impl Iterator<Item = TaskSpec> + '_ {
        (0..self.len()).filter_map(|i| self.spec(i))
    }

    /// Chunk `i`'s cost in work units.
    pub fn cost(&self, i: usize) -> u64 {
        match &*self.inner {
            Inner::Listed { costs, .. } => costs.get(i).copied().unwrap_or(1),
            Inner::Made { cost, .. } => *cost,
        }
    }

    /// The one cost every chunk has, if they are made alike.
    pub fn same_cost(&self) -> Option<u64> {
        match &*self.inner {
            Inner::Listed { .. } => None,
            Inner::Made { cost, .. } => Some(*cost),
        }
    }

    /// What the progress bar counts of chunk `i`.
    pub fn units(&self, i: usize) -> u64 {
        match &*self.inner {
            Inner::Listed { units, .. } => units.get(i).copied().unwrap_or(0),
            Inner::Made { len, units, .. } => {
                if i < *len {
                    units(i)
                } else {
                    0
                }
            }
        }
    }

    /// What the progress bar counts of the whole job.
    pub fn total_units(&self) -> u64 {
        match &*self.inner {
            Inner::Listed { units, .. } => units.iter().take(self.len()).sum(),
            Inner::Made { total_units, .. } => *total_units,
        }
    }
}

impl From<Vec<TaskSpec>> for ChunkList {
    /// Listed chunks of cost 1 and one unit each.
    fn from(specs: Vec<TaskSpec>) -> ChunkList {
        let n = specs.len();
        ChunkList::listed(specs, vec![1; n], vec![1; n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(i: usize) -> TaskSpec {
        TaskSpec {
            kernel: "noop".into(),
            kernel_version: 1,
            params: i.to_le_bytes().to_vec(),
            inputs: Vec::new(),
        }
    }

    #[test]
    fn made_chunks_read_like_the_same_list() {
        let listed = ChunkList::listed((0..5).map(spec).collect(), vec![3; 5], vec![2; 5]);
        let made = ChunkList::made(5, 3, 2, spec);
        for list in [&listed, &made] {
            assert_eq!(list.len(), 5);
            assert_eq!(list.spec(4), Some(spec(4)));
            assert_eq!(list.spec(5), None, "past the end");
            assert_eq!(list.specs().count(), 5);
            assert_eq!((list.cost(2), list.units(2)), (3, 2));
            assert_eq!(list.total_units(), 10);
        }
        assert_eq!(made.same_cost(), Some(3));
        assert_eq!(listed.same_cost(), None);
    }

    #[test]
    fn made_chunks_may_count_their_own_units() {
        // 10 items in chunks of 4: the last chunk holds 2.
        let made = ChunkList::made_with_units(3, 4, |i| if i == 2 { 2 } else { 4 }, spec);
        assert_eq!((made.units(0), made.units(2), made.units(3)), (4, 2, 0));
        assert_eq!(made.total_units(), 10);
        assert_eq!(made.same_cost(), Some(4));
    }
}
