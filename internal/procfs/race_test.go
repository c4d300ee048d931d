//go:build race

package procfs

// raceEnabled: the race detector's instrumentation allocates where the
// code does not.
const raceEnabled = true
