package plugin

import (
	"fmt"
	"strings"
)

// node is one line of the output and the lines under it. Both commands
// build a tree of nodes first and print it at the end, so what is shown
// (the renderers) and how it is drawn (here) stay apart.
type node struct {
	text     string
	children []*node
}

// add appends a child line and returns it.
func (n *node) add(format string, args ...any) *node {
	c := &node{text: oneLine(fmt.Sprintf(format, args...))}
	n.children = append(n.children, c)
	return c
}

// write prints n and everything under it, branches drawn as tree(1) draws
// them, so the eye follows a Service down to a session without reading
// indentation levels.
func (n *node) write(b *strings.Builder) {
	b.WriteString(n.text)
	b.WriteByte('\n')
	writeChildren(b, n.children, "")
}

// writeChildren prints kids and their descendants, each line after
// prefix and its branch.
func writeChildren(b *strings.Builder, kids []*node, prefix string) {
	for i, c := range kids {
		branch, indent := "├── ", "│   "
		if i == len(kids)-1 {
			branch, indent = "└── ", "    "
		}
		b.WriteString(prefix)
		b.WriteString(branch)
		b.WriteString(c.text)
		b.WriteByte('\n')
		writeChildren(b, c.children, prefix+indent)
	}
}

// oneLine keeps a message (a condition's, a problem's) on its line: a
// newline in it would break the tree's branches.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}
