//! A sink that records what it is told: for tests, and for consumers not wired yet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use super::{Sink, SinkError};

/// What a [`RecordingSink`] holds: the state it was driven to and every call.
#[derive(Debug)]
pub struct Recorded<K, V> {
    pub state: BTreeMap<K, V>,
    pub upserts: u64,
    pub removes: u64,
    /// Keys the sink refuses (to test retries).
    pub refuse: BTreeSet<K>,
}

/// Records into shared state; clones share it.
#[derive(Debug)]
pub struct RecordingSink<K, V>(pub Arc<Mutex<Recorded<K, V>>>);

impl<K, V> Clone for RecordingSink<K, V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K: Ord, V> Default for RecordingSink<K, V> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Recorded {
            state: BTreeMap::new(),
            upserts: 0,
            removes: 0,
            refuse: BTreeSet::new(),
        })))
    }
}

impl<K: Ord + Clone, V: Clone> RecordingSink<K, V> {
    pub fn state(&self) -> BTreeMap<K, V> {
        self.0.lock().expect("sink lock").state.clone()
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Recorded<K, V>) -> T) -> T {
        f(&mut self.0.lock().expect("sink lock"))
    }
}

impl<K: Ord + Clone + Debug + Send, V: Clone + Send> Sink<K, V> for RecordingSink<K, V> {
    fn upsert(&mut self, key: &K, value: &V) -> Result<(), SinkError> {
        let mut g = self.0.lock().expect("sink lock");
        if g.refuse.contains(key) {
            return Err(SinkError(format!("refused {key:?}")));
        }
        g.upserts += 1;
        g.state.insert(key.clone(), value.clone());
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<(), SinkError> {
        let mut g = self.0.lock().expect("sink lock");
        if g.refuse.contains(key) {
            return Err(SinkError(format!("refused {key:?}")));
        }
        g.removes += 1;
        g.state.remove(key);
        Ok(())
    }
}
