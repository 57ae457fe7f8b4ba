//! Where each server goes, for given settings: as few moves as possible off the
//! declared GPUs.

use super::{GpuSpec, ServerSpec};
use crate::estimate::VramEstimate;

/// Places every server if it can be done, moving as few servers off their
/// declared GPU as possible: an exhaustive search within a step budget (ample for
/// a host's handful of servers and GPUs), else largest first, each on its
/// declared GPU if it fits there, else on the GPU with the most room. `None` where
/// a server fits nowhere.
pub(super) fn pack(
    servers: &[ServerSpec],
    gpus: &[GpuSpec],
    estimates: &[VramEstimate],
    margin: u64,
    hopeless: &[bool],
) -> Vec<Option<u32>> {
    let room: Vec<u64> = gpus
        .iter()
        .map(|g| g.capacity.saturating_sub(g.reserved).saturating_sub(margin))
        .collect();
    let mut order: Vec<usize> = (0..servers.len()).filter(|&i| !hopeless[i]).collect();
    order.sort_by_key(|&i| (!servers[i].pinned, std::cmp::Reverse(estimates[i].total)));
    let search = Search {
        servers,
        gpus,
        estimates,
        order: &order,
        budget: std::cell::Cell::new(SEARCH_BUDGET),
    };
    // Placing a server with no declared GPU is no move: when none declares one,
    // one search with no moves allowed covers every placement.
    let most_moves = servers.iter().filter(|s| s.gpu.is_some()).count();
    for moves in 0..=most_moves {
        let mut room = room.clone();
        let mut placed = vec![None; servers.len()];
        if search.place(0, moves, &mut room, &mut placed) {
            return placed;
        }
        if search.budget.get() == 0 {
            break;
        }
    }
    search.greedy(room)
}

/// Steps the exhaustive search may take, over all its passes; past them the
/// planner places largest first instead.
const SEARCH_BUDGET: u64 = 2_000_000;

struct Search<'a> {
    servers: &'a [ServerSpec],
    gpus: &'a [GpuSpec],
    estimates: &'a [VramEstimate],
    order: &'a [usize],
    budget: std::cell::Cell<u64>,
}

impl Search<'_> {
    /// GPU positions to try for server `i`: its declared GPU first (no move), then
    /// the others by most room; a pinned server only its own.
    fn candidates(&self, i: usize, room: &[u64]) -> Vec<(usize, bool)> {
        let declared = self.servers[i]
            .gpu
            .and_then(|g| self.gpus.iter().position(|x| x.index == g));
        let mut others: Vec<usize> = (0..self.gpus.len())
            .filter(|at| Some(*at) != declared)
            .collect();
        others.sort_by_key(|&at| std::cmp::Reverse(room[at]));
        let mut candidates: Vec<(usize, bool)> =
            declared.map(|at| (at, false)).into_iter().collect();
        if !self.servers[i].pinned {
            // A server with no declared GPU is not moved by being placed.
            let moved = declared.is_some();
            candidates.extend(others.into_iter().map(|at| (at, moved)));
        }
        candidates
    }

    /// Depth-first: places `order[k..]` with at most `moves` moves.
    fn place(&self, k: usize, moves: usize, room: &mut [u64], placed: &mut [Option<u32>]) -> bool {
        let Some(&i) = self.order.get(k) else {
            return true;
        };
        if self.budget.get() == 0 {
            return false;
        }
        self.budget.set(self.budget.get() - 1);
        let need = self.estimates[i].total;
        for (at, moved) in self.candidates(i, room) {
            if room[at] < need || (moved && moves == 0) {
                continue;
            }
            room[at] -= need;
            placed[i] = Some(self.gpus[at].index);
            if self.place(k + 1, moves - usize::from(moved), room, placed) {
                return true;
            }
            room[at] += need;
            placed[i] = None;
        }
        false
    }

    fn greedy(&self, mut room: Vec<u64>) -> Vec<Option<u32>> {
        let mut placed = vec![None; self.servers.len()];
        for &i in self.order {
            let need = self.estimates[i].total;
            if let Some((at, _)) = self
                .candidates(i, &room)
                .into_iter()
                .find(|(at, _)| room[*at] >= need)
            {
                room[at] -= need;
                placed[i] = Some(self.gpus[at].index);
            }
        }
        placed
    }
}
