//! Collection membership: which clients a collection holds, from a fact selector,
//! explicit names, and included / excluded collections.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use crate::compliance::Client;
use crate::resources::{Collection, CollectionSpec, FactOperator, FactSelector};

/// The collections of a desired state, ordered so included collections come first.
#[derive(Clone, Debug, Default)]
pub struct Collections {
    pub names: Vec<String>,
    specs: Vec<CollectionSpec>,
    index: HashMap<String, usize>,
    /// Evaluation order: every collection after those it includes or excludes.
    order: Vec<usize>,
}

/// Membership of every client in every collection, one bit each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    words: usize,
    bits: Vec<u64>,
}

impl Membership {
    pub fn new(clients: usize, collections: usize) -> Self {
        let words = collections.div_ceil(64).max(1);
        Membership { words, bits: vec![0; clients * words] }
    }
    pub fn contains(&self, client: usize, collection: usize) -> bool {
        self.bits[client * self.words + collection / 64] >> (collection % 64) & 1 == 1
    }
    pub fn row(&self, client: usize) -> &[u64] {
        &self.bits[client * self.words..(client + 1) * self.words]
    }
    pub fn set_row(&mut self, client: usize, row: &[u64]) {
        self.bits[client * self.words..(client + 1) * self.words].copy_from_slice(row);
    }
    /// Add a row for a client appended to the fleet.
    pub fn push_row(&mut self, row: &[u64]) {
        self.bits.extend_from_slice(row);
    }
    pub fn words(&self) -> usize {
        self.words
    }
}

impl Collections {
    pub fn new(collections: &BTreeMap<String, Collection>) -> Self {
        let names: Vec<String> = collections.keys().cloned().collect();
        let specs: Vec<CollectionSpec> = collections.values().map(|c| c.spec.clone()).collect();
        let index: HashMap<String, usize> = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let mut order = Vec::new();
        let mut state = vec![0u8; names.len()]; // 0 new, 1 visiting, 2 done
        fn visit(
            i: usize,
            specs: &[CollectionSpec],
            index: &HashMap<String, usize>,
            state: &mut [u8],
            order: &mut Vec<usize>,
        ) {
            if state[i] != 0 {
                return; // done, or a cycle (reported by validation)
            }
            state[i] = 1;
            for dep in specs[i].include_collections.iter().chain(&specs[i].exclude_collections) {
                if let Some(&j) = index.get(dep) {
                    visit(j, specs, index, state, order);
                }
            }
            state[i] = 2;
            order.push(i);
        }
        for i in 0..names.len() {
            visit(i, &specs, &index, &mut state, &mut order);
        }
        Collections { names, specs, index, order }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
    pub fn spec(&self, i: usize) -> &CollectionSpec {
        &self.specs[i]
    }
    /// The collections that have maintenance windows.
    pub fn windowed(&self) -> Vec<usize> {
        (0..self.len()).filter(|&c| !self.specs[c].maintenance_windows.is_empty()).collect()
    }

    /// One client's membership row (bit i: member of collection i).
    pub fn evaluate(&self, client: &Client, row: &mut [u64]) {
        row.fill(0);
        let get = |row: &[u64], i: usize| row[i / 64] >> (i % 64) & 1 == 1;
        for &i in &self.order {
            let s = &self.specs[i];
            let mut member = s.selector.as_ref().is_some_and(|sel| selects(sel, client))
                || s.names.iter().any(|n| n.eq_ignore_ascii_case(&client.name))
                || s.include_collections.iter().filter_map(|c| self.index.get(c)).any(|&j| get(row, j));
            if member && s.exclude_collections.iter().filter_map(|c| self.index.get(c)).any(|&j| get(row, j)) {
                member = false;
            }
            if member {
                row[i / 64] |= 1 << (i % 64);
            }
        }
    }

    /// Membership of every client of `clients` (evaluated in parallel).
    pub fn membership(&self, clients: &[Client]) -> Membership {
        let mut m = Membership::new(clients.len(), self.len());
        let words = m.words;
        m.bits.par_chunks_mut(words).zip(clients.par_iter()).for_each(|(row, c)| self.evaluate(c, row));
        m
    }
}

/// Is a client with this membership row in the collection? (None: no collection, never.)
pub fn member(row: &[u64], collection: Option<usize>) -> bool {
    collection.is_some_and(|i| row[i / 64] >> (i % 64) & 1 == 1)
}

/// Does the selector match the client's facts? An empty selector matches every client.
pub fn selects(sel: &FactSelector, client: &Client) -> bool {
    let fact = |k: &str| -> Option<&str> {
        if k == "hostname" && !client.facts.contains_key("hostname") {
            return Some(client.name.as_str());
        }
        client.facts.get(k).map(String::as_str)
    };
    sel.match_facts.iter().all(|(k, v)| fact(k) == Some(v.as_str()))
        && sel.match_expressions.iter().all(|r| {
            let value = fact(&r.key);
            match r.operator {
                FactOperator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                FactOperator::NotIn => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                FactOperator::Exists => value.is_some(),
                FactOperator::DoesNotExist => value.is_none(),
                FactOperator::Prefix => value.is_some_and(|v| r.values.iter().any(|x| v.starts_with(x.as_str()))),
            }
        })
}

/// A cycle among `includeCollections`/`excludeCollections`, as the names along it.
pub fn include_cycle(collections: &BTreeMap<String, Collection>) -> Option<Vec<String>> {
    fn dfs<'a>(
        name: &'a str,
        collections: &'a BTreeMap<String, Collection>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::HashSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|p| *p == name) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if done.contains(name) {
            return None;
        }
        let c = collections.get(name)?;
        path.push(name);
        for dep in c.spec.include_collections.iter().chain(&c.spec.exclude_collections) {
            if let Some(cycle) = dfs(dep, collections, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(name);
        None
    }
    let mut done = std::collections::HashSet::new();
    collections.keys().find_map(|n| dfs(n, collections, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::resources::FactRequirement;

    fn client(name: &str, facts: &[(&str, &str)]) -> Client {
        Client {
            name: name.into(),
            facts: facts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn coll(spec: CollectionSpec) -> Collection {
        Collection::new("x", spec)
    }

    #[test]
    fn membership_follows_selectors_names_includes_and_excludes() {
        let mut map = BTreeMap::new();
        map.insert(
            "servers".to_string(),
            coll(CollectionSpec {
                selector: Some(FactSelector {
                    match_facts: [("role".to_string(), "server".to_string())].into(),
                    match_expressions: vec![],
                }),
                ..Default::default()
            }),
        );
        map.insert(
            "berlin".to_string(),
            coll(CollectionSpec {
                selector: Some(FactSelector {
                    match_facts: Default::default(),
                    match_expressions: vec![FactRequirement {
                        key: "site".into(),
                        operator: FactOperator::In,
                        values: vec!["BER".into()],
                    }],
                }),
                ..Default::default()
            }),
        );
        map.insert(
            "pilot".to_string(),
            coll(CollectionSpec {
                names: vec!["WS-007".into()],
                include_collections: vec!["berlin".into()],
                exclude_collections: vec!["servers".into()],
                ..Default::default()
            }),
        );
        let cs = Collections::new(&map);
        let clients = vec![
            client("srv-ber-1", &[("role", "server"), ("site", "BER")]),
            client("ws-ber-1", &[("role", "workstation"), ("site", "BER")]),
            client("ws-007", &[("role", "workstation"), ("site", "NYC")]),
            client("ws-nyc-2", &[("role", "workstation"), ("site", "NYC")]),
        ];
        let m = cs.membership(&clients);
        let members = |c: &str| -> Vec<&str> {
            let i = cs.index_of(c).unwrap();
            clients.iter().enumerate().filter(|(ci, _)| m.contains(*ci, i)).map(|(_, c)| c.name.as_str()).collect()
        };
        assert_eq!(members("servers"), vec!["srv-ber-1"]);
        assert_eq!(members("berlin"), vec!["srv-ber-1", "ws-ber-1"]);
        assert_eq!(
            members("pilot"),
            vec!["ws-ber-1", "ws-007"],
            "included berlin minus servers, plus the named machine"
        );
    }

    #[test]
    fn include_cycles_are_found() {
        let mut map = BTreeMap::new();
        map.insert(
            "a".to_string(),
            coll(CollectionSpec { include_collections: vec!["b".into()], ..Default::default() }),
        );
        map.insert(
            "b".to_string(),
            coll(CollectionSpec { include_collections: vec!["a".into()], ..Default::default() }),
        );
        assert_eq!(include_cycle(&map), Some(vec!["a".to_string(), "b".to_string(), "a".to_string()]));
    }
}
