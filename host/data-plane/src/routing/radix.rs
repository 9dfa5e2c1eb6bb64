//! A radix tree over path bytes, for path `exact` and `prefix` matches: a
//! lookup walks the request's path once, whatever the number of routes.

/// A node: the bytes of its edge, its children (ordered by their edge's first
/// byte), and the routes whose key ends here.
#[derive(Debug, Default)]
pub(super) struct PathTree {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    label: Box<[u8]>,
    /// The first byte of each child's label, in order: searched instead of
    /// the children themselves, so that a step down touches one small array
    /// rather than every probed child's label.
    first: Vec<u8>,
    children: Vec<Node>,
    /// Routes whose path prefix is the key of this node, ascending.
    prefix: Vec<u32>,
    /// Routes whose exact path is the key of this node, ascending.
    exact: Vec<u32>,
}

impl PathTree {
    /// Indexes route `route` under `key`, as an exact path or as a prefix.
    /// Routes must be inserted in ascending order.
    pub(super) fn insert(&mut self, key: &[u8], route: u32, exact: bool) {
        let node = self.root.descend_or_split(key);
        let list = if exact { &mut node.exact } else { &mut node.prefix };
        debug_assert!(list.last().is_none_or(|last| *last < route), "routes are inserted in order");
        list.push(route);
    }

    /// Calls `visit` with every list of routes whose key matches `path`: the
    /// prefix routes of every node on the way (their key is a prefix of
    /// `path`), and the exact routes of the node whose key is `path`.
    pub(super) fn matches<'a>(&'a self, path: &[u8], mut visit: impl FnMut(&'a [u32])) {
        let mut node = &self.root;
        let mut rest = path;
        loop {
            if !node.prefix.is_empty() {
                visit(&node.prefix);
            }
            if rest.is_empty() {
                if !node.exact.is_empty() {
                    visit(&node.exact);
                }
                return;
            }
            let Ok(at) = node.first.binary_search(&rest[0]) else { return };
            let child = &node.children[at];
            if !rest.starts_with(&child.label) {
                return;
            }
            rest = &rest[child.label.len()..];
            node = child;
        }
    }
}

impl Node {
    /// The node whose key is `key` below this one, made (splitting an edge
    /// where `key` ends inside it) if it does not exist yet.
    fn descend_or_split(&mut self, key: &[u8]) -> &mut Node {
        if key.is_empty() {
            return self;
        }
        let at = match self.first.binary_search(&key[0]) {
            Ok(at) => at,
            Err(at) => {
                self.first.insert(at, key[0]);
                self.children.insert(at, Node { label: key.into(), ..Node::default() });
                return &mut self.children[at];
            }
        };
        let child = &mut self.children[at];
        let common = child.label.iter().zip(key).take_while(|(a, b)| a == b).count();
        if common < child.label.len() {
            // Split the edge: a new node for the shared part, the old child below it.
            let mut lower = std::mem::take(child);
            let upper_label: Box<[u8]> = lower.label[..common].into();
            lower.label = lower.label[common..].into();
            let first = vec![lower.label[0]];
            *child = Node { label: upper_label, first, children: vec![lower], ..Node::default() };
        }
        child.descend_or_split(&key[common..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(tree: &PathTree, path: &str) -> Vec<u32> {
        let mut all = Vec::new();
        tree.matches(path.as_bytes(), |routes| all.extend_from_slice(routes));
        all.sort_unstable();
        all
    }

    #[test]
    fn prefixes_match_every_path_they_start_and_exact_only_itself() {
        let mut tree = PathTree::default();
        tree.insert(b"/", 0, false);
        tree.insert(b"/api", 1, false);
        tree.insert(b"/api/v1", 2, false);
        tree.insert(b"/api/v1", 3, true);
        tree.insert(b"/apple", 4, false);
        tree.insert(b"/b", 5, true);
        assert_eq!(found(&tree, "/api/v1"), vec![0, 1, 2, 3]);
        assert_eq!(found(&tree, "/api/v1/users"), vec![0, 1, 2]);
        assert_eq!(found(&tree, "/apiary"), vec![0, 1], "a prefix is a plain string prefix");
        assert_eq!(found(&tree, "/apple/pie"), vec![0, 4]);
        assert_eq!(found(&tree, "/ap"), vec![0], "inside an edge: no key ends here");
        assert_eq!(found(&tree, "/b"), vec![0, 5]);
        assert_eq!(found(&tree, "/bb"), vec![0]);
        assert_eq!(found(&tree, ""), Vec::<u32>::new());
    }

    #[test]
    fn splitting_an_edge_keeps_what_was_below_it() {
        let mut tree = PathTree::default();
        tree.insert(b"/static/img", 0, false);
        tree.insert(b"/static/css", 1, false);
        tree.insert(b"/stat", 2, true);
        tree.insert(b"/static/", 3, false);
        assert_eq!(found(&tree, "/static/img/a.png"), vec![0, 3]);
        assert_eq!(found(&tree, "/static/css"), vec![1, 3]);
        assert_eq!(found(&tree, "/stat"), vec![2]);
        assert_eq!(found(&tree, "/static/js"), vec![3]);
    }

    #[test]
    fn ten_thousand_prefixes_each_find_their_own() {
        let mut tree = PathTree::default();
        for i in 0..10_000u32 {
            tree.insert(format!("/svc{i}/").as_bytes(), i, false);
        }
        for i in [0u32, 1, 10, 99, 1000, 9999] {
            assert_eq!(found(&tree, &format!("/svc{i}/x")), vec![i]);
        }
        assert!(found(&tree, "/svc10000/").is_empty());
    }
}
