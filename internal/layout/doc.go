// Package layout holds no code: its test checks the import rules of the
// package table in DESIGN.md against the module's real import graph, so
// that CI refuses an import that breaks them.
package layout
