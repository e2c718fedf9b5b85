//! The server-side assignors of KIP-848 consumer groups: `uniform` (the default) and
//! `range`, selected by the members' `server_assignor`.
//!
//! Both are pure: given the members (each with the topics it subscribes to and its current
//! target) and the partition count of every subscribed topic, they return each member's new
//! target. `uniform` balances the partitions of all topics over the members that subscribe to
//! them (counts differ by at most one where the subscriptions allow it) and keeps as much of
//! each member's previous target as that balance allows (sticky). `range` gives each topic's
//! partitions in contiguous ranges to its subscribers sorted by member id, the first
//! `partitions % members` getting one more (as the classic RangeAssignor does).

use std::collections::{BTreeMap, BTreeSet};

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The assignors served, the default first (`group.consumer.assignors`).
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// One member as an assignor sees it.
#[derive(Clone, Debug)]
pub struct AssignorMember<'a> {
    /// Member id.
    pub id: &'a str,
    /// The topics it subscribes to that exist (names and matches of its regex).
    pub topics: &'a BTreeSet<String>,
    /// Its current target (for stickiness).
    pub current: &'a Assignment,
}

/// Runs the assignor `name` (`uniform` when unknown).
pub fn assign(
    name: &str,
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    match name {
        "range" => range(members, partitions),
        _ => uniform(members, partitions),
    }
}

fn count(a: &Assignment) -> usize {
    a.values().map(|p| p.len()).sum()
}

/// Sticky, balanced over each partition's eligible members.
pub fn uniform(
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.id.to_string(), Assignment::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    // Each member's fair share: the partitions of its topics split over their subscribers.
    let subscribers = |t: &str| members.iter().filter(|m| m.topics.contains(t)).count();
    let quota: BTreeMap<&str, usize> = members
        .iter()
        .map(|m| {
            let share: f64 = m
                .topics
                .iter()
                .filter_map(|t| partitions.get(t).map(|n| (t, *n)))
                .map(|(t, n)| n.max(0) as f64 / subscribers(t).max(1) as f64)
                .sum();
            (m.id, share.ceil() as usize)
        })
        .collect();
    let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
    // 1. Stickiness: keep what each member had, up to its share.
    for m in members {
        let mine = out.get_mut(m.id).expect("present");
        for (t, ps) in m.current {
            let Some(&n) = partitions.get(t) else {
                continue;
            };
            if !m.topics.contains(t) {
                continue;
            }
            for &p in ps {
                if p < n && count(mine) < quota[m.id] && taken.insert((t.clone(), p)) {
                    mine.entry(t.clone()).or_default().insert(p);
                }
            }
        }
    }
    // 2. The rest, each to its eligible member with the fewest partitions.
    for (t, &n) in partitions {
        for p in 0..n.max(0) {
            if taken.contains(&(t.clone(), p)) {
                continue;
            }
            let best = members
                .iter()
                .filter(|m| m.topics.contains(t))
                .min_by_key(|m| (count(&out[m.id]), m.id));
            if let Some(m) = best {
                out.get_mut(m.id)
                    .expect("present")
                    .entry(t.clone())
                    .or_default()
                    .insert(p);
                taken.insert((t.clone(), p));
            }
        }
    }
    // 3. Balance: move a partition from a member with two more than an eligible one.
    loop {
        let mut moved = false;
        for from in members {
            for to in members {
                if count(&out[from.id]) <= count(&out[to.id]) + 1 {
                    continue;
                }
                let candidate = out[from.id].iter().find_map(|(t, ps)| {
                    (to.topics.contains(t))
                        .then(|| ps.iter().next_back().map(|p| (t.clone(), *p)))
                        .flatten()
                });
                if let Some((t, p)) = candidate {
                    let f = out.get_mut(from.id).expect("present");
                    let ps = f.get_mut(&t).expect("present");
                    ps.remove(&p);
                    if ps.is_empty() {
                        f.remove(&t);
                    }
                    out.get_mut(to.id)
                        .expect("present")
                        .entry(t)
                        .or_default()
                        .insert(p);
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    out
}

/// Contiguous ranges per topic over its subscribers sorted by member id.
pub fn range(
    members: &[AssignorMember<'_>],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.id.to_string(), Assignment::new()))
        .collect();
    for (t, &n) in partitions {
        let mut subs: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(t))
            .map(|m| m.id)
            .collect();
        if subs.is_empty() {
            continue;
        }
        subs.sort();
        let n = n.max(0) as usize;
        let (each, extra) = (n / subs.len(), n % subs.len());
        let mut next = 0usize;
        for (i, id) in subs.iter().enumerate() {
            let len = each + usize::from(i < extra);
            if len > 0 {
                out.get_mut(*id)
                    .expect("present")
                    .entry(t.clone())
                    .or_default()
                    .extend((next..next + len).map(|p| p as i32));
            }
            next += len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn parts(spec: &[(&str, i32)]) -> BTreeMap<String, i32> {
        spec.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn all(out: &BTreeMap<String, Assignment>) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = out
            .values()
            .flat_map(|a| {
                a.iter()
                    .flat_map(|(t, ps)| ps.iter().map(|p| (t.clone(), *p)))
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn uniform_balances_and_assigns_each_partition_once() {
        let ts = topics(&["a", "b"]);
        let empty = Assignment::new();
        let members: Vec<AssignorMember> = ["m1", "m2", "m3"]
            .iter()
            .map(|id| AssignorMember {
                id,
                topics: &ts,
                current: &empty,
            })
            .collect();
        let p = parts(&[("a", 4), ("b", 3)]);
        let out = uniform(&members, &p);
        let counts: Vec<usize> = out.values().map(count).collect();
        assert_eq!(counts.iter().sum::<usize>(), 7);
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
        let every = all(&out);
        let mut dedup = every.clone();
        dedup.dedup();
        assert_eq!(every, dedup, "no partition twice");
        assert_eq!(every.len(), 7);
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins() {
        let ts = topics(&["a"]);
        let empty = Assignment::new();
        let p = parts(&[("a", 6)]);
        let first = uniform(
            &[
                AssignorMember {
                    id: "m1",
                    topics: &ts,
                    current: &empty,
                },
                AssignorMember {
                    id: "m2",
                    topics: &ts,
                    current: &empty,
                },
            ],
            &p,
        );
        let second = uniform(
            &[
                AssignorMember {
                    id: "m1",
                    topics: &ts,
                    current: &first["m1"],
                },
                AssignorMember {
                    id: "m2",
                    topics: &ts,
                    current: &first["m2"],
                },
                AssignorMember {
                    id: "m3",
                    topics: &ts,
                    current: &empty,
                },
            ],
            &p,
        );
        for m in ["m1", "m2"] {
            assert_eq!(count(&second[m]), 2);
            assert!(second[m]["a"].is_subset(&first[m]["a"]), "{m} kept its own");
        }
        assert_eq!(count(&second["m3"]), 2);
        assert_eq!(all(&second).len(), 6);
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let ta = topics(&["a"]);
        let tab = topics(&["a", "b"]);
        let empty = Assignment::new();
        let out = uniform(
            &[
                AssignorMember {
                    id: "m1",
                    topics: &ta,
                    current: &empty,
                },
                AssignorMember {
                    id: "m2",
                    topics: &tab,
                    current: &empty,
                },
            ],
            &parts(&[("a", 2), ("b", 2)]),
        );
        assert!(!out["m1"].contains_key("b"));
        assert_eq!(out["m2"]["b"].len(), 2);
        assert_eq!(all(&out).len(), 4);
    }

    #[test]
    fn range_gives_contiguous_ranges_by_member_id() {
        let ts = topics(&["a"]);
        let empty = Assignment::new();
        let out = range(
            &[
                AssignorMember {
                    id: "z",
                    topics: &ts,
                    current: &empty,
                },
                AssignorMember {
                    id: "b",
                    topics: &ts,
                    current: &empty,
                },
            ],
            &parts(&[("a", 5)]),
        );
        assert_eq!(out["b"]["a"], [0, 1, 2].into_iter().collect());
        assert_eq!(out["z"]["a"], [3, 4].into_iter().collect());
        assert!(assign("range", &[], &parts(&[("a", 1)])).is_empty());
    }
}
