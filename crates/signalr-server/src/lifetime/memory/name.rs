//! A group's name as the in-memory manager keeps it: its bytes beside the table entry when
//! short, so that finding a group does not load them from another cache line.
//!
//! Under a flood that goes round 1 k groups of 10, every send looks its group up, and the
//! lookup compares the name it asked for with the name in the table. Kept in a `String`, those
//! bytes live in an allocation of their own, rarely in cache by the time the group comes round
//! again: the comparison's load of them was 3 % of the server's core, and the same again for
//! the name a staged run copied into an allocation of its own (BENCHMARKS.md, W5).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Names up to this many bytes are kept inline (the size of a `String`, less the length).
const INLINE: usize = 22;

/// An owned group name: hashes, compares and borrows as the `str` it holds.
#[derive(Clone)]
pub(super) struct GroupName(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl GroupName {
    pub(super) fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                // Only ever filled from a whole `str` (`From<&str>`), so always UTF-8.
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(name) => name,
        }
    }
}

impl From<&str> for GroupName {
    fn from(name: &str) -> Self {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                GroupName(Repr::Inline { len, bytes })
            }
            _ => GroupName(Repr::Heap(name.into())),
        }
    }
}

impl Deref for GroupName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for GroupName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

// Hash and equality are the `str`'s, as `Borrow` requires: a table keyed by `GroupName` is
// searched with a `&str`.
impl Hash for GroupName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for GroupName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for GroupName {}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn names_of_every_length_are_found_by_their_str() {
        let names: Vec<String> = (0..40)
            .map(|len| "é".repeat(len / 2) + &"x".repeat(len % 2))
            .chain(["".to_owned(), "a".repeat(INLINE), "a".repeat(INLINE + 1)])
            .collect();
        let mut table = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let key = GroupName::from(name.as_str());
            assert_eq!(key.as_str(), name);
            assert_eq!(&*key.clone(), name.as_str());
            table.insert(key, i);
        }
        for (i, name) in names.iter().enumerate() {
            // Duplicates ("" twice) keep the last index.
            let last = names.iter().rposition(|n| n == name).unwrap();
            assert_eq!(table.get(name.as_str()), Some(&last), "{name:?} (#{i})");
        }
        assert_eq!(table.get("not a group"), None);
        assert!(matches!(
            GroupName::from("a".repeat(INLINE).as_str()).0,
            Repr::Inline { .. }
        ));
        assert!(matches!(
            GroupName::from("a".repeat(INLINE + 1).as_str()).0,
            Repr::Heap(_)
        ));
    }

    #[test]
    fn a_name_is_no_larger_than_a_string() {
        assert!(std::mem::size_of::<GroupName>() <= std::mem::size_of::<String>());
    }
}
