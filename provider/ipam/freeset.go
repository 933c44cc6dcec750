package ipam

// freeSet is the set of free addresses of one pool, kept as disjoint,
// non-adjacent inclusive intervals in a treap ordered by interval start.
// Storing intervals rather than addresses keeps memory proportional to
// fragmentation, not pool size, so a /64 costs one node; the treap keeps
// "lowest free", "take this address" and "give back" at O(log intervals).
type freeSet struct {
	root *freeNode
	seq  uint64 // feeds node priorities; deterministic so tests are reproducible
}

type freeNode struct {
	lo, hi      u128
	prio        uint64
	left, right *freeNode
}

func newFreeSet(lo, hi u128) *freeSet {
	s := &freeSet{}
	s.root = s.node(lo, hi)
	return s
}

func (s *freeSet) node(lo, hi u128) *freeNode {
	s.seq++
	return &freeNode{lo: lo, hi: hi, prio: splitmix64(s.seq)}
}

// splitmix64 scrambles a counter into well-spread priorities, which is all a
// treap needs to stay balanced in expectation.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func (s *freeSet) empty() bool { return s.root == nil }

// lowestNode is the interval holding the lowest free address, nil if none.
func (s *freeSet) lowestNode() *freeNode {
	n := s.root
	for n != nil && n.left != nil {
		n = n.left
	}
	return n
}

// lowest returns the lowest free address without taking it.
func (s *freeSet) lowest() (u128, bool) {
	if n := s.lowestNode(); n != nil {
		return n.lo, true
	}
	return u128{}, false
}

// takeLowest removes and returns the lowest free address.
func (s *freeSet) takeLowest() (u128, bool) {
	n := s.lowestNode()
	if n == nil {
		return u128{}, false
	}
	v := n.lo
	if n.lo == n.hi {
		s.remove(n.lo)
	} else {
		n.lo = n.lo.inc()
	}
	return v, true
}

// take removes x from the set; false if x was not free.
func (s *freeSet) take(x u128) bool {
	n := s.floor(x)
	if n == nil || n.hi.less(x) {
		return false
	}
	switch {
	case n.lo == x && n.hi == x:
		s.remove(x)
	case n.lo == x:
		// Moving lo forward inside its own interval keeps the tree ordered.
		n.lo = x.inc()
	case n.hi == x:
		n.hi = x.dec()
	default:
		hi := n.hi
		n.hi = x.dec()
		s.insert(s.node(x.inc(), hi))
	}
	return true
}

// put adds x back; false if x was already free.
func (s *freeSet) put(x u128) bool {
	p := s.floor(x)
	if p != nil && !p.hi.less(x) {
		return false
	}
	nx := s.ceilAbove(x)
	// p.hi < x and x < nx.lo, so neither inc below can overflow.
	joinPrev := p != nil && p.hi.inc() == x
	joinNext := nx != nil && x.inc() == nx.lo
	switch {
	case joinPrev && joinNext:
		p.hi = nx.hi
		s.remove(nx.lo)
	case joinPrev:
		p.hi = x
	case joinNext:
		nx.lo = x
	default:
		s.insert(s.node(x, x))
	}
	return true
}

// contains reports whether x is free.
func (s *freeSet) contains(x u128) bool {
	n := s.floor(x)
	return n != nil && !n.hi.less(x)
}

// floor returns the interval with the greatest start <= x.
func (s *freeSet) floor(x u128) *freeNode {
	var best *freeNode
	for n := s.root; n != nil; {
		if x.less(n.lo) {
			n = n.left
		} else {
			best = n
			n = n.right
		}
	}
	return best
}

// ceilAbove returns the interval with the smallest start > x.
func (s *freeSet) ceilAbove(x u128) *freeNode {
	var best *freeNode
	for n := s.root; n != nil; {
		if x.less(n.lo) {
			best = n
			n = n.left
		} else {
			n = n.right
		}
	}
	return best
}

func (s *freeSet) insert(n *freeNode) {
	l, r := split(s.root, n.lo)
	s.root = merge(merge(l, n), r)
}

func (s *freeSet) remove(lo u128) { s.root = removeNode(s.root, lo) }

func removeNode(t *freeNode, lo u128) *freeNode {
	if t == nil {
		return nil
	}
	switch c := lo.cmp(t.lo); {
	case c < 0:
		t.left = removeNode(t.left, lo)
	case c > 0:
		t.right = removeNode(t.right, lo)
	default:
		return merge(t.left, t.right)
	}
	return t
}

// split divides t into intervals starting before k and those starting at or after k.
func split(t *freeNode, k u128) (l, r *freeNode) {
	if t == nil {
		return nil, nil
	}
	if t.lo.less(k) {
		t.right, r = split(t.right, k)
		return t, r
	}
	l, t.left = split(t.left, k)
	return l, t
}

// merge joins two treaps where every start in a is below every start in b.
func merge(a, b *freeNode) *freeNode {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.prio > b.prio:
		a.right = merge(a.right, b)
		return a
	}
	b.left = merge(a, b.left)
	return b
}

// intervals lists the free intervals in order; for tests and debugging.
func (s *freeSet) intervals() [][2]u128 {
	var out [][2]u128
	var walk func(*freeNode)
	walk = func(n *freeNode) {
		if n == nil {
			return
		}
		walk(n.left)
		out = append(out, [2]u128{n.lo, n.hi})
		walk(n.right)
	}
	walk(s.root)
	return out
}
