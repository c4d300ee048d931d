//go:build !linux

package procfs

// smallFile cannot be read: there is no /proc.
type smallFile struct{}

func newSmallFile(string) smallFile { return smallFile{} }

func (smallFile) read([]byte) (int, bool) { return 0, false }
