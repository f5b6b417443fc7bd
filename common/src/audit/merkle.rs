//! RFC 6962 Merkle trees (section 2.1): tree heads, compact ranges ("frontiers") and
//! consistency proofs (2.1.2), and their verification (the algorithm of RFC 9162 2.1.4.2).
//! Pure: the audit store feeds it hashes.
//!
//! Leaves are hashed `SHA-256(0x00 || data)`, interior nodes `SHA-256(0x01 || left || right)`,
//! the tree over `n` leaves splits at the largest power of two smaller than `n`, and the empty
//! tree's head is `SHA-256("")`: the same tree heads as every Certificate Transparency
//! implementation, so an outside witness can check them with its own code.

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// Head of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The tree head over `leaves` (leaf hashes), by the definition.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The compact range of a tree of `size` leaves: the heads of its maximal perfect subtrees, left
/// to right (one per set bit of `size`, largest first). Enough to extend the tree with new
/// leaves, compute its head, and prove the extension consistent, without the old leaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        // Each trailing set bit of the old size is a perfect subtree the new leaf completes.
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit");
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The tree head.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else { return empty_root() };
        nodes.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// The frontier as stored: the node hashes concatenated.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.nodes.concat()
    }

    /// A stored frontier of a tree of `size` leaves; `None` if the bytes are not one hash per
    /// set bit of `size`.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Frontier> {
        if bytes.len() != size.count_ones() as usize * 32 {
            return None;
        }
        let nodes = bytes.chunks_exact(32).map(|c| c.try_into().expect("32-byte chunk")).collect();
        Some(Frontier { size, nodes })
    }

    /// Start and end of each frontier node, left to right.
    fn ranges(&self) -> Vec<(u64, u64)> {
        let mut start = 0;
        (0..64)
            .rev()
            .filter(|bit| self.size & (1 << bit) != 0)
            .map(|bit| {
                let range = (start, start + (1 << bit));
                start += 1 << bit;
                range
            })
            .collect()
    }
}

/// A tree of `old.size() + new_leaves.len()` leaves known by the frontier of its first
/// `old.size()` leaves and the hashes of the rest: every subtree hash a consistency proof from
/// the old size needs, and the new head, are computable from these.
struct Extension<'a> {
    old: &'a Frontier,
    ranges: Vec<(u64, u64)>,
    new_leaves: &'a [Hash],
}

impl Extension<'_> {
    fn size(&self) -> u64 {
        self.old.size + self.new_leaves.len() as u64
    }

    /// The head of the subtree over leaves `lo..hi`, one that RFC 6962's recursion reaches.
    fn hash(&self, lo: u64, hi: u64) -> Hash {
        let m = self.old.size;
        if lo >= m {
            return root(&self.new_leaves[(lo - m) as usize..(hi - m) as usize]);
        }
        if let Some(i) = self.ranges.iter().position(|&r| r == (lo, hi)) {
            return self.old.nodes[i];
        }
        let k = split(hi - lo);
        node_hash(&self.hash(lo, lo + k), &self.hash(lo + k, hi))
    }

    /// RFC 6962 2.1.2 SUBPROOF(m, D[lo:hi], b).
    fn subproof(&self, m: u64, lo: u64, hi: u64, complete: bool, proof: &mut Vec<Hash>) {
        let n = hi - lo;
        if m == n {
            if !complete {
                proof.push(self.hash(lo, hi));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, lo, lo + k, complete, proof);
            proof.push(self.hash(lo + k, hi));
        } else {
            self.subproof(m - k, lo + k, hi, false, proof);
            proof.push(self.hash(lo, lo + k));
        }
    }
}

/// Extends the tree whose first leaves `old` summarises by `new_leaves`: returns the new
/// frontier, the new head, and the consistency proof from the old size to the new one (empty
/// when the old tree was empty or nothing was added).
pub fn extend(old: &Frontier, new_leaves: &[Hash]) -> (Frontier, Hash, Vec<Hash>) {
    let extension = Extension { old, ranges: old.ranges(), new_leaves };
    let n = extension.size();
    let mut proof = Vec::new();
    if old.size > 0 && old.size < n {
        extension.subproof(old.size, 0, n, true, &mut proof);
    }
    let head = if n == 0 { empty_root() } else { extension.hash(0, n) };
    let mut frontier = old.clone();
    for leaf in new_leaves {
        frontier.push(*leaf);
    }
    debug_assert_eq!(frontier.root(), head);
    (frontier, head, proof)
}

/// Checks a consistency proof that the tree of `first` leaves with head `first_root` is a
/// prefix of the tree of `second` leaves with head `second_root` (RFC 9162 2.1.4.2; a tree is
/// consistent with itself with an empty proof, and the empty tree with any tree).
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> bool {
    if first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 {
        return proof.is_empty() && *first_root == empty_root();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((head, rest)) = path.split_first() else { return false };
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *first_root && sr == *second_root
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Certificate Transparency reference leaves and heads (the RFC 6962 test data of
    // certificate-transparency and transparency-dev/merkle).
    const LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    // (first, second, proof) from the same reference data.
    const PROOFS: [(u64, u64, &[&str]); 4] = [
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            2,
            8,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    fn h(text: &str) -> Hash {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    fn reference_leaves() -> Vec<Hash> {
        LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).unwrap())).collect()
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&(i as u64).to_be_bytes())).collect()
    }

    #[test]
    fn heads_match_the_reference_vectors() {
        let leaves = reference_leaves();
        let mut frontier = Frontier::new();
        assert_eq!(hex::encode(frontier.root()), ROOTS[0]);
        for n in 1..=8 {
            assert_eq!(hex::encode(root(&leaves[..n])), ROOTS[n], "size {n}");
            frontier.push(leaves[n - 1]);
            assert_eq!(hex::encode(frontier.root()), ROOTS[n], "frontier of size {n}");
        }
    }

    #[test]
    fn consistency_proofs_match_the_reference_vectors_and_verify() {
        let leaves = reference_leaves();
        for (first, second, expected) in PROOFS {
            let mut old = Frontier::new();
            for leaf in &leaves[..first as usize] {
                old.push(*leaf);
            }
            let (_, head, proof) = extend(&old, &leaves[first as usize..second as usize]);
            assert_eq!(hex::encode(head), ROOTS[second as usize]);
            let expected: Vec<Hash> = expected.iter().map(|p| h(p)).collect();
            assert_eq!(proof, expected, "proof {first} -> {second}");
            assert!(verify_consistency(first, second, &h(ROOTS[first as usize]), &h(ROOTS[second as usize]), &proof));
        }
    }

    #[test]
    fn every_extension_of_every_size_proves_consistent_and_tampering_fails() {
        let all = leaves(40);
        for second in 0..=all.len() {
            for first in 0..=second {
                let mut old = Frontier::new();
                for leaf in &all[..first] {
                    old.push(*leaf);
                }
                let old_root = old.root();
                assert_eq!(old_root, root(&all[..first]));
                let (frontier, head, proof) = extend(&old, &all[first..second]);
                assert_eq!(head, root(&all[..second]));
                assert_eq!(frontier, Frontier::from_bytes(second as u64, &frontier.to_bytes()).unwrap());
                let (f, s) = (first as u64, second as u64);
                assert!(verify_consistency(f, s, &old_root, &head, &proof), "{first} -> {second}");
                if first == 0 || first == second {
                    continue;
                }
                // A flipped bit, a dropped or an extra node, a wrong size or head: refused.
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i][0] ^= 1;
                    assert!(!verify_consistency(f, s, &old_root, &head, &bad));
                }
                assert!(!verify_consistency(f, s, &old_root, &head, &proof[..proof.len() - 1]));
                let mut longer = proof.clone();
                longer.push([7; 32]);
                assert!(!verify_consistency(f, s, &old_root, &head, &longer));
                assert!(!verify_consistency(s, f, &old_root, &head, &proof));
                assert!(!verify_consistency(f, s, &head, &old_root, &proof));
                // A tree whose old part was rewritten is not consistent with the old head.
                let mut rewritten = all[..second].to_vec();
                rewritten[first - 1][0] ^= 1;
                let mut old_rewritten = Frontier::new();
                for leaf in &rewritten[..first] {
                    old_rewritten.push(*leaf);
                }
                let (_, new_head, new_proof) = extend(&old_rewritten, &rewritten[first..]);
                assert!(!verify_consistency(f, s, &old_root, &new_head, &new_proof));
            }
        }
    }

    #[test]
    fn stored_frontiers_must_fit_their_size() {
        assert!(Frontier::from_bytes(0, &[]).is_some());
        assert!(Frontier::from_bytes(3, &[0; 64]).is_some());
        assert!(Frontier::from_bytes(3, &[0; 32]).is_none());
        assert!(Frontier::from_bytes(4, &[0; 33]).is_none());
    }
}
