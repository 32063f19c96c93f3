//! Real deletion: a removed node leaves no edge, no vector and no codes behind.
//!
//! `remove_node` unlinks the node on every layer (its in-edges name every node that points at
//! it, so no scan), reconnects each of those from its own and the removed node's neighbours
//! with the heuristic, fills the free places the heuristic leaves with the closest dropped
//! candidates, gives any of the removed node's neighbours left without an in-edge an edge from
//! its best live neighbour (the heuristic alone could cut a neighbourhood off: a property test
//! found it), re-elects the entry point, zeroes the slot's vector and codes and frees the slot.
use super::{HnswIndex, NONE, graph::Scored};
use crate::record::RecordId;

impl HnswIndex {
    /// Removes `id` and overwrites its vector's memory. Returns whether it was present.
    pub(super) fn remove_node(&mut self, id: RecordId) -> bool {
        let Some(slot) = self.positions.remove(&id) else {
            return false;
        };
        let level = self.slots.node(slot).level as usize;
        let own: Vec<Vec<u32>> = (0..=level).map(|layer| self.read_links(slot, layer)).collect();
        for layer in 0..=level {
            self.set_links(slot, layer, &[]);
        }
        let mut sources = std::mem::take(self.slots.inbound_mut(slot));
        sources.sort_unstable();
        sources.dedup();
        // Every node that pointed here: drop the edge and reconnect from the union of its own
        // neighbours and the removed node's, pruned with the heuristic.
        for src in sources {
            let src_level = self.slots.node(src).level as usize;
            for (layer, replacement) in own.iter().enumerate().take(src_level.min(level) + 1) {
                let current = self.read_links(src, layer);
                if !current.contains(&slot) {
                    continue;
                }
                let row = self.row(src);
                let mut candidates: Vec<Scored> = current
                    .iter()
                    .chain(replacement)
                    .filter(|&&c| c != slot && c != src)
                    .map(|&c| Scored { score: (self.dot)(row, self.row(c)), slot: c })
                    .collect();
                candidates.sort_unstable_by(|a, b| b.cmp(a));
                candidates.dedup_by_key(|c| c.slot);
                let cap = self.slots.cap(layer);
                let mut kept = self.select(&candidates, cap);
                // The heuristic alone can cut the removed node's neighbourhood off from the
                // rest (its out-neighbours reachable only through it): fill the free places
                // with the closest candidates it dropped.
                for c in &candidates {
                    if kept.len() >= cap {
                        break;
                    }
                    if !kept.contains(&c.slot) {
                        kept.push(c.slot);
                    }
                }
                self.set_links(src, layer, &kept);
            }
        }
        self.slots.inbound_mut(slot).clear();
        // The heuristic may have dropped the last edge into one of the removed node's
        // neighbours: give each such orphan an edge from its best-scoring live neighbour, so
        // no node becomes unreachable.
        for (layer, neighbours) in own.iter().enumerate() {
            for &orphan in neighbours {
                if orphan != slot && self.slots.node(orphan).id.is_some() && !self.reachable_on(orphan, layer, slot) {
                    self.adopt(orphan, layer, slot, neighbours);
                }
            }
        }
        self.slots.vacate(slot);
        self.free.push(slot);
        self.mark_dirty(slot);
        if self.entry().0 == slot {
            self.elect_entry();
        }
        true
    }

    /// Whether some node other than `except` links to `slot` on `layer`.
    fn reachable_on(&self, slot: u32, layer: usize, except: u32) -> bool {
        let sources = self.slots.node(slot).inbound.lock().clone();
        sources.into_iter().any(|s| {
            s != except && self.slots.node(s).level as usize >= layer && self.read_links(s, layer).contains(&slot)
        })
    }

    /// Links `orphan` from the best live node among its own neighbours and the removed node's
    /// (`siblings`) on `layer`: into a free place, or in place of that host's weakest link when
    /// the weakest stays reachable another way.
    fn adopt(&self, orphan: u32, layer: usize, removed: u32, siblings: &[u32]) {
        let row = self.row(orphan);
        let mut hosts: Vec<Scored> = self
            .read_links(orphan, layer)
            .into_iter()
            .chain(siblings.iter().copied())
            .filter(|&h| h != removed && h != orphan && self.slots.node(h).id.is_some())
            .map(|h| Scored { score: (self.dot)(row, self.row(h)), slot: h })
            .collect();
        hosts.sort_unstable_by(|a, b| b.cmp(a));
        hosts.dedup_by_key(|h| h.slot);
        for host in &hosts {
            let mut links = self.read_links(host.slot, layer);
            if links.len() < self.slots.cap(layer) {
                links.push(orphan);
                self.set_links(host.slot, layer, &links);
                return;
            }
            let host_row = self.row(host.slot);
            let weakest = links
                .iter()
                .enumerate()
                .map(|(i, &l)| (i, l, (self.dot)(host_row, self.row(l))))
                .min_by(|a, b| a.2.total_cmp(&b.2));
            if let Some((i, w, _)) = weakest
                && self.reachable_on(w, layer, host.slot)
            {
                links[i] = orphan;
                self.set_links(host.slot, layer, &links);
                return;
            }
        }
        // Every host is full of links that would be orphaned in turn: take the best host's
        // weakest link anyway (it keeps its own out-links, so a later search from it still
        // works when it is the entry point's neighbour).
        if let Some(host) = hosts.first() {
            let mut links = self.read_links(host.slot, layer);
            if let Some(last) = links.last_mut() {
                *last = orphan;
                self.set_links(host.slot, layer, &links);
            }
        }
    }

    /// Re-elects the entry point: the lowest slot among the highest-level live nodes.
    fn elect_entry(&self) {
        let best = self
            .slots
            .nodes()
            .iter()
            .enumerate()
            .filter(|(_, n)| n.id.is_some())
            .max_by(|(i, a), (j, b)| a.level.cmp(&b.level).then_with(|| j.cmp(i)));
        match best {
            Some((slot, node)) => self.set_entry(slot as u32, node.level as usize),
            None => self.set_entry(NONE, 0),
        }
    }
}
