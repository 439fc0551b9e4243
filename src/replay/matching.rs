//! NCCL collectives matched across the ranks of a multi-rank trace.
//!
//! A collective is one operation over its process group: no rank leaves it
//! before the last member has entered. In each rank's trace, the n-th NCCL
//! collective kernel of a process group (`Process Group Name`, else the
//! default group; in order of their start) is matched with the n-th of the
//! same group on every other rank: one [`Instance`]. The replay then starts
//! each member's transfer only when every member has arrived, and gives it
//! the *transfer* time: the shortest member's measured (re-costed) time,
//! since the last rank to arrive waits for nobody. A rank's measured time
//! beyond that was waiting for its peers, which the replay now derives from
//! when the peers arrive instead of copying it.
//!
//! Point-to-point send/recv kernels are not matched (their peer is not
//! recorded); a group whose kernels differ across ranks at some position
//! (another collective name) is matched up to there, and the rest stays
//! per rank, said in a note.

use std::collections::BTreeMap;

use super::classify::KernelClass;
use super::graph::RankGraph;

/// One collective across ranks: `(rank index, op index)` of each member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub group: String,
    pub seq: usize,
    pub members: Vec<(usize, u32)>,
}

/// What matching found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matching {
    pub instances: Vec<Instance>,
    /// Groups whose kernels disagree across ranks: `(group, position)`.
    pub mismatched: Vec<(String, usize)>,
}

impl Matching {
    /// Per rank, per op: the instance it belongs to.
    pub fn instance_of(&self, ranks: &[RankGraph]) -> Vec<Vec<Option<usize>>> {
        let mut out: Vec<Vec<Option<usize>>> = ranks.iter().map(|r| vec![None; r.ops.len()]).collect();
        for (i, inst) in self.instances.iter().enumerate() {
            for &(r, op) in &inst.members {
                out[r][op as usize] = Some(i);
            }
        }
        out
    }
}

/// Matches the collectives of `ranks` (nothing for a single rank).
pub fn match_collectives(ranks: &[RankGraph]) -> Matching {
    if ranks.len() < 2 {
        return Matching::default();
    }
    // Per group, per rank: its collectives in start order.
    let mut groups: BTreeMap<String, Vec<Vec<u32>>> = BTreeMap::new();
    for (ri, r) in ranks.iter().enumerate() {
        let mut ops: Vec<u32> =
            (0..r.ops.len() as u32).filter(|&i| r.ops[i as usize].class == KernelClass::NcclCollective).collect();
        ops.sort_by_key(|&i| (r.ops[i as usize].start_ns, i));
        for i in ops {
            let group = group_of(r, i);
            let per_rank = groups.entry(group).or_insert_with(|| vec![Vec::new(); ranks.len()]);
            per_rank[ri].push(i);
        }
    }
    let mut m = Matching::default();
    for (group, per_rank) in groups {
        let members: Vec<usize> = (0..ranks.len()).filter(|&r| !per_rank[r].is_empty()).collect();
        if members.len() < 2 {
            continue;
        }
        let depth = members.iter().map(|&r| per_rank[r].len()).max().unwrap_or(0);
        for seq in 0..depth {
            let ops: Vec<(usize, u32)> =
                members.iter().filter_map(|&r| per_rank[r].get(seq).map(|&op| (r, op))).collect();
            let names: Vec<Option<&str>> = ops
                .iter()
                .map(|&(r, op)| ranks[r].ops[op as usize].collective.as_ref().and_then(|c| c.name.as_deref()))
                .collect();
            let agree = names.windows(2).all(|w| w[0] == w[1]);
            if ops.len() < members.len() || !agree {
                m.mismatched.push((group.clone(), seq));
                break;
            }
            m.instances.push(Instance { group: group.clone(), seq, members: ops });
        }
    }
    m
}

fn group_of(r: &RankGraph, op: u32) -> String {
    r.ops[op as usize].collective.as_ref().and_then(|c| c.group.clone()).unwrap_or_else(|| "default".to_owned())
}

/// Gives each matched collective its transfer time on every member: the
/// shortest member's duration (ns).
pub fn transfer_durations(m: &Matching, durations: &mut [Vec<i64>]) {
    for inst in &m.instances {
        let shortest = inst.members.iter().map(|&(r, op)| durations[r][op as usize]).min().unwrap_or(0);
        for &(r, op) in &inst.members {
            durations[r][op as usize] = shortest;
        }
    }
}
