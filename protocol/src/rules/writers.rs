//! One writer per console: the write lock's table.

use std::collections::HashMap;
use std::hash::Hash;

/// Who holds each console's write lock. The holder is a description for the refusal
/// another client gets (who holds it).
#[derive(Debug)]
pub struct WriteLocks<K> {
    holders: HashMap<K, String>,
}

impl<K> Default for WriteLocks<K> {
    fn default() -> Self {
        WriteLocks {
            holders: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> WriteLocks<K> {
    /// Takes the lock of `key` for `holder`, or returns who holds it.
    pub fn acquire(&mut self, key: K, holder: impl Into<String>) -> Result<(), &str> {
        use std::collections::hash_map::Entry;
        match self.holders.entry(key) {
            Entry::Occupied(e) => Err(e.into_mut().as_str()),
            Entry::Vacant(e) => {
                e.insert(holder.into());
                Ok(())
            }
        }
    }

    /// Releases the lock of `key` (the writer's attachment ended).
    pub fn release(&mut self, key: &K) {
        self.holders.remove(key);
    }

    /// The holder of `key`'s lock.
    pub fn holder(&self, key: &K) -> Option<&str> {
        self.holders.get(key).map(String::as_str)
    }
}
