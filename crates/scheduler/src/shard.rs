//! Sharding: which of N replicas runs an entry (or, for a `type: registry` entry, each of
//! its repositories). Rendezvous hashing on names, so every key has exactly one owner and a
//! change of N moves only the keys of the replicas that came or went.
use regferry_registry::hash::fnv1a;

/// Whether this replica owns `key` among `count` replicas: rendezvous (highest random
/// weight) hashing, so each key has exactly one owner and a change of `count` moves only
/// the keys of the replicas that came or went.
pub fn owns(key: &str, index: u32, count: u32) -> bool {
    if count <= 1 {
        return true;
    }
    let weight = |replica: u32| {
        let h = fnv1a(format!("{replica}\0{key}").as_bytes());
        // splitmix64's finaliser: FNV alone mixes poorly for keys that differ in one byte.
        let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    };
    let best = (0..count)
        .max_by_key(|r| (weight(*r), std::cmp::Reverse(*r)))
        .unwrap_or(0);
    best == index
}

/// The replica, of `count`, that owns `key` (see [`owns`]).
pub fn owner(key: &str, count: u32) -> u32 {
    (0..count).find(|i| owns(key, *i, count)).unwrap_or(0)
}

/// The key a `type: registry` entry's repository is owned by.
pub fn repository_key(entry: &str, repository: &str) -> String {
    format!("{entry}\0{repository}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_keys_exactly_once_and_move_little() {
        let keys: Vec<String> = (0..1000).map(|i| format!("entry-{i}")).collect();
        for n in 1..=5u32 {
            for k in &keys {
                let owners = (0..n).filter(|i| owns(k, *i, n)).count();
                assert_eq!(owners, 1, "{k} with {n} replicas");
            }
        }
        let owner = |k: &str, n: u32| (0..n).find(|i| owns(k, *i, n)).unwrap();
        let moved = keys.iter().filter(|k| owner(k, 4) != owner(k, 5)).count();
        assert!(
            moved < 300,
            "going from 4 to 5 replicas moves about a fifth of the keys, moved {moved}"
        );
    }
}
